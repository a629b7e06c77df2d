// Waiting for the cluster to reach a state (a claim Bound, a CRD Established, pods gone, workloads ready). The probe
// is level-based: it reads the state and says done or what is still pending. Watches on the given paths wake it early;
// a short poll covers watches that drop, so a missed event costs at most one interval.
import type { KubeConfig } from "@kubernetes/client-node";
import { TheseusError, silentLogger, sleep, throwIfAborted } from "../common/index.js";
import type { Logger } from "../common/index.js";
import { watchTrigger } from "./client.js";

export type WaitResult<T> = { readonly done: true; readonly value: T } | { readonly done: false; readonly pending: string };

export interface WaitOptions<T> {
  /** What is awaited, for the timeout message ("claims bound in shop"). */
  readonly what: string;
  readonly probe: () => Promise<WaitResult<T>>;
  readonly timeoutMs: number;
  readonly signal?: AbortSignal | undefined;
  /** Watch these collection paths to wake the probe as soon as something changes. */
  readonly watch?: { readonly kubeConfig: KubeConfig; readonly paths: readonly string[] } | undefined;
  readonly intervalMs?: number;
  readonly logger?: Logger;
}

export async function waitUntil<T>(options: WaitOptions<T>): Promise<T> {
  const deadline = Date.now() + options.timeoutMs;
  // The wait's own signal: its watches and sleeps end with it. The call's abort is forwarded by hand, since
  // AbortSignal.any would leave a listener on the call's signal for every wait.
  const stopWatches = new AbortController();
  const stop = (): void => stopWatches.abort(options.signal?.reason);
  options.signal?.addEventListener("abort", stop, { once: true });
  const signal = stopWatches.signal;
  // A change seen while the probe runs may come after the probe read the state: `changed` makes the loop probe
  // again at once instead of sleeping a whole interval on it.
  let wake: (() => void) | undefined;
  let changed = false;
  const onChange = (): void => {
    changed = true;
    wake?.();
  };
  const watch = options.watch;
  for (const path of watch?.paths ?? []) {
    if (watch !== undefined) void watchTrigger(watch.kubeConfig, path, {}, onChange, signal, options.logger ?? silentLogger());
  }
  try {
    for (;;) {
      throwIfAborted(options.signal);
      changed = false;
      const result = await options.probe();
      if (result.done) return result.value;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new TheseusError("deadline_exceeded", `timed out after ${Math.round(options.timeoutMs / 1000)} s waiting for ${options.what}: ${result.pending}`, {
          hint: "look at the objects' events (kubectl describe), or retry with a longer timeout",
        });
      }
      if (!changed) {
        await new Promise<void>((resolve, reject) => {
          wake = resolve;
          sleep(Math.min(left, options.intervalMs ?? 1000), signal).then(resolve, reject);
        });
      }
      wake = undefined;
    }
  } finally {
    options.signal?.removeEventListener("abort", stop);
    stopWatches.abort();
  }
}
