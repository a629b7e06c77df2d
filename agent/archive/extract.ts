// Import: a tar stream extracted into a volume under strict rules. This file is the security boundary of
// `theseus import`: an archive is input from anywhere (a laptop, a bucket, an attacker), and nothing it says may
// write outside the volume or plant something a later reader follows out of it.
//
// The rules, each refused with the entry's path:
// - names are relative, "/"-separated, without "", "." or ".." components, NUL or a leading "/", at most 4096 bytes;
// - only directories, regular files and symbolic links; hard links, devices, fifos and anything else are refused;
// - a symbolic link's target must be relative and stay inside the volume (resolved lexically from its directory);
//   links are created, never followed: every entry's parent must be a directory this extraction made (so no write
//   goes through a link), and files are opened with O_EXCL | O_NOFOLLOW (so no entry replaces another);
// - at most `maxEntries` entries and `maxBytes` of file content (the decompressed size is bounded before this).
// Owners are applied when the agent runs as root (as the sync engine does), modes always, file and link mtimes.
import { constants } from "node:fs";
import { chmod, lchown, lutimes, mkdir, open, symlink } from "node:fs/promises";
import { posix } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { extract as tarExtract } from "tar-stream";
import { TheseusError, throwIfAborted } from "../../common/index.js";
import type { ArchiveProgress } from "./pack.js";

export interface ExtractLimits {
  readonly maxEntries: number;
  readonly maxBytes: number;
}

export interface ExtractResult {
  readonly entries: number;
  readonly bytes: number;
}

const MAX_PATH_BYTES = 4096;

const refuse = (path: string, why: string): TheseusError =>
  new TheseusError("protocol", `the volume archive is refused: entry "${path.slice(0, 200)}" ${why}`, {
    hint: "the archive was tampered with or not made by `theseus export`; nothing of it is kept",
  });

/** Checks an entry name and returns it without a trailing "/". */
export function checkEntryName(raw: string): string {
  const name = raw.endsWith("/") ? raw.slice(0, -1) : raw;
  if (name === "" || Buffer.byteLength(name) > MAX_PATH_BYTES) throw refuse(raw, "has an empty or too long name");
  if (name.includes("\0")) throw refuse(raw, "has a NUL in its name");
  if (name.startsWith("/")) throw refuse(raw, "is an absolute path");
  if (name.split("/").some((c) => c === "" || c === "." || c === "..")) throw refuse(raw, "has an empty, '.' or '..' component (a path out of the volume)");
  return name;
}

/** A link target that, resolved from the link's directory, stays inside the volume. */
export function checkLinkTarget(path: string, target: string): void {
  if (target === "" || target.includes("\0") || Buffer.byteLength(target) > MAX_PATH_BYTES) throw refuse(path, "is a link with an empty or malformed target");
  if (target.startsWith("/")) throw refuse(path, `is a link to the absolute path ${target.slice(0, 200)} (out of the volume)`);
  const resolved = posix.normalize(posix.join(posix.dirname(path), target));
  if (resolved === ".." || resolved.startsWith("../")) throw refuse(path, `is a link pointing out of the volume (${target.slice(0, 200)})`);
}

/**
 * Extracts the tar chunks into `root`, which must be empty (the caller emptied it). Fails on the first entry that
 * breaks a rule; the caller then empties the volume again.
 */
