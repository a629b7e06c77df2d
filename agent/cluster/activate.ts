// Activate on the target: app-model's activation patch (the remembered replicas and suspensions) on every object the
// migration staged; then, when asked, wait until each workload reports ready, naming what is not and why.
import { SWITCHED_KINDS, activationPatch, refOf, workloadReadiness } from "../../app-model/index.js";
import type { ObjectRef } from "../../app-model/index.js";
import type { Logger } from "../../common/index.js";
import { waitUntil } from "../../kube/index.js";
import type { ClusterAccess } from "./cluster.js";
import { getIfServed } from "./cluster.js";
import { describeRef } from "./stage.js";
import { listStaged } from "./staged.js";

export async function activateApp(
  cluster: ClusterAccess,
  migrationId: string,
  namespace: string,
  options: { readonly waitReady: boolean; readonly timeoutMs: number },
  logger: Logger,
  signal?: AbortSignal,
): Promise<{ activated: ObjectRef[]; durationMs: number }> {
  // Only the kinds activation switches on: it runs while the application is down, and listing every served kind
  // (cluster-scoped ones too) cost a second on a busy API server.
  const staged = await listStaged(cluster, migrationId, namespace, signal, SWITCHED_KINDS);
  const started = Date.now();
  const activated: ObjectRef[] = [];
  for (const object of [...staged.namespaced, ...staged.clusterScoped]) {
    const patch = activationPatch(object, migrationId);
    if (patch === undefined) continue;
    await cluster.objects.mergePatch(refOf(object), patch, signal);
    activated.push(refOf(object));
  }
  logger.info({ migrationId, namespace, activated: activated.length }, "staged application activated");
  if (!options.waitReady) return { activated, durationMs: 0 };
  const workloads = staged.namespaced.filter((o) => workloadReadiness(o) !== undefined).map(refOf);
  // Watches on the workloads' collections wake the probe when their status changes: the target's start-up is part of
  // the cutover's downtime, and a poll alone would add half its interval to it on average.
  const paths = new Set<string>();
  for (const ref of workloads) {
    const r = await cluster.objects.resourceFor(ref.apiVersion, ref.kind, signal);
    paths.add(`${r.group === "" ? `/api/${r.version}` : `/apis/${r.group}/${r.version}`}/namespaces/${encodeURIComponent(namespace)}/${r.resource}`);
  }
  await waitUntil({
    what: `the workloads of migration ${migrationId} in ${namespace} to be ready`,
    timeoutMs: options.timeoutMs,
    signal,
    intervalMs: 500,
    watch: { kubeConfig: cluster.kubeConfig, paths: [...paths] },
    probe: async () => {
      const notReady: string[] = [];
      for (const ref of workloads) {
        const current = await getIfServed(cluster, ref, signal);
        const readiness = current === undefined ? { ready: false, detail: "deleted" } : workloadReadiness(current);
        if (readiness !== undefined && !readiness.ready) notReady.push(`${describeRef(ref)}: ${readiness.detail}`);
      }
      return notReady.length === 0 ? { done: true, value: undefined } : { done: false, pending: `not ready: ${notReady.join("; ")}` };
    },
  });
  return { activated, durationMs: Date.now() - started };
}

