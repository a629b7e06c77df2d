// Idle bounds of a round (issue 13, "also found"): a peer that says nothing must not hold a call, a volume or a
// round for ever. Three numbers, all from the environment so that tests can make them small:
// - firstMessageMs (THESEUS_SYNC_FIRST_MESSAGE_MS, 10 s): a Sync call must send its first message within it, or it is
//   ended before anything is looked up (any agent certificate may open calls; 2000 silent ones cost 23 MiB each hour);
// - idleMs (THESEUS_SYNC_IDLE_MS, 5 min): waiting this long for the peer's next frame mid-round ends the round and
//   releases the volume, on either side;
// - keepaliveMs (THESEUS_SYNC_KEEPALIVE_MS, 15 s): each side sends an empty frame when it has sent nothing for this
//   long (walking unchanged files, waiting for the peer's index, throttled), so a slow-but-alive round is never cut.
// Only time spent *waiting* for the peer counts: a frame the peer sent while we were busy is already there.
import { TheseusError } from "../../common/index.js";

export interface SyncTimeouts {
  readonly firstMessageMs: number;
  readonly idleMs: number;
  readonly keepaliveMs: number;
}

const DEFAULTS: SyncTimeouts = { firstMessageMs: 10_000, idleMs: 5 * 60_000, keepaliveMs: 15_000 };

/** The timeouts from THESEUS_SYNC_* (validated once), defaults for what is unset. */
export function syncTimeouts(env: NodeJS.ProcessEnv = process.env): SyncTimeouts {
  const read = (name: string, fallback: number): number => {
    const raw = env[name];
    if (raw === undefined || raw === "") return fallback;
    const v = Number(raw);
    if (!Number.isSafeInteger(v) || v <= 0) {
      throw new TheseusError("invalid_argument", `${name}=${raw} is not a positive number of milliseconds`, { hint: `unset ${name} for the default (${fallback})` });
    }
    return v;
  };
  const t = {
    firstMessageMs: read("THESEUS_SYNC_FIRST_MESSAGE_MS", DEFAULTS.firstMessageMs),
    idleMs: read("THESEUS_SYNC_IDLE_MS", DEFAULTS.idleMs),
    keepaliveMs: read("THESEUS_SYNC_KEEPALIVE_MS", DEFAULTS.keepaliveMs),
  };
  if (t.keepaliveMs * 2 > t.idleMs) {
    throw new TheseusError("invalid_argument", `the sync keepalive (${t.keepaliveMs} ms) must be at most half the idle timeout (${t.idleMs} ms)`, {
      hint: "set THESEUS_SYNC_KEEPALIVE_MS well below THESEUS_SYNC_IDLE_MS",
    });
  }
  return t;
}

/** A frame without records: what a side sends to show it is alive (every decoder accepts it). */
export const KEEPALIVE_FRAME: Uint8Array = new Uint8Array([0, 0, 0, 0, 0]);

/**
 * The iterator's next item, or `timeout()` thrown after `ms` of waiting. When the timer fires, the event loop gets two
 * more turns first: a process that was busy (hashing a file) for longer than `ms` must read what arrived meanwhile
 * before it blames the peer.
 */
export async function nextWithin<T>(it: AsyncIterator<T>, ms: number, timeout: () => TheseusError, signal?: AbortSignal): Promise<IteratorResult<T>> {
  if (signal?.aborted === true) throw signal.reason;
  const pending = it.next();
  let settled = false;
  pending.then(
    () => (settled = true),
    () => (settled = true),
  );
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  const expired = new Promise<"expired">((resolve, reject) => {
    timer = setTimeout(() => resolve("expired"), ms);
    onAbort = () => reject(signal?.reason as Error);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
  try {
    const r = await Promise.race([pending, expired]);
    if (r !== "expired") return r;
    for (let i = 0; i < 2 && !settled; i++) await new Promise<void>((resolve) => setImmediate(resolve));
    if (settled) return await pending;
    throw timeout();
  } finally {
    clearTimeout(timer);
    if (onAbort !== undefined) signal?.removeEventListener("abort", onAbort);
  }
}

/** `frames`, and KEEPALIVE_FRAME whenever it has produced nothing for `ms`. */
export async function* withKeepalive(frames: AsyncIterable<Uint8Array>, ms: number): AsyncGenerator<Uint8Array> {
  const it = frames[Symbol.asyncIterator]();
  let finished = false;
  let pending: Promise<IteratorResult<Uint8Array>> | undefined;
  try {
    pending = it.next();
    for (;;) {
      let timer: NodeJS.Timeout | undefined;
      const tick = new Promise<"tick">((resolve) => (timer = setTimeout(() => resolve("tick"), ms)));
      let r: IteratorResult<Uint8Array> | "tick";
      try {
        r = await Promise.race([pending, tick]);
      } finally {
        clearTimeout(timer);
      }
      if (r === "tick") {
        yield KEEPALIVE_FRAME;
        continue;
      }
      if (r.done === true) {
        finished = true;
        return;
      }
      pending = undefined;
      yield r.value;
      pending = it.next();
    }
  } finally {
    // Stopped early (the round failed or was cancelled): end the producer too. Between two frames, wait for it (its
    // cleanup, such as a round's state commit, must be over before the next round starts); while one of its steps is
    // still pending, return() would wait for that step, so do not wait then.
    if (!finished) {
      if (pending === undefined) await it.return?.(undefined);
      else {
        pending.catch(() => undefined);
        void it.return?.(undefined)?.catch(() => undefined);
      }
    }
  }
}

/** `frames`, failing with `timeout()` when waiting `ms` for the next one. */
export async function* idleLimited<T>(frames: AsyncIterable<T>, ms: number, timeout: () => TheseusError): AsyncGenerator<T> {
  const it = frames[Symbol.asyncIterator]();
  let waiting = false;
  let done = false;
  try {
    for (;;) {
      waiting = true;
      const r = await nextWithin(it, ms, timeout);
      waiting = false;
      if (r.done === true) {
        done = true;
        return;
      }
      yield r.value;
    }
  } finally {
    // The consumer stopped (it had what it needed, or failed): end the producer as a for-await would. After a timeout
    // its next() is still pending, and return() would wait for it: do not wait then.
    if (!done) {
      const closing = it.return?.(undefined);
      if (waiting) void closing?.catch(() => undefined);
      else await closing;
    }
  }
}

/**
 * Lets the event loop run during a long synchronous stretch (a walk, a large file's read and hash), at most every
 * `everyMs`. Frames handed to gRPC are written, and the peer's are read, only when the loop turns: a target walking its
 * index without turns starved its own TLS handshake to the source (the source heard of the round ~150 ms late in a
 * final round of ~1 s), and a source hashing a large file held back every frame it had already made.
 */
export class LoopTurns {
  private last = performance.now();
  constructor(private readonly everyMs = 4) {}
  /** Whether a turn is due (cheap: call it per entry or per block run). */
  due(): boolean {
    return performance.now() - this.last >= this.everyMs;
  }
  async turn(): Promise<void> {
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.last = performance.now();
  }
}
