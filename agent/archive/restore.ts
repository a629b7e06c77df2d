// A whole restore of one claim: empty it, extract with the strict rules, walk it again and compare the digest. On any
// failure the volume is emptied again, so that a refused archive leaves nothing of itself behind.
import { readdir, rm } from "node:fs/promises";
import { TheseusError } from "../../common/index.js";
import { extractVolume } from "./extract.js";
import type { ExtractLimits } from "./extract.js";
import type { ArchiveProgress, ArchiveSummary } from "./pack.js";
import { digestTree } from "./tree.js";
import { decompressChunks } from "./zstd.js";

export interface RestoreOptions extends ExtractLimits {
  /** The digest the restored tree must have. */
  readonly digest: string;
  /** Bound on the decompressed tar stream. */
  readonly maxTarBytes: number;
  readonly signal?: AbortSignal;
  readonly onProgress?: (progress: ArchiveProgress) => void;
}

/** Removes everything under `root` (never following links), keeping the root itself. */
export async function emptyVolume(root: string): Promise<void> {
  for (const name of await readdir(root)) await rm(`${root}/${name}`, { recursive: true, force: true });
}

export async function restoreVolume(root: string, compressed: AsyncIterable<Uint8Array>, options: RestoreOptions): Promise<ArchiveSummary> {
  if (!/^[0-9a-f]{64}$/.test(options.digest)) throw new TheseusError("invalid_argument", "the import names no valid digest (64 hex digits) for the volume", { hint: "the archive's manifest is damaged" });
  await emptyVolume(root);
  try {
    let tarBytes = 0;
    async function* counted(): AsyncGenerator<Buffer> {
      for await (const chunk of decompressChunks(compressed, options.maxTarBytes)) {
        tarBytes += chunk.length;
        yield chunk;
      }
    }
    await extractVolume(root, counted(), options, options.signal, options.onProgress);
    const found = await digestTree(root, options.signal);
    if (found.digest !== options.digest) {
      throw new TheseusError("data_loss", `the restored volume's digest ${found.digest.slice(0, 16)}… differs from the archive manifest's ${options.digest.slice(0, 16)}… (${found.entries} entries, ${found.bytes} bytes restored)`, {
        hint: "the archive was altered or damaged after export: nothing was kept; export it again",
      });
    }
    return { digest: found.digest, entries: found.entries, bytes: found.bytes, tarBytes, specialFilesSkipped: 0, firstSpecialFile: "", filesChangedWhileRead: 0 };
  } catch (error) {
    await emptyVolume(root).catch(() => undefined);
    throw error;
  }
}
