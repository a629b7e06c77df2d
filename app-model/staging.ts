// The forms an object takes while it is not in charge: staged on the target (created, but not running) and quiesced
// on the source (stopped, with what to restore). Each kind's "at rest" switch is one table, so staging, activation,
// quiesce and unquiesce cannot disagree about a kind. What is remembered is the original value, not a flag: a CronJob
// the user had suspended stays suspended after unquiesce.
import type { KubeObject, MergePatch } from "./types.js";
import type { JsonMap } from "./json.js";
import { clone, isMap, mapAt, numberAt } from "./json.js";
import { claimNamesOf, podSpecOf, REPLICATED_KINDS } from "./pod-templates.js";

export const LABEL_MIGRATION = "theseus.io/migration";
export const ANNOTATION_STAGED = "theseus.io/staged";
export const ANNOTATION_ACTIVATE = "theseus.io/activate";
export const ANNOTATION_QUIESCED = "theseus.io/quiesced";
/** A node label no node has: a DaemonSet whose pods need it runs nowhere, and its own spec says why. */
export const PARKED_NODE_LABEL = "theseus.io/parked";

/** What a kind's switch saves and how to put it at rest; `original` is the remembered value (JSON). */
interface Switch {
  /** The value in the object now, as it would be remembered. */
  current(object: KubeObject): JsonMap;
  atRest(object: KubeObject): boolean;
  /** The merge patch that puts it at rest. */
  rest(object: KubeObject): MergePatch;
  /** The merge patch that restores `original` on an object that is at rest. */
  restore(original: JsonMap): MergePatch;
}

const replicas: Switch = {
  current: (o) => ({ replicas: numberAt(mapAt(o, "spec"), "replicas") ?? 1 }),
  atRest: (o) => numberAt(mapAt(o, "spec"), "replicas") === 0,
  rest: () => ({ spec: { replicas: 0 } }),
  restore: (original) => ({ spec: { replicas: original["replicas"] ?? 1 } }),
};

const SWITCHES: Readonly<Record<string, Switch>> = {
  ...Object.fromEntries([...REPLICATED_KINDS].map((kind) => [kind, replicas])),
  CronJob: {
    current: (o) => ({ suspend: mapAt(o, "spec")?.["suspend"] === true }),
    atRest: (o) => mapAt(o, "spec")?.["suspend"] === true,
    rest: () => ({ spec: { suspend: true } }),
    restore: (original) => ({ spec: { suspend: original["suspend"] === true } }),
  },
  Job: {
    current: (o) => ({ parallelism: numberAt(mapAt(o, "spec"), "parallelism") ?? 1 }),
    atRest: (o) => numberAt(mapAt(o, "spec"), "parallelism") === 0 || isFinished(o),
    rest: () => ({ spec: { parallelism: 0 } }),
    restore: (original) => ({ spec: { parallelism: original["parallelism"] ?? 1 } }),
  },
  DaemonSet: {
    current: (o) => ({ nodeSelector: withoutParked(mapAt(o, "spec", "template", "spec", "nodeSelector")) ?? null }),
    atRest: (o) => mapAt(o, "spec", "template", "spec", "nodeSelector")?.[PARKED_NODE_LABEL] !== undefined,
    // Merged into the user's selector, so that restoring is removing our key and nothing else.
    rest: () => ({ spec: { template: { spec: { nodeSelector: { [PARKED_NODE_LABEL]: "true" } } } } }),
    restore: (original) => {
      const selector = isMap(original["nodeSelector"]) ? original["nodeSelector"] : {};
      const restored = Object.keys(selector).length === 0 ? null : { ...selector, [PARKED_NODE_LABEL]: null };
      return { spec: { template: { spec: { nodeSelector: restored } } } };
    },
  },
};

/**
 * The kinds that quiesce stops and activation starts (every other kind has no switch): the agent lists only these
 * while the application is down, not every kind the API server serves.
 */
