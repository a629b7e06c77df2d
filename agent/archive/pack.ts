// Export: a volume's files as one zstd-compressed tar, produced as it is read (never the whole in memory), and the
// content digest of exactly what was packed. A live app may change files while they are read: a file is packed with
// the size it had when its header was written (cut or zero-padded, counted), which is what "crash-consistent at best"
// means for an export without --quiesce.
import { createHash } from "node:crypto";
import { open, readlink } from "node:fs/promises";
import { pack as tarPack } from "tar-stream";
import type { Header, Pack } from "tar-stream";
import { TheseusError, throwIfAborted } from "../../common/index.js";
import { TreeDigest, walkTree } from "./tree.js";
import { compressChunks } from "./zstd.js";

export interface ArchiveProgress {
  readonly entries: number;
  readonly bytes: number;
}

export interface ArchiveSummary {
  readonly digest: string;
  readonly entries: number;
  readonly bytes: number;
  readonly tarBytes: number;
  readonly specialFilesSkipped: number;
  readonly firstSpecialFile: string;
  readonly filesChangedWhileRead: number;
}

export type PackEvent =
  | { readonly type: "data"; readonly data: Buffer }
  | { readonly type: "progress"; readonly progress: ArchiveProgress }
  | { readonly type: "done"; readonly summary: ArchiveSummary };

const READ_BYTES = 256 * 1024;
/** Compressed chunks are regrouped into messages of about this size (well under grpc-js's limits). */
const CHUNK_BYTES = 1024 * 1024;
const PROGRESS_EVERY_BYTES = 32 * 1024 * 1024;

/** Packs `root` (a claim's directory) and yields the compressed bytes, progress now and then, and the summary last. */
export async function* packVolume(root: string, signal?: AbortSignal, skipTop?: ReadonlySet<string>): AsyncGenerator<PackEvent> {
  const digest = new TreeDigest();
  let special = 0;
  let firstSpecial = "";
  let changed = 0;
  let tarBytes = 0;
  const pack = tarPack();
  let lastProgress = 0;
  const progress: PackEvent[] = [];

  const producing = (async () => {
    try {
      for await (const entry of walkTree(root, signal, skipTop)) {
        throwIfAborted(signal);
        const { stats, path } = entry;
        const base = { name: path, mode: stats.mode & 0o7777, uid: stats.uid, gid: stats.gid, mtime: stats.mtime };
        if (entry.type === "special") {
          if (special++ === 0) firstSpecial = path;
        } else if (entry.type === "dir") {
          await addEntry(pack, { ...base, type: "directory" });
          digest.add("dir", path, stats.mode, 0, "");
        } else if (entry.type === "symlink") {
          const target = await readlink(`${root}/${path}`);
          await addEntry(pack, { ...base, type: "symlink", linkname: target });
          digest.add("symlink", path, stats.mode, 0, target);
        } else {
          const result = await addFile(pack, `${root}/${path}`, { ...base, type: "file", size: stats.size }, signal);
          if (result.changed) changed++;
          digest.add("file", path, stats.mode, stats.size, result.sha256);
          if (digest.bytes - lastProgress >= PROGRESS_EVERY_BYTES) {
            lastProgress = digest.bytes;
            progress.push({ type: "progress", progress: { entries: digest.entries, bytes: digest.bytes } });
          }
        }
      }
      pack.finalize();
    } catch (error) {
      pack.destroy(error instanceof Error ? error : new Error(String(error)));
      throw error;
    }
  })();
  // The failure is reported by whoever iterates; this keeps it from being an unhandled rejection meanwhile.
  producing.catch(() => undefined);

  async function* tarChunks(): AsyncGenerator<Buffer> {
    for await (const chunk of pack as AsyncIterable<Buffer>) {
      tarBytes += chunk.length;
      yield chunk;
    }
  }

  let batch: Buffer[] = [];
  let batchBytes = 0;
  try {
    for await (const compressed of compressChunks(tarChunks())) {
      batch.push(compressed);
      batchBytes += compressed.length;
      if (batchBytes >= CHUNK_BYTES) {
        yield { type: "data", data: Buffer.concat(batch) };
        batch = [];
        batchBytes = 0;
      }
      while (progress.length > 0) yield progress.shift() as PackEvent;
    }
  } catch (error) {
    // The producer's error says what went wrong (an unreadable file); the stream's only that it was destroyed.
    await producing;
    throw error;
  }
  await producing;
  if (batchBytes > 0) yield { type: "data", data: Buffer.concat(batch) };
  yield {
    type: "done",
    summary: { digest: digest.hex(), entries: digest.entries, bytes: digest.bytes, tarBytes, specialFilesSkipped: special, firstSpecialFile: firstSpecial, filesChangedWhileRead: changed },
  };
}

function addEntry(pack: Pack, header: Partial<Header> & { name: string }): Promise<void> {
  return new Promise((resolve, reject) => pack.entry(header, (error) => (error ? reject(error) : resolve())));
}

/** Writes a file's first `header.size` bytes (zero-padded if it shrank meanwhile) into the pack; their sha256. */
async function addFile(pack: Pack, abs: string, header: Partial<Header> & { name: string } & { size: number }, signal?: AbortSignal): Promise<{ sha256: string; changed: boolean }> {
  const handle = await open(abs, "r").catch((error: unknown) => {
    throw new TheseusError(TheseusError.from(error).code, `cannot read ${header.name} for the archive`, { cause: error });
  });
  const hash = createHash("sha256");
  let changed = false;
  try {
    let done: (error?: Error | null) => void = () => undefined;
    const finished = new Promise<void>((resolve, reject) => {
      done = (error) => (error ? reject(error) : resolve());
    });
    const sink = pack.entry(header, (error) => done(error));
    let left = header.size;
    const buffer = Buffer.allocUnsafe(READ_BYTES);
    while (left > 0) {
      throwIfAborted(signal);
      const { bytesRead } = await handle.read(buffer, 0, Math.min(buffer.length, left), null);
      let piece: Buffer;
      if (bytesRead === 0) {
        // Shrank since its size was taken: pad, so the tar stays well-formed, and say so.
        changed = true;
        piece = Buffer.alloc(Math.min(READ_BYTES, left));
      } else {
        piece = Buffer.from(buffer.subarray(0, bytesRead));
      }
      left -= piece.length;
      hash.update(piece);
      if (!sink.write(piece)) await new Promise<void>((resolve) => sink.once("drain", resolve));
    }
    (sink as unknown as { end(): void }).end();
    await finished;
    if ((await handle.stat()).size !== header.size) changed = true;
  } finally {
    await handle.close();
  }
  return { sha256: hash.digest("hex"), changed };
}
