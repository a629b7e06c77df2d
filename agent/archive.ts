// The first full copy of a volume as a zstd-compressed tar stream (tar-fs): the walking skeleton's data path, until the
// sync engine's rounds replace it. The source yields compressed chunks; the target unpacks them inside the volume root.
import { pack, extract } from "tar-fs";
import type { ExtractOptions, Headers as TarFsHeaders } from "tar-fs";

// @types/tar-fs predates tar-fs 3: the header carries linkname and extract takes validateSymlinks.
type Headers = TarFsHeaders & { linkname?: string | null };
import { CompressStream, DecompressStream } from "zstd-napi";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { TheseusError } from "../common/index.js";

/** Chunks stay far below grpc-js's receive limit so that one message never dominates memory. */
const CHUNK_BYTES = 256 * 1024;
const ZSTD_LEVEL = 1;

export async function* packVolume(root: string, signal: AbortSignal): AsyncGenerator<Uint8Array> {
  const tar = pack(root, { dereference: false });
  const zstd = new CompressStream({ compressionLevel: ZSTD_LEVEL });
  const compressed = tar.pipe(zstd);
  tar.on("error", (error) => compressed.destroy(TheseusError.from(error)));
  signal.addEventListener("abort", () => compressed.destroy(TheseusError.from(signal.reason)), { once: true });
  for await (const chunk of compressed as AsyncIterable<Buffer>) {
    for (let offset = 0; offset < chunk.length; offset += CHUNK_BYTES) yield chunk.subarray(offset, offset + CHUNK_BYTES);
  }
}

export interface UnpackStats {
  entries: number;
  bytes: number;
  wireBytes: number;
}

/**
 * Unpacks a compressed archive into `root`. Entry names are checked before anything is written: absolute names, `..`
 * and device or fifo entries fail the copy; tar-fs itself refuses to write through a symlink in a parent directory.
 */
export async function unpackVolume(root: string, chunks: AsyncIterable<Uint8Array>, signal: AbortSignal, onProgress?: (stats: UnpackStats) => void): Promise<UnpackStats> {
  const stats: UnpackStats = { entries: 0, bytes: 0, wireBytes: 0 };
  let rejected: TheseusError | undefined;
  const counted = Readable.from(
    (async function* () {
      for await (const chunk of chunks) {
        stats.wireBytes += chunk.length;
        yield chunk;
      }
    })(),
  );
  const options: ExtractOptions & { validateSymlinks: boolean } = {
    // Keep symlinks whatever they point to: they are data. Writes through them are still refused by tar-fs.
    validateSymlinks: false,
    ignore: (_name: string, header?: Headers) => {
      const problem = header === undefined ? undefined : checkEntry(header);
      if (problem !== undefined) {
        rejected ??= new TheseusError("protocol", `the source sent an unsafe archive entry: ${problem}`);
        return true;
      }
      if (header !== undefined) {
        stats.entries++;
        stats.bytes += header.size ?? 0;
        onProgress?.(stats);
      }
      return false;
    },
  };
  const sink = extract(root, options);
  try {
    await pipeline(counted, new DecompressStream(), sink, { signal });
  } catch (error) {
    throw rejected ?? TheseusError.from(error, "data_loss");
  }
  if (rejected !== undefined) throw rejected;
  return stats;
}

function checkEntry(header: Headers): string | undefined {
  const name = header.name;
  if (name.startsWith("/") || name.includes("\0")) return `"${name}" is absolute or malformed`;
  if (name.split("/").includes("..")) return `"${name}" climbs out with ".."`;
  if (header.type !== "file" && header.type !== "directory" && header.type !== "symlink" && header.type !== "link") {
    return `"${name}" has type ${String(header.type)}, which is never written`;
  }
  if (header.type === "link" && (header.linkname ?? "").split("/").includes("..")) return `hard link "${name}" points outside`;
  return undefined;
}
