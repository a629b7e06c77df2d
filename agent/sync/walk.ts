// The deterministic walk both sides share: pre-order, the names of each directory sorted, symlinks never followed.
// Memory is O(depth x width of the directories on the current path): no list of the whole volume is ever built.
// Synchronous syscalls on purpose: lstat through libuv's thread pool costs ~10x more per file than a direct call, and
// callers yield to the event loop between batches. Entries are stat'ed by the native addon, LSTAT_BATCH at a time
// relative to their directory (walk.c): fs.lstatSync resolved each whole path again and built a Stats object with
// four Dates per file.
import fs from "node:fs";
import crypto from "node:crypto";
import os from "node:os";
import { systemErrorCode, TheseusError } from "../../common/index.js";
import type { EntryType, IndexEntry } from "./codec.js";
import { nativeAddon } from "./native.js";
import { compareNames, joinPath } from "./paths.js";
import { toMtimeUs } from "./state.js";

/** What the walk and its callers use of an entry's lstat (an fs.Stats is one too). */
export interface WalkStat {
  mode: number;
  uid: number;
  gid: number;
  size: number;
  ino: number;
  dev: number;
  nlink: number;
  blocks: number;
  mtimeMs: number;
  ctimeMs: number;
}

export interface WalkEntry {
  path: string;
  type: EntryType | "special";
  st: WalkStat;
}

/** Entries stat'ed per native call; a directory's frame holds their stats until the walk passes them. */
const LSTAT_BATCH = 256;
const LSTAT_FIELDS = 13;

interface Frame {
  dir: string;
  abs: string;
  names: string[];
  i: number;
  /** Stats of names[statFrom, statFrom + statCount), LSTAT_FIELDS each (walk.c); statCount -1: stat each by path. */
  stats: Float64Array;
  statFrom: number;
  statCount: number;
}

/** Walks `root` (which must be a real directory). `skipRootNames` hides names at the top level (the staging dir). */
export function* walk(root: string, skipRootNames: ReadonlySet<string> = new Set()): Generator<WalkEntry> {
  const rootSt = lstatOrThrow(root, "");
  if (!rootSt.isDirectory()) {
    throw new TheseusError("invalid_argument", `the volume root ${root} is not a directory`);
  }
  yield { path: "", type: "dir", st: rootSt };
  // One stats buffer per depth, reused by the frames at that depth in turn.
  const buffers: Float64Array[] = [];
  const frame = (dir: string, abs: string, names: string[]): Frame => {
    const stats = (buffers[stack.length] ??= new Float64Array(LSTAT_BATCH * LSTAT_FIELDS));
    return { dir, abs, names, i: 0, stats, statFrom: 0, statCount: 0 };
  };
  const stack: Frame[] = [];
  stack.push(frame("", root, listDir(root, "", skipRootNames, false) ?? []));
  while (stack.length > 0) {
    const top = stack[stack.length - 1] as Frame;
    if (top.i >= top.names.length) {
      stack.pop();
      continue;
    }
    const k = top.i++;
    const name = top.names[k] as string;
    const rel = joinPath(top.dir, name);
    const abs = `${top.abs}/${name}`;
    const st = statOf(top, k, abs, rel);
    if (st === undefined) continue; // vanished between readdir and lstat: the live app deleted it
    const type = typeOf(st.mode);
    yield { path: rel, type, st };
    if (type === "dir") {
      // Listed only when the consumer asks for the next entry: by then the directory may have been deleted or
      // replaced (by the live app on a source, by the round itself on a target), which is not an error.
      const names = listDir(abs, rel, undefined, true);
      if (names !== undefined) stack.push(frame(rel, abs, names));
    }
  }
}

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;

function typeOf(mode: number): WalkEntry["type"] {
  const t = mode & S_IFMT;
  return t === S_IFDIR ? "dir" : t === S_IFREG ? "file" : t === S_IFLNK ? "symlink" : "special";
}

/** names[k]'s lstat, from the frame's batch (filled on demand); undefined when it has vanished. */
function statOf(f: Frame, k: number, abs: string, rel: string): WalkStat | undefined {
  if (f.statCount >= 0 && k >= f.statFrom + f.statCount) {
    const count = Math.min(LSTAT_BATCH, f.names.length - k);
    const n = nativeAddon.lstatAt(f.abs, f.names, k, count, f.stats);
    // The directory could not be opened (gone, replaced, or refused): each entry by its path, for fs's own errors.
    if (n < 0) f.statCount = -1;
    else {
      f.statFrom = k;
      f.statCount = n;
    }
  }
  if (f.statCount >= 0) {
    const s = f.stats;
    const o = (k - f.statFrom) * LSTAT_FIELDS;
    const errno = s[o] as number;
    if (errno === 0) {
      return {
        mode: s[o + 1] as number,
        uid: s[o + 2] as number,
        gid: s[o + 3] as number,
        size: s[o + 4] as number,
        ino: s[o + 5] as number,
        dev: s[o + 6] as number,
        nlink: s[o + 7] as number,
        blocks: s[o + 8] as number,
        // As Node computes Stats' mtimeMs and ctimeMs, to the bit: the hash caches compare them exactly.
        mtimeMs: (s[o + 9] as number) * 1000 + (s[o + 10] as number) / 1e6,
        ctimeMs: (s[o + 11] as number) * 1000 + (s[o + 12] as number) / 1e6,
      };
    }
    if (errno === ENOENT) return undefined;
  }
  // Errors other than a vanished entry are rare: fs.lstatSync gives them as Node does (or succeeds, on a retry).
  try {
    return fs.lstatSync(abs);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw walkError(e, rel);
  }
}
const ENOENT = os.constants.errno.ENOENT;

