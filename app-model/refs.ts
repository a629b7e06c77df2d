// Naming objects: refs, stable keys, groups, and the resource (plural) names rules and checks speak of.
import type { KubeObject, ObjectRef, ServedResource } from "./types.js";

export function refOf(object: KubeObject): ObjectRef {
  return {
    apiVersion: object.apiVersion,
    kind: object.kind,
    namespace: object.metadata.namespace ?? "",
    name: object.metadata.name ?? "",
  };
}

/** "apps/v1/Deployment/shop/web"; cluster-scoped objects have an empty namespace segment ("v1/Namespace//shop"). */
export function refKey(ref: ObjectRef): string {
  return `${ref.apiVersion}/${ref.kind}/${ref.namespace}/${ref.name}`;
}

/** A key that ignores the version: the same object served as batch/v1 and batch/v1beta1 is one object. */
export function identityKey(ref: ObjectRef): string {
  return `${groupOfApiVersion(ref.apiVersion)}/${ref.kind}/${ref.namespace}/${ref.name}`;
}

export function groupOfApiVersion(apiVersion: string): string {
  const slash = apiVersion.indexOf("/");
  return slash < 0 ? "" : apiVersion.slice(0, slash);
}

export function versionOfApiVersion(apiVersion: string): string {
  const slash = apiVersion.indexOf("/");
  return slash < 0 ? apiVersion : apiVersion.slice(slash + 1);
}

export function apiVersionOf(group: string, version: string): string {
  return group === "" ? version : `${group}/${version}`;
}

/** "Deployment/web", "Namespace/shop": how messages name an object. */
export function describeRef(ref: ObjectRef): string {
  return ref.namespace === "" ? `${ref.kind}/${ref.name}` : `${ref.kind}/${ref.name} in ${ref.namespace}`;
}

/**
 * `deployments.apps`, `configmaps`: the group-resource user rules match. The served resources say the plural; a kind
 * discovery did not list (rare: it was in the inventory, so it was listed) falls back to English plural rules.
 */
export function groupResourceOf(object: KubeObject, resources: readonly ServedResource[]): string {
  const group = groupOfApiVersion(object.apiVersion);
  const served = resources.find((r) => r.group === group && r.kind === object.kind && !r.resource.includes("/"));
  const resource = served?.resource ?? pluralOf(object.kind);
  return group === "" ? resource : `${resource}.${group}`;
}

function pluralOf(kind: string): string {
  const lower = kind.toLowerCase();
  if (/(s|x|z|ch|sh)$/.test(lower)) return lower + "es";
  if (/[^aeiou]y$/.test(lower)) return lower.slice(0, -1) + "ies";
  return lower + "s";
}