export const SWITCHED_KINDS: ReadonlySet<string> = new Set(Object.keys(SWITCHES));

function withoutParked(selector: JsonMap | undefined): JsonMap | undefined {
  if (selector === undefined) return undefined;
  const { [PARKED_NODE_LABEL]: _parked, ...rest } = selector;
  return rest;
}

export function isFinished(object: KubeObject): boolean {
  if (object.kind === "Pod") {
    const phase = mapAt(object, "status")?.["phase"];
    return phase === "Succeeded" || phase === "Failed";
  }
  if (object.kind === "Job") {
    const conditions = mapAt(object, "status")?.["conditions"];
    return Array.isArray(conditions) && conditions.some((c) => isMap(c) && (c["type"] === "Complete" || c["type"] === "Failed") && c["status"] === "True");
  }
  return false;
}

/** ReplicaSets of Deployments and ReplicationControllers of DeploymentConfigs follow their owner: patching them would fight it. */
function followsOwner(object: KubeObject): boolean {
  return (object.kind === "ReplicaSet" || object.kind === "ReplicationController") && (object.metadata.ownerReferences ?? []).some((r) => r.controller === true);
}

function merge(target: JsonMap, patch: JsonMap): void {
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete target[key];
    else if (isMap(value)) {
      const child = isMap(target[key]) ? target[key] : {};
      merge(child, value);
      target[key] = child;
    } else target[key] = value;
  }
}

