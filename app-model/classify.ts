// What moves and what stays. Discovery sends everything it found; this decides, per object, whether the target gets
// it or the target's own controllers and cluster make it (with the reason, which the plan shows: nothing is dropped
// silently). The target's facts matter only for cluster-scoped definitions it may have already.
import type { Inventory, KubeObject, ServedResource } from "./types.js";
import { isFinished } from "./staging.js";
import { groupOfApiVersion } from "./refs.js";
import { listAt, mapAt, stringAt } from "./json.js";
import { claimNamesOf, podSpecOf } from "./pod-templates.js";

/** `warn`: staying is not what the user would expect, so the plan also reports it as a warning. */
export type Classification = { readonly move: true } | { readonly move: false; readonly reason: string; readonly warn?: boolean };

const MOVE: Classification = { move: true };
const skip = (reason: string): Classification => ({ move: false, reason });

const MADE_BY_CLUSTER: Readonly<Record<string, string>> = {
  Event: "events are the source cluster's history",
  EndpointSlice: "the target's EndpointSlice controller makes it for its Service",
  ControllerRevision: "the target's controller records its own revisions",
  PersistentVolume: "the target's provisioner makes a new volume for the moved claim (and the sync copies the data)",
  StorageClass: "the target has its own storage classes: the claims are mapped onto them (--storage-class SRC=DST)",
  ImageStreamTag: "made from its ImageStream",
  ImageTag: "made from its ImageStream",
  ImageStreamImage: "made from its ImageStream",
  ImageStreamMapping: "made from its ImageStream",
};

// Made in every namespace by OpenShift's controllers; copying them would only conflict.
const OPENSHIFT_ROLEBINDINGS = new Set(["system:image-pullers", "system:image-builders", "system:deployers"]);
const CLUSTER_CONFIGMAPS = new Set(["kube-root-ca.crt", "openshift-service-ca.crt"]);

/** The inventory's lookups the classification needs, built once per plan. */
export interface ClassifyContext {
  readonly uids: ReadonlyMap<string, KubeObject>;
  /** Secrets the token controller made: listed in their ServiceAccount's `secrets`. */
  readonly generatedSecrets: ReadonlySet<string>;
  readonly services: ReadonlyMap<string, KubeObject>;
  /** The app's claims, "NAMESPACE/NAME". */
  readonly claims: ReadonlySet<string>;
  readonly resources: readonly ServedResource[];
}

export function classifyContext(inventory: Inventory): ClassifyContext {
  const uids = new Map<string, KubeObject>();
  const generatedSecrets = new Set<string>();
  const services = new Map<string, KubeObject>();
  const claims = new Set<string>();
  for (const object of inventory.objects) {
    if (object.metadata.uid !== undefined) uids.set(object.metadata.uid, object);
    const ns = object.metadata.namespace ?? "";
    if (object.kind === "ServiceAccount") {
      for (const s of listAt(object, "secrets")) generatedSecrets.add(`${ns}/${stringAt(s, "name") ?? ""}`);
    }
    if (object.kind === "Service" && object.apiVersion === "v1") services.set(`${ns}/${object.metadata.name ?? ""}`, object);
    if (object.kind === "PersistentVolumeClaim") claims.add(`${ns}/${object.metadata.name ?? ""}`);
  }
  return { uids, generatedSecrets, services, claims, resources: inventory.resources };
}

