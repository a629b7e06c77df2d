// Unstage: removes exactly what Stage created for the migration (found by its label and the "created" annotation),
// in reverse dependency order, the namespace last when staging created it; adopted objects only lose the label and
// annotation. It waits until the deletions are done (finalizers, PVC protection, and the PVs the provisioner deletes
// with their claims), so that the cluster is as it was when the call returns.
import { ANNOTATION_STAGED, LABEL_MIGRATION, deleteOrder, refOf } from "../../app-model/index.js";
import type { KubeObject, ObjectRef } from "../../app-model/index.js";
import type { Logger } from "../../common/index.js";
import { waitUntil } from "../../kube/index.js";
import { getIfServed } from "./cluster.js";
import type { ClusterAccess } from "./cluster.js";
import { describeRef } from "./stage.js";
import { listStaged } from "./staged.js";

export async function unstageApp(cluster: ClusterAccess, migrationId: string, namespace: string, timeoutMs: number, logger: Logger, signal?: AbortSignal): Promise<ObjectRef[]> {
  const { objects } = cluster;
  const staged = await listStaged(cluster, migrationId, namespace, signal);
  if (staged.warnings.length > 0) logger.warn({ migrationId, warnings: staged.warnings }, "some kinds could not be listed: objects of theirs are not unstaged");
  const all = [...staged.namespaced, ...staged.clusterScoped];
  const isOurNamespace = (o: KubeObject): boolean => o.apiVersion === "v1" && o.kind === "Namespace" && o.metadata.name === namespace;
  const created = all.filter((o) => o.metadata.annotations?.[ANNOTATION_STAGED] === "created");
  const adopted = all.filter((o) => o.metadata.annotations?.[ANNOTATION_STAGED] === "adopted");

  for (const object of adopted) {
    await objects.mergePatch(refOf(object), { metadata: { labels: { [LABEL_MIGRATION]: null }, annotations: { [ANNOTATION_STAGED]: null } } }, signal);
  }
  // A claim's PV goes with it when its reclaim policy says Delete; wait for those too, or the cluster is not as before.
  const volumes: ObjectRef[] = [];
  for (const pvc of created.filter((o) => o.apiVersion === "v1" && o.kind === "PersistentVolumeClaim")) {
    const volumeName = (pvc["spec"] as { volumeName?: string } | undefined)?.volumeName;
    if (volumeName === undefined || volumeName === "") continue;
    const pv = await objects.get({ apiVersion: "v1", kind: "PersistentVolume", namespace: "", name: volumeName }, signal);
    if ((pv?.["spec"] as { persistentVolumeReclaimPolicy?: string } | undefined)?.persistentVolumeReclaimPolicy === "Delete") volumes.push(refOf(pv as KubeObject));
  }
  const removed: ObjectRef[] = [];
  const ordered = [...deleteOrder(created.filter((o) => !isOurNamespace(o))), ...created.filter(isOurNamespace)];
  for (const object of ordered) {
    await objects.delete(refOf(object), signal);
    removed.push(refOf(object));
  }
  const gone = [...removed, ...volumes];
  await waitUntil({
    what: `the objects of migration ${migrationId} to be deleted`,
    timeoutMs,
    signal,
    probe: async () => {
      const left: string[] = [];
      for (const ref of gone) {
        const still = await getIfServed(cluster, ref, signal);
        if (still !== undefined) left.push(`${describeRef(ref)}${still.metadata.finalizers?.length ? ` (finalizers: ${still.metadata.finalizers.join(", ")})` : ""}`);
      }
      return left.length === 0 ? { done: true, value: undefined } : { done: false, pending: `still there: ${left.join(", ")}` };
    },
  });
  logger.info({ migrationId, namespace, removed: removed.length, released: adopted.length }, "unstaged");
  return removed;
}
