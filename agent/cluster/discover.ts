// Discover: the application's objects as the API server returned them, then the cluster-scoped objects they depend
// on, then its claims with what volume access measured, then a summary. Nothing is filtered here: classification
// (what moves, what stays and why) is app-model's.
import { groupOfApiVersion } from "../../app-model/index.js";
import type { ClaimInfo, KubeObject, ServedResource } from "../../app-model/index.js";
import { describeError } from "../../common/index.js";
import type { Logger } from "../../common/index.js";
import { listApp, listEach } from "./selection.js";
import type { AppSelection } from "./selection.js";
import type { ClusterAccess } from "./cluster.js";
import { claimInfo } from "./claims.js";

export type DiscoverItem =
  | { readonly type: "object"; readonly object: KubeObject }
  | { readonly type: "claim"; readonly claim: ClaimInfo }
  | { readonly type: "done"; readonly serverVersion: string; readonly resources: readonly ServedResource[]; readonly warnings: readonly string[] };

export async function* discoverApp(cluster: ClusterAccess, selection: AppSelection, logger: Logger, signal?: AbortSignal): AsyncGenerator<DiscoverItem> {
  const listing = await listApp(cluster.objects, selection, signal);
  const warnings = [...listing.warnings];
  for (const object of listing.objects) yield { type: "object", object };
  for (const object of await dependencies(cluster, selection.namespace, listing.objects, warnings, signal)) yield { type: "object", object };
  for (const pvc of listing.objects.filter((o) => o.apiVersion === "v1" && o.kind === "PersistentVolumeClaim")) {
    const claim = await claimInfo(cluster, pvc, signal);
    if (claim.measureWarning !== undefined) warnings.push(claim.measureWarning);
    yield { type: "claim", claim: claim.info };
  }
  logger.info({ namespace: selection.namespace, objects: listing.objects.length, warnings: warnings.length }, "discovered the application");
  yield { type: "done", serverVersion: listing.discovery.serverVersion, resources: listing.listed, warnings };
}

/**
 * The cluster-scoped objects the application depends on: PVs bound to its claims, StorageClasses its claims name,
 * ClusterRoleBindings whose subjects name its service accounts and the ClusterRoles those (and its RoleBindings)
 * reference, and the CRDs of its custom resources.
 */
async function dependencies(cluster: ClusterAccess, namespace: string, app: readonly KubeObject[], warnings: string[], signal?: AbortSignal): Promise<KubeObject[]> {
  const { objects } = cluster;
  const out: KubeObject[] = [];
  const get = async (apiVersion: string, kind: string, name: string): Promise<void> => {
    try {
      const found = await objects.get({ apiVersion, kind, namespace: "", name }, signal);
      if (found !== undefined && !out.some((o) => o.kind === kind && o.metadata.name === name)) out.push(found);
    } catch (error) {
      warnings.push(`${kind} ${name}: cannot be read: ${firstLine(error)}`);
    }
  };
  const claims = app.filter((o) => o.apiVersion === "v1" && o.kind === "PersistentVolumeClaim");
  for (const pvc of claims) {
    const volumeName = spec(pvc)["volumeName"];
    if (typeof volumeName === "string" && volumeName !== "") await get("v1", "PersistentVolume", volumeName);
  }
  const classes = new Set<string>();
  for (const pvc of claims) addString(classes, spec(pvc)["storageClassName"]);
  for (const sts of app.filter((o) => o.kind === "StatefulSet")) {
    const templates = spec(sts)["volumeClaimTemplates"];
    for (const t of Array.isArray(templates) ? (templates as KubeObject[]) : []) addString(classes, spec(t)["storageClassName"]);
  }
  for (const name of [...classes].sort()) await get("storage.k8s.io/v1", "StorageClass", name);

  const accounts = new Set(app.filter((o) => o.apiVersion === "v1" && o.kind === "ServiceAccount").map((o) => o.metadata.name ?? ""));
  const clusterRoles = new Set<string>();
  for (const rb of app.filter((o) => o.kind === "RoleBinding" && groupOfApiVersion(o.apiVersion) === "rbac.authorization.k8s.io")) {
    const roleRef = rb["roleRef"] as { kind?: string; name?: string } | undefined;
    if (roleRef?.kind === "ClusterRole") addString(clusterRoles, roleRef.name);
  }
  if (accounts.size > 0) {
    try {
      const crbResource = await objects.resourceFor("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", signal);
      const { objects: bindings, warnings: listWarnings } = await listEach(objects, [crbResource], {}, signal);
      warnings.push(...listWarnings);
      for (const crb of bindings) {
        const subjects = Array.isArray(crb["subjects"]) ? (crb["subjects"] as Array<{ kind?: string; name?: string; namespace?: string }>) : [];
        if (!subjects.some((s) => s.kind === "ServiceAccount" && s.namespace === namespace && accounts.has(s.name ?? ""))) continue;
        out.push(crb);
        const roleRef = crb["roleRef"] as { kind?: string; name?: string } | undefined;
        if (roleRef?.kind === "ClusterRole") addString(clusterRoles, roleRef.name);
      }
    } catch (error) {
      warnings.push(`clusterrolebindings.rbac.authorization.k8s.io: cannot be listed: ${firstLine(error)}`);
    }
  }
  for (const name of [...clusterRoles].sort()) await get("rbac.authorization.k8s.io/v1", "ClusterRole", name);

  const kinds = new Set(app.map((o) => `${groupOfApiVersion(o.apiVersion)}/${o.kind}`));
  try {
    const crdResource = await objects.resourceFor("apiextensions.k8s.io/v1", "CustomResourceDefinition", signal);
    for (const crd of await objects.list(crdResource, {}, signal)) {
      const s = spec(crd) as { group?: string; names?: { kind?: string } };
      if (kinds.has(`${s.group ?? ""}/${s.names?.kind ?? ""}`)) out.push(crd);
    }
  } catch (error) {
    warnings.push(`customresourcedefinitions.apiextensions.k8s.io: cannot be listed: ${firstLine(error)}`);
  }
  return out;
}

function spec(object: KubeObject): Record<string, unknown> {
  const value = object["spec"];
  return typeof value === "object" && value !== null ? (value as Record<string, unknown>) : {};
}

function addString(set: Set<string>, value: unknown): void {
  if (typeof value === "string" && value !== "") set.add(value);
}

const firstLine = (error: unknown): string => describeError(error).split("\n")[0] ?? "";
