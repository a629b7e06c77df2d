// The emulated kubelet of one node: registers the Node, keeps it Ready (status heartbeat and node Lease), and runs a
// PodWorker for every pod bound to it. Level-based: a watch on the node's pods only says "look now"; each pass lists
// the pods and reconciles them, and a resync pass runs every couple of seconds anyway.
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import type { KubeConfig, V1Node } from "@kubernetes/client-node";
import { CoordinationV1Api, CoreV1Api, PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import type { Logger } from "../common/index.js";
import { describeError, sleep } from "../common/index.js";
import { EventRecorder } from "./events.js";
import { createIfAbsent, isNotFound, watchTrigger } from "../kube/index.js";
import { KUBERNETES_VERSION } from "./paths.js";
import { PodWorker } from "./pod-worker.js";

export interface KubeletOptions {
  readonly kubeConfig: KubeConfig;
  readonly nodeName: string;
  /** The node's own address, 127.<cluster>.0.<n> (its InternalIP, the pods' hostIP, where NodePorts answer). */
  readonly nodeIp: string;
  readonly podsDir: string;
  readonly apiServerPort: number;
  /** Hands out a loopback pod IP (127.<cluster>.X.Y), or returns the one a pod already has. */
  readonly podIp: (existing: string | undefined) => string;
  readonly logger: Logger;
  readonly signal: AbortSignal;
}

const HEARTBEAT_MS = 10_000;
const RESYNC_MS = 2_000;
const TICK_MS = 1_000;

export async function runKubelet(options: KubeletOptions): Promise<void> {
  const { kubeConfig: kc, nodeName, signal } = options;
  const logger = options.logger.child({ component: "kubelet", node: nodeName });
  const core = kc.makeApiClient(CoreV1Api);
  const coordination = kc.makeApiClient(CoordinationV1Api);
  const events = new EventRecorder(core, { component: "kubelet", host: nodeName }, logger);
  await registerNode(core, nodeName, options.nodeIp);
  logger.info({ nodeIp: options.nodeIp }, "node registered");

  const heartbeat = (async () => {
    while (!signal.aborted) {
      try {
        await patchNodeStatus(core, nodeName, options.nodeIp);
        await renewLease(coordination, nodeName);
      } catch (error) {
        if (isNotFound(error)) await registerNode(core, nodeName, options.nodeIp).catch(() => undefined);
        logger.warn({ err: describeError(error) }, "node heartbeat failed");
      }
      await sleep(HEARTBEAT_MS, signal).catch(() => undefined);
    }
  })();

  const workers = new Map<string, PodWorker>();
  // An event that arrives while a pass runs must start another pass at once, not wait for the resync: `pending`
  // remembers it until the loop looks again.
  let wake: (() => void) | undefined;
  let pending = false;
  const trigger = (): void => {
    pending = true;
    wake?.();
  };
  void watchTrigger(kc, "/api/v1/pods", { fieldSelector: `spec.nodeName=${nodeName}` }, trigger, signal, logger);

  const ticker = (async () => {
    while (!signal.aborted) {
      await sleep(TICK_MS, signal).catch(() => undefined);
      for (const w of workers.values()) await w.tick().catch((e: unknown) => logger.warn({ err: describeError(e) }, "pod tick failed"));
    }
  })();

  while (!signal.aborted) {
    pending = false;
    try {
      const pods = (await core.listPodForAllNamespaces({ fieldSelector: `spec.nodeName=${nodeName}` })).items;
      const present = new Set<string>();
      for (const pod of pods) {
        const uid = pod.metadata?.uid ?? "";
        present.add(uid);
        let worker = workers.get(uid);
        if (worker === undefined) {
          if (pod.status?.phase === "Succeeded" || pod.status?.phase === "Failed") {
            if (pod.metadata?.deletionTimestamp === undefined) continue; // finished before this daemon started
          }
          const podDir = join(options.podsDir, uid);
          await mkdir(podDir, { recursive: true });
          worker = new PodWorker(pod, {
            core,
            events,
            logger,
            nodeName,
            nodeIp: options.nodeIp,
            podDir,
            podIp: options.podIp(pod.status?.podIP),
            apiServerPort: options.apiServerPort,
          });
          workers.set(uid, worker);
        }
        void worker.sync(pod).catch((e: unknown) => logger.warn({ pod: pod.metadata?.name, err: describeError(e) }, "pod sync failed"));
      }
      for (const [uid, worker] of workers) {
        if (worker.finished) workers.delete(uid);
        else if (!present.has(uid)) {
          // Force-deleted (grace 0) or gone while we were not looking: nothing to report, just stop the processes.
          workers.delete(uid);
          await worker.forget();
        }
      }
    } catch (error) {
      logger.warn({ err: describeError(error) }, "listing pods failed; retrying");
    }
    if (!pending) {
      await new Promise<void>((resolve) => {
        wake = resolve;
        sleep(RESYNC_MS, signal).then(resolve, resolve);
      });
    }
    wake = undefined;
    // Coalesces a burst of watch events (a pod's deletion brings several) into one pass, yet short enough that the
    // pod stopped by a cutover's scale-down gets its SIGTERM without a noticeable delay.
    await sleep(20, signal).catch(() => undefined);
  }

  logger.info({ pods: workers.size }, "stopping pods");
  await Promise.all([...workers.values()].map((w) => w.shutdown(10)));
  await Promise.all([heartbeat, ticker]);
}

function nodeObject(name: string): V1Node {
  return {
    apiVersion: "v1",
    kind: "Node",
    metadata: {
      name,
      labels: {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
        "theseus.local/emulated": "true",
      },
    },
    spec: {},
  };
}

async function registerNode(core: CoreV1Api, name: string, nodeIp: string): Promise<void> {
  await createIfAbsent(() => core.createNode({ body: nodeObject(name) }));
  await patchNodeStatus(core, name, nodeIp);
}

async function patchNodeStatus(core: CoreV1Api, name: string, nodeIp: string): Promise<void> {
  const now = new Date();
  const condition = (type: string, status: string, reason: string, message: string) => ({
    type,
    status,
    reason,
    message,
    lastHeartbeatTime: now,
    lastTransitionTime: now,
  });
  const capacity = { cpu: "8", memory: "16Gi", pods: "110", "ephemeral-storage": "100Gi" };
  const status = {
    capacity,
    allocatable: capacity,
    conditions: [
      condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
      condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
      condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
      condition("Ready", "True", "KubeletReady", "emulated kubelet (theseus local) is posting ready status"),
    ],
    addresses: [
      { type: "InternalIP", address: nodeIp },
      { type: "Hostname", address: name },
    ],
    daemonEndpoints: { kubeletEndpoint: { Port: 0 } },
    nodeInfo: {
      machineID: name,
      systemUUID: name,
      bootID: name,
      kernelVersion: process.version,
      osImage: "theseus emulated kubelet (local processes)",
      containerRuntimeVersion: "theseus://local-process",
      kubeletVersion: KUBERNETES_VERSION,
      kubeProxyVersion: KUBERNETES_VERSION,
      operatingSystem: "linux",
      architecture: "amd64",
    },
  };
  // Strategic merge keys conditions by type, so lastTransitionTime of an unchanged condition is kept server-side
  // only if we send the same value; Ready never changes while this process lives, which is the truth we report.
  await core.patchNodeStatus({ name, body: { status } }, setHeaderOptions("Content-Type", PatchStrategy.StrategicMergePatch));
}

async function renewLease(coordination: CoordinationV1Api, name: string): Promise<void> {
  const namespace = "kube-node-lease";
  // Lease times are MicroTime (6 fractional digits); client-node would send a Date with 3, which the API rejects,
  // so the renewal goes as a merge patch with the string spelled out.
  const renewTime = new Date().toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
  const body = { spec: { holderIdentity: name, leaseDurationSeconds: 40, renewTime } };
  const patch = (): Promise<unknown> =>
    coordination.patchNamespacedLease({ name, namespace, body }, setHeaderOptions("Content-Type", PatchStrategy.MergePatch));
  try {
    await patch();
  } catch (error) {
    if (!isNotFound(error)) throw error;
    await createIfAbsent(() => coordination.createNamespacedLease({ namespace, body: { metadata: { name, namespace }, spec: { holderIdentity: name } } }));
    await patch();
  }
}
