// Retire on the source after a committed move (`theseus finish ID`): the application's objects are deleted, claims
// (and with them, per reclaim policy, the data) included, because the application now lives in the target. Only what
// the application is made of goes: children follow their owners through the garbage collector, and what Kubernetes
// makes in every namespace on its own (the default ServiceAccount, its token Secrets, the CA bundle, Events,
// Endpoints) stays, as does the namespace itself, which may hold other things. It refuses when the application is not
// at rest under this migration's quiesce record any more (someone scaled it up since): that is a running application,
// not a retired one.
import { ANNOTATION_QUIESCED, deleteOrder, refOf } from "../../app-model/index.js";
import type { KubeObject, ObjectRef } from "../../app-model/index.js";
import { TheseusError } from "../../common/index.js";
import type { Logger } from "../../common/index.js";
import { waitUntil } from "../../kube/index.js";
import { getIfServed } from "./cluster.js";
import type { ClusterAccess } from "./cluster.js";
import { listApp } from "./selection.js";
import type { AppSelection } from "./selection.js";
import { describeRef } from "./stage.js";

/** Kinds Kubernetes keeps in a namespace by itself, or that controllers remake: never the application's to delete. */
const KEPT_KINDS = new Set(["Event", "Endpoints", "EndpointSlice", "Lease", "Pod", "ControllerRevision"]);

function belongsToApp(o: KubeObject): boolean {
  if (KEPT_KINDS.has(o.kind)) return false;
  if ((o.metadata.ownerReferences ?? []).length > 0) return false; // goes with its owner
  if (o.kind === "ServiceAccount" && o.metadata.name === "default") return false;
  if (o.kind === "ConfigMap" && o.metadata.name === "kube-root-ca.crt") return false;
  if (o.kind === "Secret" && (o["type"] === "kubernetes.io/service-account-token" || (o.metadata.name ?? "").startsWith("theseus-migration-"))) return false;
  return true;
}

export async function retireApp(cluster: ClusterAccess, migrationId: string, selection: AppSelection, timeoutMs: number, logger: Logger, signal?: AbortSignal): Promise<ObjectRef[]> {
  const { objects } = cluster;
  const listing = await listApp(objects, selection, signal);
  const app = listing.objects.filter(belongsToApp);
  for (const o of app) {
    const record = o.metadata.annotations?.[ANNOTATION_QUIESCED];
    if (record === undefined) continue;
    let ours = false;
    try {
      ours = (JSON.parse(record) as { migration?: unknown }).migration === migrationId;
    } catch {
      ours = false;
    }
    const replicas = (o["spec"] as { replicas?: number } | undefined)?.replicas;
    if (ours && replicas !== undefined && replicas > 0) {
      throw new TheseusError("failed_precondition", `${describeRef(refOf(o))} in ${selection.namespace} runs again (${replicas} replicas) since migration ${migrationId} quiesced it: not removing a running application`, {
        hint: "scale it to zero if it should go, or keep it: the migration stays committed either way",
      });
    }
  }
  const removed: ObjectRef[] = [];
  for (const o of deleteOrder(app)) {
    await objects.delete(refOf(o), signal);
    removed.push(refOf(o));
  }
  await waitUntil({
    what: `the retired application of migration ${migrationId} in ${selection.namespace} to be deleted`,
    timeoutMs,
    signal,
    probe: async () => {
      const left: string[] = [];
      for (const ref of removed) if ((await getIfServed(cluster, ref, signal)) !== undefined) left.push(describeRef(ref));
      return left.length === 0 ? { done: true, value: undefined } : { done: false, pending: `still there: ${left.join(", ")}` };
    },
  });
  logger.info({ migrationId, namespace: selection.namespace, removed: removed.length }, "source retired: the application's objects are deleted");
  return removed;
}
