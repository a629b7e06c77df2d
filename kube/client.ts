// Small helpers around @kubernetes/client-node shared by the control plane bootstrap and the node daemon.
import { ApiException, KubeConfig, Watch } from "@kubernetes/client-node";
import type { Logger } from "../common/index.js";
import { describeError, sleep } from "../common/index.js";

export function loadKubeConfig(path: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(path);
  return kc;
}

export function statusCode(error: unknown): number | undefined {
  if (error instanceof ApiException) return error.code;
  if (typeof error === "object" && error !== null && "code" in error) {
    const code = (error).code;
    return typeof code === "number" ? code : undefined;
  }
  return undefined;
}

export const isNotFound = (error: unknown): boolean => statusCode(error) === 404;
export const isConflict = (error: unknown): boolean => statusCode(error) === 409;

/** Runs `create`, treating "already exists" as success. */
export async function createIfAbsent(create: () => Promise<unknown>): Promise<void> {
  try {
    await create();
  } catch (error) {
    if (!isConflict(error)) throw error;
  }
}

/**
 * Calls `onChange` whenever a watch on `path` reports an event, re-establishing the watch when it ends, until the
 * signal fires. Controllers here are level-based (they re-list and reconcile), so the watch only says "look now".
 */
export async function watchTrigger(
  kc: KubeConfig,
  path: string,
  query: Record<string, string>,
  onChange: () => void,
  signal: AbortSignal,
  logger: Logger,
): Promise<void> {
  const watch = new Watch(kc);
  while (!signal.aborted) {
    let controller: AbortController | undefined;
    const ended = new Promise<void>((resolve) => {
      watch
        .watch(path, { ...query, allowWatchBookmarks: false }, () => onChange(), (err: unknown) => {
          if (err !== null && err !== undefined && !signal.aborted) logger.debug({ path, err: describeError(err) }, "watch ended");
          resolve();
        })
        .then((c) => {
          controller = c;
          if (signal.aborted) c.abort();
        })
        .catch((err: unknown) => {
          logger.debug({ path, err: describeError(err) }, "watch failed");
          resolve();
        });
    });
    const onAbort = (): void => controller?.abort();
    signal.addEventListener("abort", onAbort, { once: true });
    await ended;
    signal.removeEventListener("abort", onAbort);
    onChange();
    await sleep(1000, signal).catch(() => undefined);
  }
}
