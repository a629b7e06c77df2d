// pages.db: the "database file" beside the log. Every acknowledged record rewrites one fixed-size page in place (the
// page chosen from the record's seq), which is the write pattern that makes volume sync interesting: a large file whose
// blocks change here and there, not only an append. Each page says who it is and carries its own checksum, as database
// pages do, so the verifier can prove a page intact without any other file.
//
//   offset 0   magic "TPG1"              4 bytes
//          4   page size                 u32 big-endian
//          8   page number               u32
//         12   page count                u32 (the file's geometry, repeated in every page)
//         16   seq of the record that last wrote the page (0: never written)   u64
//         24   body, a pure function of (page number, seq)
//   size - 32  sha256(bytes 0 .. size-32)
//
// The page file is fsync'd at checkpoints, not before every ack: the log is the durable truth, and recovery replays it
// into the pages (redo), so a page that is stale or torn after a crash is rebuilt from the record that last wrote it.
import { createHash } from "node:crypto";
import { open } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { TheseusError } from "../../common/index.js";

export const PAGE_MAGIC = Buffer.from("TPG1", "latin1");
const HEADER_BYTES = 24;
const CHECKSUM_BYTES = 32;
export const MIN_PAGE_BYTES = 512;

export interface PageGeometry {
  readonly pageSizeBytes: number;
  readonly pageCount: number;
}

/** The page a record rewrites: a multiplicative hash of its seq, so consecutive records land far apart. */
export function pageForSeq(seq: number, pageCount: number): number {
  const mixed = (BigInt(seq) * 0x9e3779b97f4a7c15n) & 0xffffffffffffffffn;
  return Number((mixed >> 32n) % BigInt(pageCount));
}

export function buildPage(pageNo: number, seq: number, geometry: PageGeometry): Buffer {
  const size = geometry.pageSizeBytes;
  const page = Buffer.allocUnsafe(size);
  PAGE_MAGIC.copy(page, 0);
  page.writeUInt32BE(size, 4);
  page.writeUInt32BE(pageNo, 8);
  page.writeUInt32BE(geometry.pageCount, 12);
  page.writeBigUInt64BE(BigInt(seq), 16);
  const pattern = createHash("sha256").update(`page ${pageNo} seq ${seq}`).digest();
  for (let at = HEADER_BYTES; at < size - CHECKSUM_BYTES; at += pattern.length) {
    pattern.copy(page, at, 0, Math.min(pattern.length, size - CHECKSUM_BYTES - at));
  }
  createHash("sha256").update(page.subarray(0, size - CHECKSUM_BYTES)).digest().copy(page, size - CHECKSUM_BYTES);
  return page;
}

export type PageCheck = { readonly ok: true; readonly seq: number } | { readonly ok: false; readonly reason: string };

/** Checks a page read at position `pageNo` of a file with `geometry`: identity, geometry, checksum and body. */
export function checkPage(page: Buffer, pageNo: number, geometry: PageGeometry): PageCheck {
  const size = geometry.pageSizeBytes;
  if (page.length !== size) return { ok: false, reason: `short page (${page.length} of ${size} bytes)` };
  if (!page.subarray(0, 4).equals(PAGE_MAGIC)) return { ok: false, reason: "not a page (bad magic)" };
  const digest = createHash("sha256").update(page.subarray(0, size - CHECKSUM_BYTES)).digest();
  if (!digest.equals(page.subarray(size - CHECKSUM_BYTES))) return { ok: false, reason: "checksum mismatch" };
  if (page.readUInt32BE(4) !== size || page.readUInt32BE(12) !== geometry.pageCount) {
    return { ok: false, reason: "geometry differs from the file's" };
  }
  if (page.readUInt32BE(8) !== pageNo) return { ok: false, reason: `holds page ${page.readUInt32BE(8)}: misplaced` };
  const seq = Number(page.readBigUInt64BE(16));
  // The body is derived from (page, seq): a page with a valid checksum but someone else's body was copied, not written.
  if (!buildPage(pageNo, seq, geometry).equals(page)) return { ok: false, reason: "body does not match its header" };
  return { ok: true, seq };
}

/**
 * Reads the geometry of an existing page file from its first valid page header (they all repeat it), or undefined when
 * the file is empty or no header can be trusted.
 */
export async function readGeometry(file: FileHandle): Promise<PageGeometry | undefined> {
  const size = (await file.stat()).size;
  const head = Buffer.alloc(HEADER_BYTES);
  const { bytesRead } = await file.read(head, 0, HEADER_BYTES, 0);
  if (bytesRead < HEADER_BYTES || !head.subarray(0, 4).equals(PAGE_MAGIC)) return undefined;
  const geometry = { pageSizeBytes: head.readUInt32BE(4), pageCount: head.readUInt32BE(12) };
  if (geometry.pageSizeBytes < MIN_PAGE_BYTES || geometry.pageSizeBytes * geometry.pageCount !== size) return undefined;
  return geometry;
}

export function geometryFor(pageFileBytes: number, pageSizeBytes: number): PageGeometry {
  if (!Number.isInteger(pageSizeBytes) || pageSizeBytes < MIN_PAGE_BYTES) {
    throw new TheseusError("invalid_argument", `page size ${pageSizeBytes} is too small`, { hint: `use at least ${MIN_PAGE_BYTES} bytes, e.g. 4096` });
  }
  const pageCount = Math.floor(pageFileBytes / pageSizeBytes);
  if (pageCount < 1 || pageCount > 0xffffffff) {
    throw new TheseusError("invalid_argument", `a page file of ${pageFileBytes} bytes cannot hold ${pageSizeBytes}-byte pages`, {
      hint: "give --page-file-bytes at least one page, e.g. 16MiB",
    });
  }
  return { pageSizeBytes, pageCount };
}

/** Creates (or re-creates) a page file with every page formatted at seq 0, written in large batches, then fsync'd. */
export async function formatPageFile(path: string, geometry: PageGeometry): Promise<void> {
  const file = await open(path, "w");
  try {
    const perBatch = Math.max(1, Math.floor((1024 * 1024) / geometry.pageSizeBytes));
    for (let first = 0; first < geometry.pageCount; first += perBatch) {
      const pages: Buffer[] = [];
      for (let p = first; p < Math.min(first + perBatch, geometry.pageCount); p++) pages.push(buildPage(p, 0, geometry));
      await file.writev(pages, first * geometry.pageSizeBytes);
    }
    await file.sync();
  } finally {
    await file.close();
  }
}
