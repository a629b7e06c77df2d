// Reproducible datasets: the same seed and scale always give the same tree, byte for byte. Generated trees are cached
// and reused; a manifest written last (after every file) says which seed, scale and generator made the tree, so an
// interrupted generation or a changed generator is detected and the tree is rebuilt.
import { mkdir, open, readFile, rm, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { createContentGenerator } from "./content.js";
import type { ContentGenerator, ContentKind } from "./content.js";
import { createPrng } from "./prng.js";

export const DATASET_NAMES = ["mixed", "smallfiles", "bigfile", "final"] as const;
export type DatasetName = (typeof DATASET_NAMES)[number];

/** Bump when the generator's output changes, so that cached trees are rebuilt. */
const GENERATOR_VERSION = 1;
export const DEFAULT_SEED = 20261124;

const MiB = 2 ** 20;
const GiB = 2 ** 30;

/** The shape of a dataset: deterministic paths, so that the mutation can find its files without a file list. */
export interface DatasetLayout {
  readonly name: DatasetName;
  readonly scale: number;
  /** Small files are `smallFilePath(i)` for i in [0, smallFiles). */
  readonly smallFiles: number;
  readonly smallMinBytes: number;
  readonly smallMaxBytes: number;
  readonly mediumFiles: number;
  readonly mediumMinBytes: number;
  readonly mediumMaxBytes: number;
  /** Large files, rewritten page by page in place by the mutation. */
  readonly largeFiles: ReadonlyArray<{ readonly path: string; readonly bytes: number }>;
  /** Whether the mutation also appends to, creates and deletes small files (false: only large files' pages change). */
  readonly smallFileChurn: boolean;
}

export interface Dataset {
  readonly layout: DatasetLayout;
  readonly seed: number;
  /** The pristine tree; never modified by the benchmark (it copies it before mutating). */
  readonly tree: string;
  readonly files: number;
  readonly bytes: number;
}

interface Manifest {
  readonly generatorVersion: number;
  readonly name: DatasetName;
  readonly seed: number;
  readonly scale: number;
  readonly files: number;
  readonly bytes: number;
  readonly generatedAt: string;
  readonly generationMs: number;
}

export function datasetLayout(name: DatasetName, scale: number): DatasetLayout {
  const count = (n: number): number => Math.max(1, Math.round(n * scale));
  // Large sizes stay whole pages so that "1% of the 4 KiB blocks" is exact.
  const pages = (bytes: number): number => Math.max(16, Math.round((bytes * scale) / 4096)) * 4096;
  switch (name) {
    case "mixed": // ~1 GB: 20k small text files (~90 MB), 200 medium files (~420 MB), 4 database files (512 MiB)
      return {
        name, scale,
        smallFiles: count(20_000), smallMinBytes: 1024, smallMaxBytes: 8192,
        mediumFiles: count(200), mediumMinBytes: 256 * 1024, mediumMaxBytes: 4 * MiB,
        largeFiles: [0, 1, 2, 3].map((i) => ({ path: `db/table-${i}.db`, bytes: pages(128 * MiB) })),
        smallFileChurn: true,
      };
    case "smallfiles": // 100k files of 1-4 KiB in 1024 nested directories
      return {
        name, scale,
        smallFiles: count(100_000), smallMinBytes: 1024, smallMaxBytes: 4096,
        mediumFiles: 0, mediumMinBytes: 0, mediumMaxBytes: 0,
        largeFiles: [],
        smallFileChurn: true,
      };
    case "bigfile": // one 2 GiB database-like file
      return {
        name, scale,
        smallFiles: 0, smallMinBytes: 0, smallMaxBytes: 0,
        mediumFiles: 0, mediumMinBytes: 0, mediumMaxBytes: 0,
        largeFiles: [{ path: "disk.img", bytes: pages(2 * GiB) }],
        smallFileChurn: true,
      };
    case "final": // issue 12's final round: a 1 GiB database with 1% of its pages rewritten, 20k small files unchanged
      // The round the application waits for (cutover): only the database moved since the last pre-copy.
      return {
        name, scale,
        smallFiles: count(20_000), smallMinBytes: 1024, smallMaxBytes: 8192,
        mediumFiles: 0, mediumMinBytes: 0, mediumMaxBytes: 0,
        largeFiles: [{ path: "db/main.db", bytes: pages(GiB) }],
        smallFileChurn: false,
      };
  }
}

/** Nested two levels deep, 32 x 32 directories, as application data trees usually are. */
export function smallFilePath(i: number): string {
  return path.join("small", `d${i % 32}`, `d${Math.floor(i / 32) % 32}`, `f${i}.txt`);
}

export function mediumFilePath(i: number): string {
  // Half compressible (documents), half not (media).
  return i % 2 === 0 ? path.join("docs", `doc-${i}.txt`) : path.join("media", `blob-${i}.bin`);
}

export function mediumFileKind(i: number): ContentKind {
  return i % 2 === 0 ? "text" : "random";
}

/** Returns the cached dataset, generating it first when the cache is missing, incomplete or stale. */
export async function ensureDataset(
  cacheDir: string,
  name: DatasetName,
  scale: number,
  seed: number,
  log: (line: string) => void,
): Promise<Dataset> {
  const layout = datasetLayout(name, scale);
  const dir = path.join(cacheDir, "datasets", `${name}-x${scale}-seed${seed}`);
  const tree = path.join(dir, "tree");
  const manifestPath = path.join(dir, "manifest.json");
  const cached = await readManifest(manifestPath);
  if (cached !== undefined && cached.generatorVersion === GENERATOR_VERSION && cached.seed === seed && cached.scale === scale) {
    return { layout, seed, tree, files: cached.files, bytes: cached.bytes };
  }
  log(`generating dataset ${name} (scale ${scale}, seed ${seed}) in ${tree}`);
  await rm(dir, { recursive: true, force: true });
  await mkdir(tree, { recursive: true });
  const started = performance.now();
  const { files, bytes } = await generate(tree, layout, seed);
  const manifest: Manifest = {
    generatorVersion: GENERATOR_VERSION, name, seed, scale, files, bytes,
    generatedAt: new Date().toISOString(), generationMs: Math.round(performance.now() - started),
  };
  await writeFile(manifestPath, JSON.stringify(manifest, null, 2) + "\n");
  log(`generated ${files} files, ${bytes} bytes in ${(manifest.generationMs / 1000).toFixed(1)} s`);
  return { layout, seed, tree, files, bytes };
}

async function readManifest(file: string): Promise<Manifest | undefined> {
  try {
    return JSON.parse(await readFile(file, "utf8")) as Manifest;
  } catch {
    return undefined;
  }
}

async function generate(tree: string, layout: DatasetLayout, seed: number): Promise<{ files: number; bytes: number }> {
  const prng = createPrng(seed).fork(layout.name);
  let files = 0;
  let bytes = 0;

  const small = createContentGenerator(prng.fork("small"));
  const sizes = prng.fork("small-sizes");
  const madeDirs = new Map<string, Promise<unknown>>();
  await inBatches(layout.smallFiles, 64, async (i) => {
    // Draw from the PRNGs before the first await: that keeps the content independent of I/O timing.
    const size = sizes.int(layout.smallMinBytes, layout.smallMaxBytes);
    const data = small.fill("text", Buffer.allocUnsafe(size));
    const file = path.join(tree, smallFilePath(i));
    const dir = path.dirname(file);
    let made = madeDirs.get(dir);
    if (made === undefined) {
      made = mkdir(dir, { recursive: true });
      madeDirs.set(dir, made);
    }
    await made;
    await writeFile(file, data);
    files++;
    bytes += size;
  });

  const medium = createContentGenerator(prng.fork("medium"));
  for (let i = 0; i < layout.mediumFiles; i++) {
    const size = sizes.int(layout.mediumMinBytes, layout.mediumMaxBytes);
    await writeGenerated(path.join(tree, mediumFilePath(i)), size, mediumFileKind(i), medium);
    files++;
    bytes += size;
  }

  const large = createContentGenerator(prng.fork("large"));
  for (const file of layout.largeFiles) {
    await writeGenerated(path.join(tree, file.path), file.bytes, "pages", large);
    files++;
    bytes += file.bytes;
  }

  if (layout.name === "mixed") {
    // A little of what a real volume holds besides regular files, so that every contender must handle it.
    await mkdir(path.join(tree, "empty", "dir"), { recursive: true });
    await mkdir(path.join(tree, "links"), { recursive: true });
    await symlink("../db/table-0.db", path.join(tree, "links", "current.db"));
    files++;
  }
  return { files, bytes };
}

async function writeGenerated(file: string, size: number, kind: ContentKind, content: ContentGenerator): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  const handle = await open(file, "w");
  try {
    const chunk = Buffer.allocUnsafe(Math.min(size, 8 * MiB));
    for (let offset = 0; offset < size; offset += chunk.length) {
      const length = Math.min(chunk.length, size - offset);
      await handle.write(content.fill(kind, chunk.subarray(0, length)), 0, length, offset);
    }
  } finally {
    await handle.close();
  }
}

/**
 * Runs `task(i)` for i in [0, count) with up to `width` in flight. Tasks start in index order, so whatever a task does
 * before its first await (drawing from a PRNG) happens in a fixed order.
 */
export async function inBatches(count: number, width: number, task: (i: number) => Promise<void>): Promise<void> {
  for (let start = 0; start < count; start += width) {
    const batch: Promise<void>[] = [];
    for (let i = start; i < Math.min(count, start + width); i++) batch.push(task(i));
    await Promise.all(batch);
  }
}