export async function extractVolume(
  root: string,
  tarChunks: AsyncIterable<Uint8Array>,
  limits: ExtractLimits,
  signal?: AbortSignal,
  onProgress?: (progress: ArchiveProgress) => void,
): Promise<ExtractResult> {
  const extract = tarExtract();
  // Fed concurrently; its error (a bomb, corrupt zstd) is the one that matters when both fail.
  let feedError: unknown;
  const feeding = pipeline(Readable.from(tarChunks), extract).catch((error: unknown) => {
    feedError = error;
  });
  const dirs = new Set<string>([""]);
  const dirModes: [string, number][] = [];
  const asRoot = process.getuid?.() === 0;
  let entries = 0;
  let bytes = 0;
  try {
    for await (const entry of extract) {
      throwIfAborted(signal);
      const header = entry.header;
      const path = checkEntryName(header.name);
      if (++entries > limits.maxEntries) throw new TheseusError("resource_exhausted", `the volume archive has more than the ${limits.maxEntries} entries its manifest allows`, { hint: "the archive was tampered with: refuse it" });
      const parent = posix.dirname(path) === "." ? "" : posix.dirname(path);
      if (!dirs.has(parent)) throw refuse(path, "is not inside a directory the archive made before it (a write through a link, or an unordered archive)");
      const abs = `${root}/${path}`;
      const mode = (header.mode ?? 0o644) & 0o7777;
      const type = header.type ?? "file";
      if (type === "directory") {
        if (dirs.has(path)) throw refuse(path, "comes twice");
        await mkdir(abs, { mode: 0o700 }).catch((error: unknown) => {
          throw (error as NodeJS.ErrnoException).code === "EEXIST" ? refuse(path, "replaces an entry made before it") : TheseusError.from(error);
        });
        dirs.add(path);
        // Modes of directories last: a read-only directory must still take its children.
        dirModes.push([abs, mode]);
        if (asRoot) await lchown(abs, header.uid ?? 0, header.gid ?? 0);
        entry.resume();
      } else if (type === "symlink") {
        const target = header.linkname ?? "";
        checkLinkTarget(path, target);
        await symlink(target, abs).catch((error: unknown) => {
          throw (error as NodeJS.ErrnoException).code === "EEXIST" ? refuse(path, "replaces an entry made before it") : TheseusError.from(error);
        });
        if (asRoot) await lchown(abs, header.uid ?? 0, header.gid ?? 0);
        if (header.mtime !== undefined) await lutimes(abs, header.mtime, header.mtime);
        entry.resume();
      } else if (type === "file" || type === "contiguous-file") {
        const size = header.size ?? 0;
        if (bytes + size > limits.maxBytes) throw new TheseusError("resource_exhausted", `the volume archive holds more than the ${limits.maxBytes} bytes of files its manifest allows`, { hint: "the archive was tampered with: refuse it" });
        const handle = await open(abs, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600).catch((error: unknown) => {
          throw (error as NodeJS.ErrnoException).code === "EEXIST" ? refuse(path, "replaces an entry made before it") : TheseusError.from(error);
        });
        try {
          for await (const chunk of entry as AsyncIterable<Buffer>) {
            await handle.write(chunk);
            bytes += chunk.length;
          }
          if (asRoot) await handle.chown(header.uid ?? 0, header.gid ?? 0);
          await handle.chmod(mode);
          if (header.mtime !== undefined) await handle.utimes(header.mtime, header.mtime);
        } finally {
          await handle.close();
        }
        onProgress?.({ entries, bytes });
      } else {
        throw refuse(path, type === "link" ? "is a hard link (refused: it could join a file out of the volume)" : `is a ${type} (only files, directories and symbolic links)`);
      }
    }
  } catch (error) {
    extract.destroy();
    await feeding;
    // A bound or corrupt input (the feed's own error) explains a failing loop; a rule broken explains a failing feed.
    if (feedError instanceof TheseusError) throw feedError;
    throw wrapTarError(error instanceof TheseusError ? error : (feedError ?? error));
  }
  await feeding;
  if (feedError !== undefined) throw wrapTarError(feedError);
  for (const [abs, mode] of dirModes.reverse()) await chmod(abs, mode);
  return { entries, bytes };
}

function wrapTarError(error: unknown): TheseusError {
  if (error instanceof TheseusError) return error;
  return new TheseusError("data_loss", `the volume archive is not a well-formed tar: ${error instanceof Error ? error.message : String(error)}`, {
    cause: error,
    hint: "the archive is corrupt or truncated: copy or export it again",
  });
}
