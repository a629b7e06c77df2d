// One writer per target volume, across processes and agents: a `.theseus-lock` file at the volume root, created with
// O_EXCL, naming its holder. The in-process guard in target.ts cannot see two agents (two `sync-dirs` runs, or two
// clusters' agents mounting one network volume); without this, two rounds into one volume fought over the staging
// directory (ENOENT, EEXIST) or, from two sources, left a mix of both.
//
// Stale locks: a holder that died (kill -9, a node lost) never removes its file. On the holder's own host a dead pid
// is certain; elsewhere the holder refreshes the file's mtime every HEARTBEAT_MS, and a lock not refreshed for
// STALE_MS is taken over. A taken-over lock only ever belonged to a dead round, whose leftovers the next round repairs.
//
// The file lives in the volume because that is the one thing every writer shares; the walk hides it on both sides, and
// creating or removing it restores the root's mtime, so that the app's view of the root is not changed by a round.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { TheseusError } from "../../common/index.js";
import { utimeArg } from "./state.js";

export const LOCK_NAME = ".theseus-lock";
const HEARTBEAT_MS = 20_000;
const STALE_MS = 120_000;

export interface LockHolder {
  readonly pid: number;
  readonly host: string;
  /** Who holds it, for people: "agent us-2 (round from eu-1)". */
  readonly what: string;
  readonly sinceMs: number;
}

export interface VolumeLock {
  release(): void;
}

export function describeHolder(h: LockHolder): string {
  return `${h.what}, pid ${h.pid} on ${h.host}, since ${new Date(h.sinceMs).toISOString()}`;
}

/** Takes the volume's lock or throws failed_precondition naming the holder. `what` describes this writer. */
export function acquireVolumeLock(root: string, what: string): VolumeLock {
  const file = path.join(root, LOCK_NAME);
  const me: LockHolder = { pid: process.pid, host: os.hostname(), what, sinceMs: Date.now() };
  for (let attempt = 0; ; attempt++) {
    let fd: number;
    try {
      fd = keepingRootTimes(root, () => fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST" || attempt > 0) {
        if ((e as NodeJS.ErrnoException).code === "EEXIST") throw refusal(root, readHolder(file));
        throw TheseusError.from(e);
      }
      const holder = readHolder(file);
      if (holder !== undefined && !isStale(file, holder)) throw refusal(root, holder);
      // Dead holder (or a lock torn before its holder was written): remove it and try once more. Two takers racing
      // here both unlink, and O_EXCL lets only one of them create the new lock.
      keepingRootTimes(root, () => fs.rmSync(file, { force: true }));
      continue;
    }
    try {
      fs.writeSync(fd, JSON.stringify(me));
    } finally {
      fs.closeSync(fd);
    }
    const heartbeat = setInterval(() => {
      try {
        const now = new Date();
        fs.utimesSync(file, now, now);
      } catch {
        // Gone or unwritable: the round finds out on its own.
      }
    }, HEARTBEAT_MS);
    heartbeat.unref();
    let released = false;
    return {
      release() {
        if (released) return;
        released = true;
        clearInterval(heartbeat);
        // Only our own lock: a holder that took over a lock it judged stale must keep it.
        const holder = readHolder(file);
        if (holder?.pid === me.pid && holder.host === me.host && holder.sinceMs === me.sinceMs) keepingRootTimes(root, () => fs.rmSync(file, { force: true }));
      },
    };
  }
}

function refusal(root: string, holder: LockHolder | undefined): TheseusError {
  return new TheseusError("failed_precondition", `the target volume ${root} is being written by ${holder === undefined ? "another round" : describeHolder(holder)}`, {
    hint: `one writer per volume: wait for that round to end or cancel it; if its process is gone for good, remove ${path.join(root, LOCK_NAME)}`,
  });
}

function readHolder(file: string): LockHolder | undefined {
  try {
    const h = JSON.parse(fs.readFileSync(file, "utf8")) as Partial<LockHolder>;
    if (typeof h.pid !== "number" || typeof h.host !== "string" || typeof h.what !== "string" || typeof h.sinceMs !== "number") return undefined;
    return { pid: h.pid, host: h.host, what: h.what, sinceMs: h.sinceMs };
  } catch {
    return undefined;
  }
}

function isStale(file: string, holder: LockHolder): boolean {
  if (holder.host === os.hostname()) {
    // Our own pid: a previous life of this process (a container restarts as pid 1); the in-process guard covers us.
    if (holder.pid === process.pid) return true;
    try {
      process.kill(holder.pid, 0);
      return false;
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === "ESRCH";
    }
  }
  try {
    return Date.now() - fs.statSync(file).mtimeMs > STALE_MS;
  } catch {
    return true;
  }
}

/** Runs `fn` (which adds or removes a name at the root) and puts the root's times back as they were. */
function keepingRootTimes<T>(root: string, fn: () => T): T {
  const st = fs.statSync(root, { bigint: true });
  const result = fn();
  try {
    // Whole microseconds, exactly, pre-1970 included (see utimeArg).
    const us = (ns: bigint): string => utimeArg(Number(ns / 1000n));
    fs.utimesSync(root, us(st.atimeNs), us(st.mtimeNs));
  } catch {
    // Not ours to change (read-only root, other owner): the round reports the root's metadata as it finds it.
  }
  return result;
}
