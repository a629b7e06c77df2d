// The walk and the content digest both ends of a volume archive share. The exporting agent computes the digest over
// what it packs; the importing agent walks the restored volume again and computes it over what landed on disk. Equal
// digests prove the volume holds exactly what was exported, whatever happened to the bytes in between.
//
// Order: pre-order, each directory's names sorted by their bytes, so that a packer and a verifier walking the same
// tree see the same sequence without holding a list of the volume. The record of an entry is its type, path, mode
// (permission bits), size and content sha256 (files) or target (symlinks): mtimes and owners are left out on purpose,
// since a restore by a non-root agent cannot keep owners and directory mtimes change while a tree is written.
import { createHash } from "node:crypto";
import type { Hash } from "node:crypto";
import type { Dirent, Stats } from "node:fs";
import { lstat, open, opendir, readlink } from "node:fs/promises";
import { TheseusError, throwIfAborted } from "../../common/index.js";

export type TreeEntryType = "dir" | "file" | "symlink" | "special";

export interface TreeEntry {
  /** Relative to the volume root, "/"-separated, never empty (the root itself is not an entry). */
  readonly path: string;
  readonly type: TreeEntryType;
  readonly stats: Stats;
}

const compareBytes = (a: string, b: string): number => Buffer.compare(Buffer.from(a), Buffer.from(b));

/**
 * Walks `root` in the shared order. `skipTop` hides names directly under the root (an agent's own scratch entries).
 * Memory is O(depth x width of the directories on the current path).
 */
export async function* walkTree(root: string, signal?: AbortSignal, skipTop: ReadonlySet<string> = new Set()): AsyncGenerator<TreeEntry> {
  const stack: { dir: string; names: string[]; i: number }[] = [{ dir: "", names: await listNames(root, "", skipTop), i: 0 }];
  let count = 0;
  while (stack.length > 0) {
    const top = stack[stack.length - 1];
    if (top === undefined) break;
    const name = top.names[top.i++];
    if (name === undefined) {
      stack.pop();
      continue;
    }
    if (++count % 512 === 0) throwIfAborted(signal);
    const path = top.dir === "" ? name : `${top.dir}/${name}`;
    const stats = await lstat(`${root}/${path}`).catch((error: unknown) => {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined; // removed by a live app meanwhile
      throw TheseusError.from(error);
    });
    if (stats === undefined) continue;
    const type: TreeEntryType = stats.isDirectory() ? "dir" : stats.isFile() ? "file" : stats.isSymbolicLink() ? "symlink" : "special";
    yield { path, type, stats };
    if (type === "dir") stack.push({ dir: path, names: await listNames(`${root}/${path}`, path, new Set()), i: 0 });
  }
}

async function listNames(dir: string, rel: string, skip: ReadonlySet<string>): Promise<string[]> {
  const names: string[] = [];
  try {
    for await (const entry of await opendir(dir) as AsyncIterable<Dirent>) if (!skip.has(entry.name)) names.push(entry.name);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw new TheseusError(TheseusError.from(error).code, `cannot list ${rel === "" ? "the volume root" : rel}`, { cause: error });
  }
  return names.sort(compareBytes);
}

/** The running content digest: feed it each entry's record in walk order. */
export class TreeDigest {
  readonly #hash: Hash = createHash("sha256");
  entries = 0;
  bytes = 0;

  add(type: "dir" | "file" | "symlink", path: string, mode: number, size: number, content: string): void {
    this.entries++;
    if (type === "file") this.bytes += size;
    // NUL separates the fields: it cannot occur in a path or a link target.
    this.#hash.update(`${type}\0${path}\0${(mode & 0o7777).toString(8)}\0${type === "file" ? size : 0}\0${content}\n`);
  }

  hex(): string {
    return this.#hash.digest("hex");
  }
}

/** The digest of a tree as it is on disk (the importing agent's check). Special files fail it: a restore makes none. */
export async function digestTree(root: string, signal?: AbortSignal, skipTop?: ReadonlySet<string>): Promise<{ digest: string; entries: number; bytes: number }> {
  const digest = new TreeDigest();
  const buffer = Buffer.allocUnsafe(1024 * 1024);
  for await (const entry of walkTree(root, signal, skipTop)) {
    const abs = `${root}/${entry.path}`;
    if (entry.type === "special") throw new TheseusError("data_loss", `the restored volume holds a special file ${entry.path}`);
    if (entry.type === "dir") digest.add("dir", entry.path, entry.stats.mode, 0, "");
    else if (entry.type === "symlink") digest.add("symlink", entry.path, entry.stats.mode, 0, await readlink(abs));
    else {
      const hash = createHash("sha256");
      const handle = await open(abs, "r");
      let size = 0;
      try {
        for (;;) {
          const { bytesRead } = await handle.read(buffer, 0, buffer.length, null);
          if (bytesRead === 0) break;
          hash.update(buffer.subarray(0, bytesRead));
          size += bytesRead;
          throwIfAborted(signal);
        }
      } finally {
        await handle.close();
      }
      digest.add("file", entry.path, entry.stats.mode, size, hash.digest("hex"));
    }
  }
  return { digest: digest.hex(), entries: digest.entries, bytes: digest.bytes };
}