function readAnnotation(object: KubeObject, key: string): JsonMap | undefined {
  const text = object.metadata.annotations?.[key];
  if (text === undefined) return undefined;
  try {
    const value: unknown = JSON.parse(text);
    return isMap(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

/** Combines a kind's patch with metadata changes (annotations to set or remove). */
function withAnnotations(patch: MergePatch, annotations: Record<string, string | null>): MergePatch {
  return { ...patch, metadata: { annotations } };
}

export function stagedForm(object: KubeObject, migrationId: string, staged: "created" | "adopted"): KubeObject {
  const result = clone(object);
  result.metadata.labels = { ...result.metadata.labels, [LABEL_MIGRATION]: migrationId };
  result.metadata.annotations = { ...result.metadata.annotations, [ANNOTATION_STAGED]: staged };
  const kindSwitch = SWITCHES[object.kind];
  if (staged === "adopted" || kindSwitch === undefined || kindSwitch.atRest(object)) return result;
  result.metadata.annotations[ANNOTATION_ACTIVATE] = JSON.stringify(kindSwitch.current(object));
  merge(result, kindSwitch.rest(object));
  return result;
}

/** What brings a staged object of this migration up; undefined when it has nothing to restore (or is not ours). */
export function activationPatch(object: KubeObject, migrationId: string): MergePatch | undefined {
  if (object.metadata.labels?.[LABEL_MIGRATION] !== migrationId) return undefined;
  const original = readAnnotation(object, ANNOTATION_ACTIVATE);
  const kindSwitch = SWITCHES[object.kind];
  if (original === undefined || kindSwitch === undefined) return undefined;
  return withAnnotations(kindSwitch.restore(original), { [ANNOTATION_ACTIVATE]: null });
}

export function quiescePatch(object: KubeObject, migrationId: string): MergePatch | undefined {
  const kindSwitch = SWITCHES[object.kind];
  if (kindSwitch === undefined || followsOwner(object) || kindSwitch.atRest(object)) return undefined;
  const record = JSON.stringify({ migration: migrationId, original: kindSwitch.current(object) });
  return withAnnotations(kindSwitch.rest(object), { [ANNOTATION_QUIESCED]: record });
}

export function unquiescePatch(object: KubeObject, migrationId: string): MergePatch | undefined {
  const kindSwitch = SWITCHES[object.kind];
  const record = readAnnotation(object, ANNOTATION_QUIESCED);
  // A Deployment's ReplicaSet carries a copy of its owner's annotations: quiesce never changed it, so nothing to undo.
  if (kindSwitch === undefined || followsOwner(object) || record === undefined || record["migration"] !== migrationId) return undefined;
  const original = isMap(record["original"]) ? record["original"] : {};
  // Someone changed it since quiesce (scaled it up by hand): their value stands, only our record goes.
  const restore = kindSwitch.atRest(object) ? kindSwitch.restore(original) : {};
  return withAnnotations(restore, { [ANNOTATION_QUIESCED]: null });
}

/** Whether the Pod mounts one of the claims (directly or as a generic ephemeral volume). */
export function podMountsClaim(pod: KubeObject, claimNames: ReadonlySet<string>): boolean {
  return claimNamesOf(podSpecOf(pod), pod.metadata.name ?? "").some((name) => claimNames.has(name));
}

/** Is the workload up as activation asked? undefined for kinds without readiness. */
export function workloadReadiness(object: KubeObject): { ready: boolean; detail: string } | undefined {
  const spec = mapAt(object, "spec");
  const status = mapAt(object, "status") ?? {};
  const count = (key: string): number => numberAt(status, key) ?? 0;
  // A status older than the spec describes the previous spec (before activation's patch, say).
  const observed = (numberAt(status, "observedGeneration") ?? 0) >= (object.metadata.generation ?? 0);
  const verdict = (ready: boolean, detail: string): { ready: boolean; detail: string } =>
    observed ? { ready, detail } : { ready: false, detail: `${detail} (status not yet observed)` };
  switch (object.kind) {
    case "Deployment":
    case "DeploymentConfig": {
      const desired = numberAt(spec, "replicas") ?? 1;
      const updated = count("updatedReplicas");
      const available = count("availableReplicas");
      return verdict(updated >= desired && available >= desired, `${available}/${desired} available, ${updated} updated`);
    }
    case "StatefulSet": {
      const desired = numberAt(spec, "replicas") ?? 1;
      const ready = count("readyReplicas");
      return verdict(ready >= desired && count("updatedReplicas") >= desired, `${ready}/${desired} ready`);
    }
    case "ReplicaSet":
    case "ReplicationController": {
      const desired = numberAt(spec, "replicas") ?? 1;
      const ready = count("readyReplicas");
      return verdict(ready >= desired, `${ready}/${desired} ready`);
    }
    case "DaemonSet": {
      const desired = count("desiredNumberScheduled");
      const available = count("numberAvailable");
      const updated = count("updatedNumberScheduled");
      return verdict(available >= desired && updated >= desired, `${available}/${desired} available, ${updated} updated`);
    }
    default:
      return undefined;
  }
}

/**
 * The object as its owner means it, without what Theseus left on it: a source quiesced by a migration (a resumed
 * plan) or an app that arrived by an earlier one (moving back is just another move) carries our labels and
 * annotations and, while at rest, values that are not its own. The remembered originals are put back.
 */
export function withoutTheseusState(object: KubeObject): KubeObject {
  const result = clone(object);
  const kindSwitch = SWITCHES[object.kind];
  for (const key of [ANNOTATION_ACTIVATE, ANNOTATION_QUIESCED]) {
    const record = readAnnotation(object, key);
    const original = key === ANNOTATION_QUIESCED ? record?.["original"] : record;
    if (kindSwitch !== undefined && isMap(original) && kindSwitch.atRest(result)) merge(result, kindSwitch.restore(original));
  }
  const { [LABEL_MIGRATION]: _label, ...labels } = result.metadata.labels ?? {};
  const { [ANNOTATION_STAGED]: _staged, [ANNOTATION_ACTIVATE]: _activate, [ANNOTATION_QUIESCED]: _quiesced, ...annotations } = result.metadata.annotations ?? {};
  if (Object.keys(labels).length > 0) result.metadata.labels = labels;
  else delete result.metadata.labels;
  if (Object.keys(annotations).length > 0) result.metadata.annotations = annotations;
  else delete result.metadata.annotations;
  return result;
}
