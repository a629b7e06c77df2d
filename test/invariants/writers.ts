// Invariant 1 (single writer), from the API servers' own streams: a watch on the demo app's pods in every namespace of
// each cluster, recording every interval in which a pod of the app was running there. Watches, not sampling: a poll
// every second could miss a pod that ran for half a second in both clusters, a watch sees each transition.
//
// A pod counts as running from the first event that shows a container running (phase Running) until the first event
// that shows it gone (DELETED, a terminal phase, or no container running). Times are when this process received the
// events; both clusters' watches are read by the same clock, and the cutover's causal chain between the source's last
// pod ending and the target's first pod starting (quiesce wait, final round, two commits, a controller, a scheduler,
// the kubelet) is far longer than a watch's delivery delay, so an overlap here is an overlap there.
import { Watch } from "@kubernetes/client-node";
import { sleep } from "../../common/index.js";
import { loadKubeConfig } from "../../kube/index.js";

export interface WriterInterval {
  readonly cluster: string;
  readonly namespace: string;
  readonly pod: string;
  readonly uid: string;
  readonly fromMs: number;
  /** Undefined while it runs. */
  toMs: number | undefined;
}

export interface WriterWatch {
  /** Every interval seen so far (closed or open), in the order they began. */
  intervals(): readonly WriterInterval[];
  /** Resolves once both watches have delivered their initial state. */
  readonly ready: Promise<void>;
  /** Called on every change of an interval (opened or closed). */
  onChange(listener: (interval: WriterInterval) => void): () => void;
  /** Whether any pod of the namespace in the cluster runs now, as far as the watch has seen. */
  running(cluster: string, namespace: string): boolean;
  stop(): void;
}

interface PodEvent {
  readonly metadata?: { readonly name?: string; readonly namespace?: string; readonly uid?: string; readonly resourceVersion?: string };
  readonly status?: { readonly phase?: string; readonly containerStatuses?: readonly { readonly state?: { readonly running?: unknown } }[] };
}

export const APP_SELECTOR = "app.kubernetes.io/name=ledger";

/** Starts a watch on the app's pods in each cluster (name → kubeconfig path). */
export function watchWriters(clusters: readonly { readonly name: string; readonly kubeconfigPath: string }[]): WriterWatch {
  const all: WriterInterval[] = [];
  const open = new Map<string, WriterInterval>();
  const listeners = new Set<(interval: WriterInterval) => void>();
  const stopping = new AbortController();
  const emit = (i: WriterInterval): void => {
    for (const l of listeners) l(i);
  };

  const observe = (cluster: string, type: string, pod: PodEvent): void => {
    const uid = pod.metadata?.uid ?? "";
    const key = `${cluster}/${uid}`;
    const phase = pod.status?.phase ?? "";
    const containerRunning = (pod.status?.containerStatuses ?? []).some((c) => c.state?.running !== undefined);
    const runs = type !== "DELETED" && phase === "Running" && containerRunning;
    const now = Date.now();
    const current = open.get(key);
    if (runs && current === undefined) {
      const interval: WriterInterval = { cluster, namespace: pod.metadata?.namespace ?? "", pod: pod.metadata?.name ?? "", uid, fromMs: now, toMs: undefined };
      open.set(key, interval);
      all.push(interval);
      emit(interval);
    } else if (!runs && current !== undefined) {
      current.toMs = now;
      open.delete(key);
      emit(current);
    }
  };

  const follow = async (cluster: string, kubeconfigPath: string, initial: () => void): Promise<void> => {
    const kc = loadKubeConfig(kubeconfigPath);
    const watch = new Watch(kc);
    let resourceVersion: string | undefined;
    let first = true;
    while (!stopping.signal.aborted) {
      await new Promise<void>((resolve) => {
        // Without a resourceVersion the API server sends the current state as ADDED events first ("get state and
        // start at most recent"); with the last one seen it resumes exactly after it, so a reconnect loses nothing.
        const query: Record<string, string | boolean> = { labelSelector: APP_SELECTOR, allowWatchBookmarks: true };
        if (resourceVersion !== undefined) query["resourceVersion"] = resourceVersion;
        let controller: AbortController | undefined;
        const onStop = (): void => controller?.abort();
        stopping.signal.addEventListener("abort", onStop, { once: true });
        const done = (): void => {
          stopping.signal.removeEventListener("abort", onStop);
          resolve();
        };
        watch
          .watch(
            "/api/v1/pods",
            query,
            (type: string, object: PodEvent) => {
              if (object.metadata?.resourceVersion !== undefined) resourceVersion = object.metadata.resourceVersion;
              if (type === "BOOKMARK") return;
              if (type === "ERROR") {
                // 410 Gone: the version is too old; start again from the current state (and its ADDED events).
                resourceVersion = undefined;
                return;
              }
              observe(cluster, type, object);
            },
            () => done(),
          )
          .then((c) => {
            controller = c;
            if (stopping.signal.aborted) c.abort();
            if (first) {
              first = false;
              // The initial ADDED events arrive right after the response starts; give them a moment.
              setTimeout(initial, 500);
            }
          })
          .catch(() => done());
      });
      if (!stopping.signal.aborted) await sleep(200).catch(() => undefined);
    }
  };

  const ready = Promise.all(clusters.map((c) => new Promise<void>((resolve) => void follow(c.name, c.kubeconfigPath, resolve)))).then(() => undefined);

  return {
    intervals: () => all,
    ready,
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    running(cluster, namespace) {
      return [...open.values()].some((i) => i.cluster === cluster && i.namespace === namespace);
    },
    stop() {
      stopping.abort();
    },
  };
}

export interface Overlap {
  readonly a: WriterInterval;
  readonly b: WriterInterval;
  readonly overlapMs: number;
}

/** Pairs of intervals in different clusters that overlap in time (an open interval runs until `nowMs`). */
export function overlaps(intervals: readonly WriterInterval[], nowMs: number): Overlap[] {
  const found: Overlap[] = [];
  for (let i = 0; i < intervals.length; i++) {
    for (let j = i + 1; j < intervals.length; j++) {
      const a = intervals[i];
      const b = intervals[j];
      if (a === undefined || b === undefined || a.cluster === b.cluster) continue;
      const from = Math.max(a.fromMs, b.fromMs);
      const to = Math.min(a.toMs ?? nowMs, b.toMs ?? nowMs);
      if (to > from) found.push({ a, b, overlapMs: to - from });
    }
  }
  return found;
}