export function classify(object: KubeObject, context: ClassifyContext): Classification {
  const group = groupOfApiVersion(object.apiVersion);
  const name = object.metadata.name ?? "";
  const ns = object.metadata.namespace ?? "";
  const made = MADE_BY_CLUSTER[object.kind];
  if (made !== undefined && (object.kind !== "EndpointSlice" || isManagedSlice(object))) return skip(made);
  if (object.kind === "Endpoints" && group === "") {
    // Endpoints of a Service without a selector are the user's (an external backend); the others are the controller's.
    const service = context.services.get(`${ns}/${name}`);
    if (service === undefined || mapAt(service, "spec", "selector") !== undefined) return skip("the target's endpoints controller makes it for its Service");
  }
  // Claims carry the data: even one a StatefulSet owns (retention policy) must exist before its pod on the target.
  if (object.kind !== "PersistentVolumeClaim") {
    for (const owner of object.metadata.ownerReferences ?? []) {
      const moved = context.uids.get(owner.uid);
      if (moved !== undefined) return skip(`made on the target by its owner ${owner.kind}/${owner.name}`);
      if (owner.controller === true) {
        return skip(`controlled by ${owner.kind}/${owner.name}, which is not part of the selection: move its owner instead`);
      }
    }
  }
  if (object.kind === "Pod" && group === "" && (object.metadata.ownerReferences ?? []).length === 0) {
    // Nothing holds a bare Pod at rest on the target: created there, it would write its claims while the source runs.
    const claims = claimNamesOf(podSpecOf(object), name).filter((c) => context.claims.has(`${ns}/${c}`));
    if (claims.length > 0 && !isFinished(object)) {
      return {
        move: false,
        warn: true,
        reason: `a Pod without a controller that mounts claim ${claims.join(", ")}: on the target it would write while the source still runs; run it under a Deployment or StatefulSet to move it, or recreate it after the migration`,
      };
    }
  }
  if (isFinished(object)) return skip(`finished (${object.kind === "Pod" ? "its phase" : "its Job condition"} says so): nothing left to run`);
  if (object.kind === "Secret" && group === "") {
    const type = object["type"];
    const account = object.metadata.annotations?.["kubernetes.io/service-account.name"];
    if (type === "kubernetes.io/service-account-token" && (context.generatedSecrets.has(`${ns}/${name}`) || /-token-[a-z0-9]{5}$/.test(name))) {
      return skip(`the target's token controller makes the token of ServiceAccount ${account ?? "?"}`);
    }
    if (type === "kubernetes.io/dockercfg" && account !== undefined) return skip(`OpenShift makes the pull secret of ServiceAccount ${account}`);
  }
  if (object.kind === "ServiceAccount" && name === "default") return skip("every namespace gets its own default ServiceAccount");
  // OpenShift makes builder and deployer in every namespace, each with its generated dockercfg secret.
  if (object.kind === "ServiceAccount" && (name === "builder" || name === "deployer") && hasGeneratedPullSecret(object, name)) {
    return skip("OpenShift makes it in every namespace");
  }
  if (object.kind === "ConfigMap" && CLUSTER_CONFIGMAPS.has(name)) return skip("the target publishes its own CA bundle in every namespace");
  if (object.kind === "RoleBinding" && OPENSHIFT_ROLEBINDINGS.has(name)) return skip("OpenShift makes it in every namespace");
  if (object.kind === "ClusterRole" && (name.startsWith("system:") || object.metadata.labels?.["kubernetes.io/bootstrapping"] === "rbac-defaults")) {
    return skip("a default role of every cluster");
  }
  const served = context.resources.find((r) => r.group === group && r.kind === object.kind && !r.resource.includes("/"));
  if (served !== undefined && served.verbs.length > 0 && !served.verbs.includes("create")) {
    return skip(`the API server computes ${served.resource} and accepts no create`);
  }
  return MOVE;
}

function isManagedSlice(slice: KubeObject): boolean {
  // Slices that nothing manages, or that a user's tool manages, are the user's.
  const manager = slice.metadata.labels?.["endpointslice.kubernetes.io/managed-by"];
  return manager === "endpointslice-controller.k8s.io" || manager === "endpointslicemirroring-controller.k8s.io";
}

function hasGeneratedPullSecret(account: KubeObject, name: string): boolean {
  const generated = new RegExp(`^${name}-dockercfg-[a-z0-9]{5}$`);
  return [...listAt(account, "secrets"), ...listAt(account, "imagePullSecrets")].some((s) => generated.test(stringAt(s, "name") ?? ""));
}