function listDir(abs: string, rel: string, skip: ReadonlySet<string> | undefined, mayVanish: boolean): string[] | undefined {
  let names: string[];
  try {
    names = fs.readdirSync(abs);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (mayVanish && (code === "ENOENT" || code === "ENOTDIR")) return undefined;
    throw walkError(e, rel);
  }
  // Node decodes names as UTF-8 and replaces invalid bytes with U+FFFD; such a name could not be recreated
  // faithfully. But U+FFFD is also a valid character of a valid name: only the raw bytes tell the two apart.
  if (names.some((n) => n.includes("\uFFFD"))) checkUtf8Names(abs, rel);
  if (skip !== undefined && skip.size > 0) names = names.filter((n) => !skip.has(n));
  return names.sort(compareNames);
}

function checkUtf8Names(abs: string, rel: string): void {
  let raw: Buffer[];
  try {
    raw = fs.readdirSync(abs, { encoding: "buffer" });
  } catch (e) {
    throw walkError(e, rel);
  }
  for (const b of raw) {
    if (Buffer.from(b.toString("utf8"), "utf8").equals(b)) continue;
    const shown = [...b].map((c) => (c >= 0x20 && c < 0x7f && c !== 0x5c ? String.fromCharCode(c) : `\\x${c.toString(16).padStart(2, "0")}`)).join("");
    const where = rel === "" ? shown : `${rel}/${shown}`;
    throw new TheseusError("invalid_argument", `the file name ${where} is not valid UTF-8 (bytes shown as \\xNN)`, {
      hint: `Theseus never skips a file silently: rename it to a UTF-8 name (e.g. convmv -f latin1 -t utf8, or mv with the name from ls -b), then run the round again`,
    });
  }
}

function lstatOrThrow(abs: string, rel: string): fs.Stats {
  try {
    return fs.lstatSync(abs);
  } catch (e) {
    throw walkError(e, rel);
  }
}

/**
 * A file of the volume that cannot be read, as the user can act on it: the volume's content is the input, so a file
 * the agent may not read or a path longer than the system allows is bad input (exit 2), not an agent refusing us
 * (permission_denied, exit 3) or an internal error; and the message names the path, shortened, never 16 KB of it.
 */
export function walkError(e: unknown, rel: string): TheseusError {
  const err = TheseusError.from(e);
  const what = rel === "" ? "the volume root" : shortPath(rel);
  const sys = systemErrorCode(e);
  if (sys === "ENAMETOOLONG") {
    return new TheseusError("invalid_argument", `cannot read ${what}: its path (${Buffer.byteLength(rel)} bytes below the volume root) is longer than the system allows`, {
      cause: e,
      hint: "Theseus never skips a file silently: shorten the path (rename or move a directory on it), then run the round again",
    });
  }
  if (sys === "EACCES" || sys === "EPERM") {
    return new TheseusError("invalid_argument", `cannot read ${what}: permission denied`, {
      cause: e,
      hint: "Theseus never skips a file silently: make it readable by the agent's user (chmod, chown), or run the agent as a user that may read it",
    });
  }
  // Node's message repeats the absolute path: drop it, the relative one is named already.
  const message = err.message.replace(/, \w+ '[^']*'$/, "");
  return new TheseusError(err.code, `cannot read ${what}: ${message}`, { cause: e, hint: err.hint });
}

/** A path short enough for one line of an error: its first and last 100 characters. */
export function shortPath(p: string): string {
  return p.length <= 240 ? p : `${p.slice(0, 100)}...(${p.length - 200} characters)...${p.slice(-100)}`;
}

/** Metadata as the protocol carries it. */
export function metaOf(st: WalkStat, type: EntryType): IndexEntry["meta"] {
  return {
    mode: type === "symlink" ? 0 : st.mode & 0o7777,
    uid: st.uid,
    gid: st.gid,
    mtimeUs: toMtimeUs(st.mtimeMs),
  };
}

// ---------------------------------------------------------------------------------------------------------------------
// The volume digest: sha256 over the sorted records of (path, type, mode, uid, gid, size, mtime, content hash, link
// target). Both sides feed it the same entries in the same order, so equal digests mean equal volumes.

export class VolumeDigest {
  private readonly h = crypto.createHash("sha256");
  // Records are batched and hashed 64 KiB at a time: one native call per entry would cost more than the hashing.
  private readonly buf = Buffer.allocUnsafe(80 * 1024);
  private pos = 0;
  constructor(private readonly withOwners: boolean) {}

  add(e: IndexEntry): void {
    if (this.pos > 64 * 1024 - 3 * 4096 - 128) this.flush();
    const b = this.buf;
    let p = this.pos;
    p += b.write(e.path, p, "utf8");
    b[p] = 0;
    b[p + 1] = e.type === "dir" ? 1 : e.type === "file" ? 2 : 3;
    b.writeUInt32LE(e.meta.mode, p + 2);
    b.writeUInt32LE(this.withOwners ? e.meta.uid : 0, p + 6);
    b.writeUInt32LE(this.withOwners ? e.meta.gid : 0, p + 10);
    b.writeDoubleLE(e.type === "file" ? e.size : 0, p + 14);
    b.writeDoubleLE(e.type === "symlink" ? 0 : e.meta.mtimeUs, p + 22);
    b[p + 30] = e.hash.length;
    p += 31;
    b.set(e.hash, p);
    p += e.hash.length;
    p += b.write(e.linkTarget, p, "utf8");
    b[p++] = 0;
    this.pos = p;
  }
  private flush(): void {
    this.h.update(this.buf.subarray(0, this.pos));
    this.pos = 0;
  }
  digest(): Buffer {
    this.flush();
    return this.h.digest();
  }
}
