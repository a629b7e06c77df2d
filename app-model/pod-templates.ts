// Where each workload kind keeps its pods' spec: the one table image mapping, env rewriting, quota fitting and claim
// lookups share, so a kind added here is handled by all of them.
import type { KubeObject } from "./types.js";
import type { JsonMap } from "./json.js";
import { isMap, listAt, mapAt } from "./json.js";

const TEMPLATE_PATHS: Readonly<Record<string, readonly string[]>> = {
  Pod: [],
  PodTemplate: ["template"],
  Deployment: ["spec", "template"],
  StatefulSet: ["spec", "template"],
  DaemonSet: ["spec", "template"],
  ReplicaSet: ["spec", "template"],
  ReplicationController: ["spec", "template"],
  DeploymentConfig: ["spec", "template"],
  Job: ["spec", "template"],
  CronJob: ["spec", "jobTemplate", "spec", "template"],
};

/** Kinds whose size is spec.replicas (DeploymentConfig too: it has no selector-based scale subresource quirks here). */
export const REPLICATED_KINDS: ReadonlySet<string> = new Set([
  "Deployment",
  "StatefulSet",
  "ReplicaSet",
  "ReplicationController",
  "DeploymentConfig",
]);

/** The pod spec of a Pod or a workload's pod template (the live map inside `object`), or undefined. */
export function podSpecOf(object: KubeObject): JsonMap | undefined {
  const path = TEMPLATE_PATHS[object.kind];
  if (path === undefined) return undefined;
  const holder = path.length === 0 ? object : mapAt(object, ...path);
  return mapAt(holder, "spec");
}

/** The pod template's metadata (labels the Job controller stamps, for example), or undefined for a Pod. */
export function podTemplateMetaOf(object: KubeObject): JsonMap | undefined {
  const path = TEMPLATE_PATHS[object.kind];
  if (path === undefined || path.length === 0) return undefined;
  return mapAt(object, ...path, "metadata");
}

/** Every container and init container of the pod spec (live maps). */
export function containersOf(spec: JsonMap | undefined): JsonMap[] {
  if (spec === undefined) return [];
  return [...listAt(spec, "initContainers"), ...listAt(spec, "containers")].filter(isMap);
}

/** How many pods the workload runs once active: what quotas are charged for. */
export function podCountOf(object: KubeObject): number {
  if (object.kind === "Pod") return 1;
  if (REPLICATED_KINDS.has(object.kind)) {
    const replicas = mapAt(object, "spec")?.["replicas"];
    return typeof replicas === "number" ? replicas : 1;
  }
  if (object.kind === "Job") {
    const parallelism = mapAt(object, "spec")?.["parallelism"];
    return typeof parallelism === "number" ? parallelism : 1;
  }
  if (object.kind === "CronJob") {
    // A suspended CronJob starts nothing, so nothing to charge (the user's suspension moves with it).
    if (mapAt(object, "spec")?.["suspend"] === true) return 0;
    const parallelism = mapAt(object, "spec", "jobTemplate", "spec")?.["parallelism"];
    return typeof parallelism === "number" ? parallelism : 1;
  }
  // A DaemonSet runs one pod per matching node, which the plan cannot know; one is the least it needs.
  return object.kind === "DaemonSet" ? 1 : 0;
}

/** The claim names a pod spec mounts: persistentVolumeClaim volumes and generic ephemeral volumes (POD-VOLUME). */
export function claimNamesOf(spec: JsonMap | undefined, podName: string): string[] {
  const names: string[] = [];
  for (const volume of listAt(spec, "volumes")) {
    const claim = mapAt(volume, "persistentVolumeClaim")?.["claimName"];
    if (typeof claim === "string") names.push(claim);
    const name = isMap(volume) ? volume["name"] : undefined;
    if (mapAt(volume, "ephemeral") !== undefined && typeof name === "string") names.push(`${podName}-${name}`);
  }
  return names;
}
