// Makes a reproducible directory tree with the things a copy must keep (text and binary files, modes, nested and empty
// directories, symlinks, a hard link) and compares two trees byte for byte with their metadata.
import { createHash } from "node:crypto";
import { link, lstat, mkdir, readFile, readdir, readlink, symlink, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";

export interface GeneratedTree {
  readonly files: number;
  readonly bytes: number;
}

/** A small deterministic PRNG (xorshift32), so that the same seed always yields the same tree. */
function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 0x1_0000_0000;
  };
}

export async function generateTree(root: string, options: { seed?: number; totalBytes?: number } = {}): Promise<GeneratedTree> {
  const random = prng(options.seed ?? 42);
  const target = options.totalBytes ?? 8 * 1024 * 1024;
  let bytes = 0;
  let files = 0;
  const words = ["theseus", "ship", "plank", "volume", "cluster", "agent", "round", "delta", "commit", "abort"];
  await mkdir(join(root, "empty", "nested-empty"), { recursive: true });
  for (let d = 0; bytes < target; d++) {
    const dir = join(root, `dir-${d % 7}`, `sub-${d % 3}`);
    await mkdir(dir, { recursive: true });
    const binary = random() < 0.3;
    const size = Math.floor(random() * (binary ? 512 * 1024 : 16 * 1024)) + 1;
    let content: Buffer;
    if (binary) {
      content = Buffer.alloc(size);
      for (let i = 0; i < size; i++) content[i] = Math.floor(random() * 256);
    } else {
      const parts: string[] = [];
      let length = 0;
      while (length < size) {
        const word = words[Math.floor(random() * words.length)] ?? "x";
        parts.push(word);
        length += word.length + 1;
      }
      content = Buffer.from(parts.join(" ").slice(0, size));
    }
    const file = join(dir, `file-${d}.${binary ? "bin" : "txt"}`);
    await writeFile(file, content, { mode: random() < 0.2 ? 0o600 : 0o644 });
    await utimes(file, new Date(1_600_000_000_000 + d * 1000), new Date(1_600_000_000_000 + d * 1000));
    bytes += size;
    files++;
  }
  await writeFile(join(root, "run.sh"), "#!/bin/sh\necho theseus\n", { mode: 0o755 });
  await symlink("dir-0/sub-0/file-0.txt", join(root, "link-to-first"));
  await symlink("/etc/hostname", join(root, "absolute-link"));
  await symlink("does-not-exist", join(root, "dangling-link"));
  await link(join(root, "run.sh"), join(root, "run-hardlink.sh"));
  return { files: files + 2, bytes };
}

export interface TreeDifference {
  readonly path: string;
  readonly reason: string;
}

/**
 * Every difference in type, mode, size, content, mtime (files, to the second) and link target; [] when equal.
 * Theseus's own names at a volume's root (`.theseus-cache`, `.theseus-lock`, `.theseus-partial`: each side's sync
 * state, lock and staging, never synced) are not the app's data and are left out.
 */
export async function compareTrees(a: string, b: string): Promise<TreeDifference[]> {
  const differences: TreeDifference[] = [];
  const walk = async (rel: string): Promise<void> => {
    const [namesA, namesB] = await Promise.all([readdir(join(a, rel)), readdir(join(b, rel))]);
    const all = [...new Set([...namesA, ...namesB])].filter((n) => rel !== "" || !n.startsWith(".theseus-")).sort();
    for (const name of all) {
      const path = rel === "" ? name : `${rel}/${name}`;
      const [sa, sb] = await Promise.all([lstat(join(a, path)).catch(() => undefined), lstat(join(b, path)).catch(() => undefined)]);
      if (sa === undefined || sb === undefined) {
        differences.push({ path, reason: sa === undefined ? "only in the second tree" : "only in the first tree" });
        continue;
      }
      if ((sa.mode & 0o170000) !== (sb.mode & 0o170000)) differences.push({ path, reason: "type differs" });
      else if (sa.isSymbolicLink()) {
        const [la, lb] = await Promise.all([readlink(join(a, path)), readlink(join(b, path))]);
        if (la !== lb) differences.push({ path, reason: `symlink target ${la} != ${lb}` });
      } else {
        if ((sa.mode & 0o7777) !== (sb.mode & 0o7777)) differences.push({ path, reason: `mode ${(sa.mode & 0o7777).toString(8)} != ${(sb.mode & 0o7777).toString(8)}` });
        if (sa.isDirectory()) await walk(path);
        else if (sa.isFile()) {
          if (sa.size !== sb.size) differences.push({ path, reason: `size ${sa.size} != ${sb.size}` });
          else if (Math.floor(sa.mtimeMs / 1000) !== Math.floor(sb.mtimeMs / 1000)) differences.push({ path, reason: "mtime differs" });
          else {
            const [ha, hb] = await Promise.all([hashFile(join(a, path)), hashFile(join(b, path))]);
            if (ha !== hb) differences.push({ path, reason: "content differs" });
          }
        }
      }
    }
  };
  await walk("");
  return differences;
}

async function hashFile(path: string): Promise<string> {
  return createHash("sha256").update(await readFile(path)).digest("hex");
}
