// The single-writer guard of a data directory: DATA_DIR/.lock, created with O_EXCL and holding the owner's pid and host.
// A lock left by a process that died (kill -9, a node lost) would block the volume forever, so a lock whose pid no longer
// lives on this host is taken over. Two servers on one host therefore never write the same volume at once.
//
// Limits, on purpose: liveness can only be checked on the same host. A lock written on another host (a volume moved
// from another cluster, a pod rescheduled) is treated as stale, because there the single writer is already guaranteed by
// whoever moved the volume (the migration's quiesce, Kubernetes' RWO attach). And taking over a stale lock is
// unlink-then-create, which two starters racing on the same stale lock could both win; a dead owner plus two new
// starters in the same millisecond is outside what this demo guards against.
import { hostname } from "node:os";
import { join, resolve } from "node:path";
import { open, readFile, stat, unlink } from "node:fs/promises";
import { TheseusError, systemErrorCode } from "../../common/index.js";

export const LOCK_FILE = ".lock";

interface LockContent {
  readonly pid: number;
  readonly host: string;
  readonly startedAt: string;
}

export interface DataDirLock {
  readonly path: string;
  /** Whether a stale lock (dead owner) was taken over, and whose it was. */
  readonly tookOver: LockContent | undefined;
  release(): Promise<void>;
}

// Locks held by this process: a second server in the same process (tests, the in-process demo) shares our pid, which
// the liveness check below would take for a previous life of this container.
const heldHere = new Set<string>();

export async function acquireDataDirLock(dataDir: string): Promise<DataDirLock> {
  const path = join(resolve(dataDir), LOCK_FILE);
  if (heldHere.has(path)) {
    throw new TheseusError("failed_precondition", `data directory ${dataDir} is in use by process ${process.pid} (this process)`, {
      hint: "close the other server on this directory first; two writers on one volume would corrupt it",
    });
  }
  const mine: LockContent = { pid: process.pid, host: hostname(), startedAt: new Date().toISOString() };
  let tookOver: LockContent | undefined;
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const file = await open(path, "wx", 0o644);
      try {
        await file.writeFile(`${JSON.stringify(mine)}\n`);
        await file.sync();
      } finally {
        await file.close();
      }
      heldHere.add(path);
      let released = false;
      return {
        path,
        tookOver,
        release: async () => {
          if (released) return;
          released = true;
          heldHere.delete(path);
          // Only remove the lock if it is still ours (an operator may have removed it by hand and another taken it).
          const now = await readLock(path);
          if (now !== undefined && now.pid === mine.pid && now.host === mine.host && now.startedAt === mine.startedAt) {
            await unlink(path).catch(() => undefined);
          }
        },
      };
    } catch (error) {
      if (systemErrorCode(error) !== "EEXIST") throw TheseusError.from(error);
    }
    const holder = await readLock(path);
    if (holder === undefined && (await ageMs(path)) < UNREADABLE_LOCK_GRACE_MS) {
      // Probably a server that created the lock a moment ago and has not written its pid yet.
      throw new TheseusError("failed_precondition", `data directory ${dataDir} is being locked by another server that is starting`, {
        hint: `start one server per data directory; if none runs, remove ${path}`,
      });
    }
    if (holder !== undefined && isAlive(holder)) {
      throw new TheseusError("failed_precondition", `data directory ${dataDir} is in use by process ${holder.pid} (since ${holder.startedAt})`, {
        hint: `stop that server first; two writers on one volume would corrupt it. If no such process runs, remove ${path}`,
      });
    }
    tookOver = holder;
    await unlink(path).catch((error: unknown) => {
      if (systemErrorCode(error) !== "ENOENT") throw TheseusError.from(error);
    });
  }
  throw new TheseusError("failed_precondition", `could not take the lock ${path}: another server is starting on the same directory`, {
    hint: "start one server per data directory",
  });
}

const UNREADABLE_LOCK_GRACE_MS = 5000;

async function ageMs(path: string): Promise<number> {
  try {
    return Date.now() - (await stat(path)).mtimeMs;
  } catch {
    return Number.POSITIVE_INFINITY;
  }
}

// An unreadable or half-written lock (its writer died between create and write, or is writing now): undefined.
async function readLock(path: string): Promise<LockContent | undefined> {
  try {
    const parsed: unknown = JSON.parse(await readFile(path, "utf8"));
    if (typeof parsed !== "object" || parsed === null) return undefined;
    const { pid, host, startedAt } = parsed as Record<string, unknown>;
    if (typeof pid !== "number" || typeof host !== "string") return undefined;
    return { pid, host, startedAt: typeof startedAt === "string" ? startedAt : "?" };
  } catch {
    return undefined;
  }
}

function isAlive(holder: LockContent): boolean {
  if (holder.host !== hostname()) return false;
  // Our own pid in someone else's lock means a previous life of this container (pid 1 again): stale.
  if (holder.pid === process.pid) return false;
  try {
    process.kill(holder.pid, 0);
    return true;
  } catch (error) {
    // EPERM: the process exists but belongs to another user; it is alive.
    return systemErrorCode(error) === "EPERM";
  }
}
