// Quiesce and Unquiesce on the source: app-model says per kind how to stop a writer (and remembers the original value
// in an annotation); this applies those merge patches, then waits until every pod that mounts one of the
// application's claims is gone (not merely terminating: a copy taken while a database still shuts down is corrupt).
import { isMoverObject } from "./movers.js";
import { SWITCHED_KINDS, podMountsClaim, quiescePatch, refOf, unquiescePatch } from "../../app-model/index.js";
import type { KubeObject, ObjectRef } from "../../app-model/index.js";
import type { Logger } from "../../common/index.js";
import { waitUntil } from "../../kube/index.js";
import type { ClusterAccess } from "./cluster.js";
import { listApp } from "./selection.js";
import type { AppSelection } from "./selection.js";

const QUIESCE_LISTED_KINDS: ReadonlySet<string> = new Set([...SWITCHED_KINDS, "PersistentVolumeClaim"]);

export async function quiesceApp(
  cluster: ClusterAccess,
  migrationId: string,
  selection: AppSelection,
  timeoutMs: number,
  logger: Logger,
  signal?: AbortSignal,
): Promise<{ changed: ObjectRef[]; durationMs: number }> {
  const { objects } = cluster;
  // Only the kinds quiesce switches, and the claims, from the discovery the plan already loaded: listing every served
  // kind after a discovery refresh took seconds on a busy API server, all of it downtime.
  const listing = await listApp(objects, selection, signal, { kinds: QUIESCE_LISTED_KINDS, refreshDiscovery: false });
  const started = Date.now();
  const changed: ObjectRef[] = [];
  for (const object of listing.objects) {
    const patch = quiescePatch(object, migrationId);
    if (patch === undefined) continue;
    await objects.mergePatch(refOf(object), patch, signal);
    changed.push(refOf(object));
  }
  logger.info({ migrationId, namespace: selection.namespace, changed: changed.length }, "writers stopped; waiting for the pods that mount the claims to be gone");
  const claims = new Set(listing.objects.filter((o) => o.apiVersion === "v1" && o.kind === "PersistentVolumeClaim").map((o) => o.metadata.name ?? ""));
  const pods = await objects.resourceFor("v1", "Pod", signal);
  await waitUntil({
    what: `the pods that mount the claims of ${selection.namespace} to be gone`,
    timeoutMs,
    signal,
    watch: { kubeConfig: cluster.kubeConfig, paths: [`/api/v1/namespaces/${selection.namespace}/pods`] },
    probe: async () => {
      // Every pod of the namespace, whatever its labels: a writer outside the selection corrupts the copy all the same.
      // Except the movers: they only read the source's files (their cache directory is hidden from every round).
      const left = (await objects.list(pods, { namespace: selection.namespace }, signal)).filter((pod) => podMountsClaim(pod, claims) && !isMoverObject(pod));
      return left.length === 0 ? { done: true, value: undefined } : { done: false, pending: `still there: ${left.map(describePod).join(", ")}` };
    },
  });
  return { changed, durationMs: changed.length === 0 ? 0 : Date.now() - started };
}

export async function unquiesceApp(cluster: ClusterAccess, migrationId: string, selection: AppSelection, logger: Logger, signal?: AbortSignal): Promise<ObjectRef[]> {
  const listing = await listApp(cluster.objects, selection, signal);
  const restored: ObjectRef[] = [];
  for (const object of listing.objects) {
    const patch = unquiescePatch(object, migrationId);
    if (patch === undefined) continue;
    await cluster.objects.mergePatch(refOf(object), patch, signal);
    restored.push(refOf(object));
  }
  logger.info({ migrationId, namespace: selection.namespace, restored: restored.length }, "writers restored");
  return restored;
}

function describePod(pod: KubeObject): string {
  const phase = (pod["status"] as { phase?: string } | undefined)?.phase ?? "Pending";
  return `pod ${pod.metadata.name ?? ""} (${pod.metadata.deletionTimestamp === undefined ? phase : "terminating"})`;
}
