// Volume-relative paths as the sync protocol carries them: "" is the volume root, components are joined with "/".
// Both sides order entries the same way (a pre-order walk with the names of a directory sorted), so the source's walk
// and the target's index can be merge-joined as two sorted streams without holding either in memory.
import { TheseusError } from "../../common/index.js";

/** Longest path accepted from a peer, in UTF-16 code units (Linux PATH_MAX is 4096 bytes). */
export const MAX_PATH_LENGTH = 4096;
const MAX_NAME_LENGTH = 255;

/**
 * Orders paths as a pre-order walk visits them: component by component, a parent before its children. Comparing the
 * strings with "/" ranked below every other character gives exactly that order ("a/x" < "a b" < "a.txt"), so no
 * splitting is needed on the hot path.
 */
export function comparePaths(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let ca = a.charCodeAt(i);
    let cb = b.charCodeAt(i);
    if (ca === cb) continue;
    if (ca === 47) ca = -1;
    if (cb === 47) cb = -1;
    return ca - cb;
  }
  return a.length - b.length;
}

/** Sorts the names of one directory (no "/" inside) in the order comparePaths implies. */
export function compareNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export function joinPath(parent: string, name: string): string {
  return parent === "" ? name : `${parent}/${name}`;
}

export function parentOf(path: string): string {
  const i = path.lastIndexOf("/");
  return i < 0 ? "" : path.slice(0, i);
}

/** True when `path` is `dir` itself or lies below it. */
export function isWithin(path: string, dir: string): boolean {
  if (dir === "") return true;
  return path === dir || (path.length > dir.length && path.charCodeAt(dir.length) === 47 && path.startsWith(dir));
}

/**
 * Validates a path received from the peer: relative, no empty, "." or ".." components, no NUL, no backslash tricks
 * needed (Linux treats "\" as a normal character), bounded length. Throws a protocol error naming the path otherwise.
 * The root "" is accepted only where the caller allows it.
 */
export function validatePeerPath(path: string, allowRoot = false): string {
  if (path === "") {
    if (allowRoot) return path;
    throw protocolPath(path, "the volume root cannot be the subject of this record");
  }
  if (path.length > MAX_PATH_LENGTH) throw protocolPath(path.slice(0, 80) + "...", "path too long");
  if (path.includes("\0")) throw protocolPath(path, "NUL in path");
  if (path.startsWith("/")) throw protocolPath(path, "absolute path");
  // Component by component without slicing: this runs for every entry of every index and record a peer sends.
  let start = 0;
  for (;;) {
    const found = path.indexOf("/", start);
    const end = found < 0 ? path.length : found;
    const n = end - start;
    const dot = n <= 2 && path.charCodeAt(start) === 46 && (n === 1 || path.charCodeAt(start + 1) === 46);
    if (n === 0 || dot) throw protocolPath(path, `forbidden component "${path.slice(start, end)}"`);
    if (n > MAX_NAME_LENGTH) throw protocolPath(path, "name too long");
    if (found < 0) break;
    start = end + 1;
  }
  return path;
}

function protocolPath(path: string, why: string): TheseusError {
  return new TheseusError("protocol", `the peer sent an invalid path ${JSON.stringify(path)}: ${why}`, {
    hint: "the source agent is broken or hostile; nothing was written outside the volume",
  });
}
