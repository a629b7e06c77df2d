// Helpers for AbortSignal, which every long operation takes (STYLE.md habit 3).
import { TheseusError } from "./errors.js";

/** Throws a TheseusError("cancelled") carrying the signal's reason, if the signal has fired. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted === true) throw abortReason(signal);
}

export function abortReason(signal: AbortSignal): TheseusError {
  const reason: unknown = signal.reason;
  if (reason instanceof TheseusError) return reason;
  if (reason instanceof Error && reason.name === "TimeoutError") return TheseusError.from(reason);
  return new TheseusError("cancelled", "the operation was cancelled", { cause: reason });
}

/** A signal that fires when any of the given signals fires (undefined entries are ignored). */
export function anySignal(...signals: ReadonlyArray<AbortSignal | undefined>): AbortSignal {
  const present = signals.filter((s): s is AbortSignal => s !== undefined);
  return AbortSignal.any(present);
}

/** Resolves after `ms`, or rejects as soon as the signal fires. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted === true) {
      reject(abortReason(signal));
      return;
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(abortReason(signal as AbortSignal));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
