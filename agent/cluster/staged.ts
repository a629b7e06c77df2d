// What a migration staged on this cluster, found by its label across every served kind (namespaced ones in the
// namespace, cluster-scoped ones such as CRDs and ClusterRoles): the truth is in the cluster, not in the agent's memory,
// so that Unstage and Activate work after an agent restart or a coordinator crash.
import { LABEL_MIGRATION } from "../../app-model/index.js";
import type { KubeObject } from "../../app-model/index.js";
import { TheseusError } from "../../common/index.js";
import type { ClusterAccess } from "./cluster.js";
import { listEach, listableResources } from "./selection.js";

const LABEL_VALUE = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;

/** Migration ids are label values; anything else could never be found again. */
export function validateMigrationId(id: string): string {
  if (!LABEL_VALUE.test(id)) {
    throw new TheseusError("invalid_argument", `migration id "${id}" is not a valid label value`, { hint: "use at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit" });
  }
  return id;
}

export function validateNamespace(namespace: string): string {
  if (!/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(namespace)) {
    throw new TheseusError("invalid_argument", `"${namespace}" is not a valid namespace name`, { hint: "namespaces are DNS labels: lower-case letters, digits and '-', at most 63" });
  }
  return namespace;
}

export async function listStaged(
  cluster: ClusterAccess,
  migrationId: string,
  namespace: string,
  signal?: AbortSignal,
  /**
   * Only these kinds (activation needs the workloads alone), from the cached discovery: staging refreshed it when it
   * created a CRD, and a restarted agent loads it afresh. Default: every served kind, after a refresh (unstage).
   */
  kinds?: ReadonlySet<string>,
): Promise<{ namespaced: KubeObject[]; clusterScoped: KubeObject[]; warnings: string[] }> {
  const discovery = await cluster.objects.discovery(signal, kinds === undefined);
  const labelSelector = `${LABEL_MIGRATION}=${migrationId}`;
  const wanted = (namespaced: boolean): ReturnType<typeof listableResources> => listableResources(discovery, namespaced).filter((r) => kinds === undefined || kinds.has(r.kind));
  const inNamespace = await listEach(cluster.objects, wanted(true), { namespace, labelSelector }, signal);
  const clusterWide = await listEach(cluster.objects, wanted(false), { labelSelector }, signal);
  return { namespaced: inNamespace.objects, clusterScoped: clusterWide.objects, warnings: [...inNamespace.warnings, ...clusterWide.warnings] };
}
