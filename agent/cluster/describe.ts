// DescribeCluster: what the plan's checks need to know of the target cluster.
import type { KubeObject, ObjectRef, ServedResource } from "../../app-model/index.js";
import { apiVersionOf } from "../../kube/index.js";
import type { ClusterAccess } from "./cluster.js";
import { listableResources } from "./selection.js";

export interface ClusterDescription {
  readonly serverVersion: string;
  readonly resources: readonly ServedResource[];
  /** StorageClasses, the namespace with its ResourceQuotas and LimitRanges, CRDs, then the looked-up objects found. */
  readonly objects: readonly KubeObject[];
}

export async function describeCluster(cluster: ClusterAccess, namespace: string, lookups: readonly ObjectRef[], signal?: AbortSignal): Promise<ClusterDescription> {
  const { objects } = cluster;
  const discovery = await objects.discovery(signal, true);
  const listable = [...listableResources(discovery, true), ...listableResources(discovery, false)];
  const served = (apiVersion: string, kind: string): ServedResource[] =>
    apiVersion === "" ? listable.filter((r) => r.kind === kind) : discovery.resources.filter((r) => r.kind === kind && apiVersionOf(r) === apiVersion);
  const out: KubeObject[] = [];
  const seen = new Set<string>();
  const add = (object: KubeObject): void => {
    const key = object.metadata.uid ?? `${object.apiVersion}/${object.kind}/${object.metadata.namespace ?? ""}/${object.metadata.name ?? ""}`;
    if (!seen.has(key)) {
      seen.add(key);
      out.push(object);
    }
  };
  const clusterWide = [...served("storage.k8s.io/v1", "StorageClass"), ...served("apiextensions.k8s.io/v1", "CustomResourceDefinition")];
  // Unlike discovery, a listing that fails fails the call: a plan checked against half the facts would mislead.
  for (const resource of clusterWide) for (const o of await objects.list(resource, {}, signal)) add(o);
  const ns = await objects.get({ apiVersion: "v1", kind: "Namespace", namespace: "", name: namespace }, signal);
  if (ns !== undefined) {
    add(ns);
    const inNamespace = [...served("v1", "ResourceQuota"), ...served("v1", "LimitRange")];
    for (const resource of inNamespace) for (const o of await objects.list(resource, { namespace }, signal)) add(o);
  }
  for (const ref of lookups) {
    // An empty apiVersion asks for the kind in whichever group and version serves it.
    for (const resource of served(ref.apiVersion, ref.kind)) {
      if (resource.namespaced === (ref.namespace === "")) continue;
      const found = await objects.get({ ...ref, apiVersion: apiVersionOf(resource) }, signal);
      if (found !== undefined) add(found);
    }
  }
  return { serverVersion: discovery.serverVersion, resources: discovery.resources, objects: out };
}
