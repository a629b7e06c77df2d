// The reproducible mutation between a full copy and an incremental round, modelled on what applications do to a volume:
// databases rewrite pages in place (1% of the 4 KiB pages of each large file), logs grow (appends to 1% of the small
// files), and files come and go (100 created, 100 deleted, scaled with the dataset). It reports the bytes it changed,
// the yardstick for "wire bytes at most 1.5x the bytes changed".
import { appendFile, mkdir, open, stat, unlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { createContentGenerator, PAGE_BYTES } from "./content.js";
import type { Dataset } from "./datasets.js";
import { smallFilePath } from "./datasets.js";
import { createPrng } from "./prng.js";

export interface MutationReport {
  /** Pages rewritten + bytes appended + bytes of created files. Deletions change no bytes (they are entries). */
  readonly bytesChanged: number;
  readonly pagesRewritten: number;
  readonly filesAppended: number;
  readonly bytesAppended: number;
  readonly filesCreated: number;
  readonly bytesCreated: number;
  readonly filesDeleted: number;
}

/**
 * Mutates `root` (a copy of the dataset's tree) for round `round`. Each round draws from its own stream, so round 2's
 * mutation is the same whatever happened in round 1; files that an earlier round deleted are passed over.
 */
export async function mutateTree(root: string, dataset: Dataset, round: number): Promise<MutationReport> {
  const layout = dataset.layout;
  const prng = createPrng(dataset.seed).fork(`${layout.name}-mutation-${round}`);
  const content = createContentGenerator(prng.fork("content"));

  let pagesRewritten = 0;
  for (const large of layout.largeFiles) {
    const pageCount = Math.floor(large.bytes / PAGE_BYTES);
    const chosen = pickDistinct(prng, pageCount, Math.max(1, Math.round(pageCount * 0.01)));
    chosen.sort((a, b) => a - b);
    const handle = await open(path.join(root, large.path), "r+");
    try {
      const page = Buffer.allocUnsafe(PAGE_BYTES);
      for (const index of chosen) {
        await handle.write(content.fill("pages", page), 0, PAGE_BYTES, index * PAGE_BYTES);
        pagesRewritten++;
      }
    } finally {
      await handle.close();
    }
  }

  // The final-round dataset's small files stay as they are: only the database changed since the last round.
  const smallCount = layout.smallFileChurn ? layout.smallFiles : 0;
  const churn = Math.max(1, Math.round(100 * layout.scale));
  const candidates = smallCount === 0 ? [] : pickDistinct(prng, smallCount, Math.min(smallCount, Math.round(smallCount * 0.01) + churn * 2));
  let filesAppended = 0;
  let bytesAppended = 0;
  let filesDeleted = 0;
  const appendTarget = Math.max(1, Math.round(smallCount * 0.01));
  for (const index of candidates) {
    const file = path.join(root, smallFilePath(index));
    if (!(await exists(file))) continue; // deleted by an earlier round
    if (filesAppended < appendTarget) {
      const bytes = content.fill("text", Buffer.allocUnsafe(prng.int(64, 1024)));
      await appendFile(file, bytes);
      filesAppended++;
      bytesAppended += bytes.length;
    } else if (filesDeleted < churn) {
      await unlink(file);
      filesDeleted++;
    }
  }

  let filesCreated = 0;
  let bytesCreated = 0;
  if (smallCount > 0) {
    for (let i = 0; i < churn; i++) {
      const file = path.join(root, path.dirname(smallFilePath(prng.int(0, smallCount - 1))), `new-r${round}-${i}.txt`);
      const bytes = content.fill("text", Buffer.allocUnsafe(prng.int(layout.smallMinBytes, layout.smallMaxBytes)));
      await mkdir(path.dirname(file), { recursive: true });
      await writeFile(file, bytes);
      filesCreated++;
      bytesCreated += bytes.length;
    }
  }

  return {
    bytesChanged: pagesRewritten * PAGE_BYTES + bytesAppended + bytesCreated,
    pagesRewritten, filesAppended, bytesAppended, filesCreated, bytesCreated, filesDeleted,
  };
}

/** `count` distinct integers in [0, n), by partial Fisher-Yates over a sparse map (no n-sized array for 2 GiB files). */
function pickDistinct(prng: { int(min: number, max: number): number }, n: number, count: number): number[] {
  const swapped = new Map<number, number>();
  const result: number[] = [];
  for (let i = 0; i < Math.min(count, n); i++) {
    const j = prng.int(i, n - 1);
    const atJ = swapped.get(j) ?? j;
    swapped.set(j, swapped.get(i) ?? i);
    result.push(atJ);
  }
  return result;
}

async function exists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch {
    return false;
  }
}
