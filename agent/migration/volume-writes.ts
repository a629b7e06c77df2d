// Whether anything wrote to a target volume since its final round: the proof a rollback after the commit point needs.
// A target that failed to become ready may be rolled back to the source only if it took no write (the source lacks
// any write made here, so rolling back would lose it). Every write, rename, chmod or unlink sets the ctime of the entry
// it touches or of its directory, and ctime cannot be set back by a process, so an entry whose ctime is later than
// the end of the final round is a write. The walk stats every entry once and reads no file.
import { lstat, readdir } from "node:fs/promises";
import { join } from "node:path";
import { throwIfAborted } from "../../common/index.js";

export interface VolumeWrite {
  /** Relative to the volume's root; "" is the root itself. */
  readonly path: string;
  readonly atMs: number;
}

/** The first entry (in walk order) changed after `sinceMs`, or undefined when the volume is as the final round left it. */
export async function firstWriteSince(root: string, sinceMs: number, signal?: AbortSignal): Promise<VolumeWrite | undefined> {
  const stack: string[] = [""];
  while (stack.length > 0) {
    throwIfAborted(signal);
    const rel = stack.pop() ?? "";
    const abs = rel === "" ? root : join(root, rel);
    const st = await lstat(abs);
    // A millisecond of slack: ctime has nanoseconds, the round's end was taken in milliseconds after it.
    if (st.ctimeMs > sinceMs + 1) return { path: rel, atMs: Math.round(st.ctimeMs) };
    if (!st.isDirectory()) continue;
    const names = await readdir(abs);
    for (const name of names.sort().reverse()) stack.push(rel === "" ? name : `${rel}/${name}`);
  }
  return undefined;
}
