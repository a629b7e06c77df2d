// The sync protocol's records and their framing. Records are small and numerous (one per changed file), so they are
// encoded in a compact hand-written binary form and batched into frames of ~256 KiB that are compressed as a whole
// (zstd over many small files compresses far better than per file) and carried as one `bytes` field per gRPC message.
// Every length read from the peer is bounded before anything is allocated: the decoder is the first line of defence
// against a hostile peer.
import { TheseusError } from "../../common/index.js";
import { Compressor, Decompressor } from "zstd-napi";
import zstdBinding from "zstd-napi/binding.js";

/**
 * 2: torn records (issue 14). 3: a large file's hash is taken over its sparse block list (block-list.ts), not one
 * 32-byte hash per block; the start record carries the set-id policy; keepalive (empty) frames. 4: file_append (a
 * small file that grew by an append travels as its tail; issue 12). 5: the end record's statistics count the entries
 * the source vouched for by size and mtime and has not read yet (the quick check after a lost cache; issue 12); a
 * target without a cache entry for a small file sends it unhashed (entry_unhashed), and the source answers every such
 * entry: file_vouch when its file passes the quick check against it, the file itself otherwise. 6: the source opens
 * its side with the block lists it holds (lists_held); the target offers the list of each large file the source does
 * not hold (list_offer, before the file's entry), so that a source that lost its state patches a changed large file
 * instead of sending it whole (issue 12).
 */
export const PROTOCOL_VERSION = 6;
/** Block size for large files: the page size databases rewrite in place; see DESIGN notes in index.ts. */
export const BLOCK_BYTES = 4096;
/** Files at least this large are hashed per block and patched in place; smaller ones are sent whole. */
export const LARGE_FILE_BYTES = 1 << 20;
/** A frame is flushed once its records reach this size. */
export const FRAME_TARGET_BYTES = 256 * 1024;
/** Upper bound on a frame's raw (decompressed) size, far below grpc-js's 4 MiB default receive limit. */
export const MAX_FRAME_RAW_BYTES = 2 * 1024 * 1024;
/** Upper bound on one data record's payload. */
export const MAX_DATA_BYTES = 1024 * 1024;
/**
 * Upper bound on one block list the target offers (list_offer): 1 GiB of encoding, 32 bytes per 4 KiB data block, so
 * a file of up to 128 GiB of data. The source writes an offer to its state as it arrives, never holding it in memory.
 */
export const MAX_OFFERED_LIST_BYTES = 1024 * 1024 * 1024;
/** Upper bound on the hashes of lists_held one source sends (8 MiB); a source holding more names the first ones. */
export const MAX_LISTS_HELD = 256 * 1024;

export interface Meta {
  /** Permission bits (mode & 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  /** Modification time in whole microseconds since the epoch (the precision utimes round-trips exactly). */
  mtimeUs: number;
}

export type EntryType = "dir" | "file" | "symlink";

/** One line of a side's index: what a path is now. Also the unit of the volume digest. */
export interface IndexEntry {
  path: string;
  type: EntryType;
  meta: Meta;
  size: number;
  /** Content hash for files (32 bytes), empty otherwise. */
  hash: Uint8Array;
  /** Symlink target, "" otherwise. */
  linkTarget: string;
  /** For the 2nd.. path of a hard-link group: the group's first path in walk order, "" otherwise. */
  hardlinkTo: string;
}

export interface RoundStatsWire {
  entriesScanned: number;
  entriesChanged: number;
  entriesDeleted: number;
  bytesRead: number;
  bytesChanged: number;
  wireBytes: number;
  rawBytes: number;
  ownersNotPreserved: number;
  specialFilesSkipped: number;
  firstSpecialFile: string;
  previousRoundEndMs: number;
  /** Files whose set-user-ID/set-group-ID bits the target's policy dropped. */
  setidStripped: number;
  /**
   * At the round's end: files the source vouched for by size, mtime and mode alone (its cache was lost and the
   * target's entry matched) and has not yet read to verify, and their bytes. The digest covers them by that quick
   * check only; 0 once every vouched file was verified.
   */
  vouchedUnverified: number;
  vouchedUnverifiedBytes: number;
  /** Block lists the target offered (list_offer) that the source stored, and their encoded bytes. */
  listsReceived: number;
  listBytesReceived: number;
}

/** A round's statistics before anything happened: where the source starts counting, and what tests send. */
export function emptyRoundStats(): RoundStatsWire {
  return {
    entriesScanned: 0,
    entriesChanged: 0,
    entriesDeleted: 0,
    bytesRead: 0,
    bytesChanged: 0,
    wireBytes: 0,
    rawBytes: 0,
    ownersNotPreserved: 0,
    specialFilesSkipped: 0,
    firstSpecialFile: "",
    previousRoundEndMs: 0,
    setidStripped: 0,
    vouchedUnverified: 0,
    vouchedUnverifiedBytes: 0,
    listsReceived: 0,
    listBytesReceived: 0,
  };
}

export type SyncRecord =
  // target -> source
  /** stripSetid: the target drops set-user-ID and set-group-ID bits of files (its policy); the source digests so too. */
  | { t: "start"; version: number; targetUid: number; targetGid: number; preserveOwner: boolean; stripSetid: boolean }
  | { t: "entry"; e: IndexEntry }
  /**
   * A small regular file (not hard-linked) the target has no cache entry for, or only the source's unverified word
   * (file_vouch), sent without reading it: `e.hash` is empty. The source must answer it with file_vouch (its file has this size, mtime and mode: the target takes the
   * source's hash for its copy) or with the file (any other record for the path).
   */
  | { t: "entry_unhashed"; e: IndexEntry }
  | { t: "index_end" }
  /**
   * The block list (its canonical encoding, block-list.ts) of content the target holds, offered in pieces in order
   * (`offset` into `total` bytes) before the entry of a large file with that hash, when the source does not hold it
   * (lists_held). Self-verifying: the source keeps it only when its sha256 is `hash`.
   */
  | { t: "list_offer"; hash: Uint8Array; total: number; offset: number; piece: Uint8Array }
  // source -> target
  /**
   * The source's first records: the hashes (32 bytes each, concatenated) of the block lists it holds, `last` on the
   * final one. The target offers the lists of its large files that are not among them.
   */
  | { t: "lists_held"; hashes: Uint8Array; last: boolean }
  | { t: "dir"; path: string; meta: Meta }
  | { t: "symlink"; path: string; meta: Meta; target: string }
  | { t: "hardlink"; path: string; to: string; hash: Uint8Array }
  /** Contents unchanged on the target: set metadata only. */
  | { t: "file_meta"; path: string; meta: Meta; size: number; hash: Uint8Array }
  /**
   * The answer to an entry_unhashed whose size, mtime and mode the source's file has: the target records `hash` (the
   * source's content hash) for its copy unread, flagged vouched until it verifies it, and sets the metadata.
   */
  | { t: "file_vouch"; path: string; meta: Meta; size: number; hash: Uint8Array }
  /** A small file, whole. */
  | { t: "file_inline"; path: string; meta: Meta; hash: Uint8Array; data: Uint8Array }
  /**
   * A small file that grew by an append: the target's copy of `baseSize` bytes (sha256 `baseHash`) followed by `tail`
   * is the new content, whose sha256 is `hash`. The result is still small (below LARGE_FILE_BYTES), so its hash is
   * the plain sha256 of the content either side would compute.
   */
  | { t: "file_append"; path: string; meta: Meta; baseSize: number; baseHash: Uint8Array; hash: Uint8Array; tail: Uint8Array }
  /**
   * A large file follows as data/zero records then file_end; "patch" rewrites blocks of the target's copy in place.
   * `resumeFrom` > 0 (whole only): the target keeps the first bytes from a round cut short (see "partial").
   */
  | { t: "file_begin"; path: string; meta: Meta; mode: "whole" | "patch"; baseHash: Uint8Array; resumeFrom: number }
  /** target -> source, before the index: a large file received in part, its verified blocks and their list hash. */
  | { t: "partial"; path: string; blocks: number; prefixHash: Uint8Array }
  /**
   * target -> source, before the index: a large file whose in-place patch was cut (its index entry has no hash). Its
   * first `blocks` blocks hold verified new content (list hash `prefixHash`), blocks from there to `dirtyBlocks` are
   * unknown (they must all be sent), the rest still hold the content `baseHash` names. See target.ts, "torn".
   */
  | { t: "torn"; path: string; baseHash: Uint8Array; blocks: number; prefixHash: Uint8Array; dirtyBlocks: number }
  /** target -> source, after the index, every 250 ms: how busy the target is applying (per mille of wall time). */
  | { t: "load"; busyPermille: number }
  | { t: "data"; offset: number; data: Uint8Array }
  | { t: "zero"; offset: number; length: number }
  | { t: "file_end"; size: number; hash: Uint8Array }
  | { t: "delete"; path: string }
  | { t: "end"; digest: Uint8Array; stats: RoundStatsWire }
  | { t: "error"; code: string; message: string };

const KIND = {
  start: 1,
  entry: 2,
  index_end: 3,
  dir: 10,
  symlink: 11,
  hardlink: 12,
  file_meta: 13,
  file_inline: 14,
  file_begin: 15,
  data: 16,
  zero: 17,
  file_end: 18,
  delete: 19,
  end: 20,
  error: 21,
  partial: 22,
  load: 23,
  torn: 24,
  file_append: 25,
  entry_unhashed: 26,
  file_vouch: 27,
  list_offer: 28,
  lists_held: 29,
} as const;

const TYPE_CODE: Record<EntryType, number> = { dir: 1, file: 2, symlink: 3 };
const TYPE_NAME: Record<number, EntryType> = { 1: "dir", 2: "file", 3: "symlink" };

// ---------------------------------------------------------------------------------------------------------------------
// Byte-level writer and reader

export class ByteWriter {
  private buf: Buffer;
  private pos: number;
  /**
   * `headerBytes` are reserved at the start of every batch, so a frame header can be filled in place: the records of a
   * raw frame are never copied between encoding and the transport.
   */
  constructor(
    private readonly initialBytes = 64 * 1024,
    private readonly headerBytes = 0,
  ) {
    this.buf = Buffer.allocUnsafe(initialBytes);
    this.pos = headerBytes;
  }
  /** Bytes of records written (the reserved header excluded). */
  get length(): number {
    return this.pos - this.headerBytes;
  }
  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }
  u8(v: number): void {
    this.ensure(1);
    this.buf[this.pos++] = v;
  }
  /** Unsigned integer up to 2^53 as a LEB128 varint (arithmetic, not bitwise, to go past 32 bits). */
  uint(v: number): void {
    if (!Number.isSafeInteger(v) || v < 0) throw new TheseusError("internal", `cannot encode ${v} as an unsigned integer`);
    this.ensure(8);
    while (v >= 0x80) {
      this.buf[this.pos++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.buf[this.pos++] = v;
  }
  f64(v: number): void {
    this.ensure(8);
    this.buf.writeDoubleLE(v, this.pos);
    this.pos += 8;
  }
  bytes(b: Uint8Array): void {
    this.uint(b.length);
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
  str(s: string): void {
    // Most entries' link target and hard-link path are empty.
    if (s.length === 0) return this.u8(0);
    const max = s.length * 3;
    this.ensure(max + 8);
    // Reserve a 3-byte varint for the length when the string may need it; write in place to avoid a temporary.
    if (max < 0x80) {
      const n = this.buf.write(s, this.pos + 1, "utf8");
      this.buf[this.pos] = n;
      this.pos += 1 + n;
    } else {
      const n = Buffer.byteLength(s, "utf8");
      this.uint(n);
      this.buf.write(s, this.pos, n, "utf8");
      this.pos += n;
    }
  }
  /** Hands over the bytes written so far (the reserved header included) and starts a fresh buffer: no copy. */
  take(): Buffer {
    const out = this.buf.subarray(0, this.pos);
    this.buf = Buffer.allocUnsafe(Math.max(this.initialBytes, Math.min(this.buf.length, 4 * this.initialBytes)));
    this.pos = this.headerBytes;
    return out;
  }
}

export class ByteReader {
  pos = 0;
  constructor(private readonly buf: Buffer) {}
  get done(): boolean {
    return this.pos >= this.buf.length;
  }
  u8(): number {
    if (this.pos >= this.buf.length) throw truncated();
    return this.buf[this.pos++] as number;
  }
  uint(): number {
    let v = 0;
    let mul = 1;
    for (let i = 0; i < 8; i++) {
      const b = this.u8();
      v += (b & 0x7f) * mul;
      if (b < 0x80) {
        if (!Number.isSafeInteger(v)) throw malformed("integer out of range");
        return v;
      }
      mul *= 0x80;
    }
    throw malformed("varint too long");
  }
  f64(): number {
    if (this.pos + 8 > this.buf.length) throw truncated();
    const v = this.buf.readDoubleLE(this.pos);
    this.pos += 8;
    if (!Number.isFinite(v)) throw malformed("non-finite number");
    return v;
  }
  bytes(max: number): Buffer {
    const n = this.uint();
    if (n > max) throw malformed(`field of ${n} bytes exceeds the limit of ${max}`);
    if (this.pos + n > this.buf.length) throw truncated();
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  str(max: number): string {
    const n = this.uint();
    if (n === 0) return "";
    if (n > max) throw malformed(`string of ${n} bytes exceeds the limit of ${max}`);
    if (this.pos + n > this.buf.length) throw truncated();
    const s = this.buf.toString("utf8", this.pos, this.pos + n);
    // Invalid bytes decode to U+FFFD, which a valid name may also contain: only then check the bytes (rare).
    if (s.includes("\uFFFD")) {
      try {
        STRICT_UTF8.decode(this.buf.subarray(this.pos, this.pos + n));
      } catch {
        throw malformed("a string is not valid UTF-8");
      }
    }
    this.pos += n;
    return s;
  }
}

const STRICT_UTF8 = new TextDecoder("utf-8", { fatal: true });

function truncated(): TheseusError {
  return new TheseusError("protocol", "the peer sent a truncated record", { hint: "the peer is broken or hostile" });
}
function malformed(why: string): TheseusError {
  return new TheseusError("protocol", `the peer sent a malformed record: ${why}`, { hint: "the peer is broken or hostile" });
}

// ---------------------------------------------------------------------------------------------------------------------
// Records

const MAX_STR = 4 * 4096;

function writeMeta(w: ByteWriter, m: Meta): void {
  w.uint(m.mode);
  w.uint(m.uid);
  w.uint(m.gid);
  w.f64(m.mtimeUs);
}
function readMeta(r: ByteReader): Meta {
  const mode = r.uint();
  if (mode > 0o7777) throw malformed(`mode ${mode.toString(8)} has bits beyond 07777`);
  const uid = r.uint();
  const gid = r.uint();
  if (uid > 0xffffffff || gid > 0xffffffff) throw malformed("uid/gid out of range");
  return { mode, uid, gid, mtimeUs: r.f64() };
}
function readHash(r: ByteReader, allowEmpty: boolean): Uint8Array {
  const h = r.bytes(32);
  if (h.length !== 32 && !(allowEmpty && h.length === 0)) throw malformed("hash is not 32 bytes");
  return h;
}

export function encodeRecord(w: ByteWriter, rec: SyncRecord): void {
  w.u8(KIND[rec.t]);
  switch (rec.t) {
    case "start":
      w.uint(rec.version);
      w.uint(rec.targetUid);
      w.uint(rec.targetGid);
      w.u8(rec.preserveOwner ? 1 : 0);
      w.u8(rec.stripSetid ? 1 : 0);
      return;
    case "entry":
    case "entry_unhashed":
      encodeEntry(w, rec.e);
      return;
    case "index_end":
      return;
    case "list_offer":
      w.bytes(rec.hash);
      w.uint(rec.total);
      w.uint(rec.offset);
      w.bytes(rec.piece);
      return;
    case "lists_held":
      w.bytes(rec.hashes);
      w.u8(rec.last ? 1 : 0);
      return;
    case "dir":
      w.str(rec.path);
      writeMeta(w, rec.meta);
      return;
    case "symlink":
      w.str(rec.path);
      writeMeta(w, rec.meta);
      w.str(rec.target);
      return;
    case "hardlink":
      w.str(rec.path);
      w.str(rec.to);
      w.bytes(rec.hash);
      return;
    case "file_meta":
    case "file_vouch":
      w.str(rec.path);
      writeMeta(w, rec.meta);
      w.uint(rec.size);
      w.bytes(rec.hash);
      return;
    case "file_inline":
      w.str(rec.path);
      writeMeta(w, rec.meta);
      w.bytes(rec.hash);
      w.bytes(rec.data);
      return;
    case "file_append":
      w.str(rec.path);
      writeMeta(w, rec.meta);
      w.uint(rec.baseSize);
      w.bytes(rec.baseHash);
      w.bytes(rec.hash);
      w.bytes(rec.tail);
      return;
    case "file_begin":
      w.str(rec.path);
      writeMeta(w, rec.meta);
      w.u8(rec.mode === "patch" ? 1 : 0);
      w.bytes(rec.baseHash);
      w.uint(rec.resumeFrom);
      return;
    case "load":
      w.uint(rec.busyPermille);
      return;
    case "partial":
      w.str(rec.path);
      w.uint(rec.blocks);
      w.bytes(rec.prefixHash);
      return;
    case "torn":
      w.str(rec.path);
      w.bytes(rec.baseHash);
      w.uint(rec.blocks);
      w.bytes(rec.prefixHash);
      w.uint(rec.dirtyBlocks);
      return;
    case "data":
      w.uint(rec.offset);
      w.bytes(rec.data);
      return;
    case "zero":
      w.uint(rec.offset);
      w.uint(rec.length);
      return;
    case "file_end":
      w.uint(rec.size);
      w.bytes(rec.hash);
      return;
    case "delete":
      w.str(rec.path);
      return;
    case "end": {
      w.bytes(rec.digest);
      const s = rec.stats;
      for (const v of [
        s.entriesScanned,
        s.entriesChanged,
        s.entriesDeleted,
        s.bytesRead,
        s.bytesChanged,
        s.wireBytes,
        s.rawBytes,
        s.ownersNotPreserved,
        s.specialFilesSkipped,
        s.previousRoundEndMs,
        s.setidStripped,
        s.vouchedUnverified,
        s.vouchedUnverifiedBytes,
        s.listsReceived,
        s.listBytesReceived,
      ])
        w.uint(v);
      w.str(s.firstSpecialFile);
      return;
    }
    case "error":
      w.str(rec.code);
      w.str(rec.message);
      return;
  }
}

export function encodeEntry(w: ByteWriter, e: IndexEntry): void {
  w.str(e.path);
  w.u8(TYPE_CODE[e.type]);
  writeMeta(w, e.meta);
  w.uint(e.size);
  w.bytes(e.hash);
  w.str(e.linkTarget);
  w.str(e.hardlinkTo);
}

export function decodeEntry(r: ByteReader): IndexEntry {
  const path = r.str(MAX_STR);
  const type = TYPE_NAME[r.u8()];
  if (type === undefined) throw malformed("unknown entry type");
  const meta = readMeta(r);
  const size = r.uint();
  const hash = readHash(r, true);
  const linkTarget = r.str(MAX_STR);
  const hardlinkTo = r.str(MAX_STR);
  return { path, type, meta, size, hash, linkTarget, hardlinkTo };
}

export function decodeRecord(r: ByteReader): SyncRecord {
  const kind = r.u8();
  switch (kind) {
    case KIND.start: {
      const version = r.uint();
      const targetUid = r.uint();
      const targetGid = r.uint();
      const preserveOwner = r.u8() === 1;
      return { t: "start", version, targetUid, targetGid, preserveOwner, stripSetid: r.u8() === 1 };
    }
    case KIND.entry:
      return { t: "entry", e: decodeEntry(r) };
    case KIND.entry_unhashed: {
      const e = decodeEntry(r);
      // Only what the target may send unhashed: a small regular file, not a link; anything else is a broken peer.
      if (e.type !== "file" || e.hash.length !== 0 || e.size >= LARGE_FILE_BYTES || e.hardlinkTo !== "") throw malformed("bad unhashed entry");
      return { t: "entry_unhashed", e };
    }
    case KIND.index_end:
      return { t: "index_end" };
    case KIND.list_offer: {
      const hash = readHash(r, false);
      const total = r.uint();
      const offset = r.uint();
      const piece = r.bytes(MAX_DATA_BYTES);
      if (total > MAX_OFFERED_LIST_BYTES) throw malformed(`an offered block list of ${total} bytes exceeds ${MAX_OFFERED_LIST_BYTES}`);
      if (piece.length === 0 || offset + piece.length > total) throw malformed("an offered block list's piece is empty or past its end");
      return { t: "list_offer", hash, total, offset, piece };
    }
    case KIND.lists_held: {
      const hashes = r.bytes(MAX_DATA_BYTES);
      if (hashes.length % 32 !== 0) throw malformed("the held lists' hashes are not 32 bytes each");
      return { t: "lists_held", hashes, last: r.u8() === 1 };
    }
    case KIND.dir:
      return { t: "dir", path: r.str(MAX_STR), meta: readMeta(r) };
    case KIND.symlink: {
      const path = r.str(MAX_STR);
      const meta = readMeta(r);
      return { t: "symlink", path, meta, target: r.str(MAX_STR) };
    }
    case KIND.hardlink: {
      const path = r.str(MAX_STR);
      const to = r.str(MAX_STR);
      return { t: "hardlink", path, to, hash: readHash(r, false) };
    }
    case KIND.file_meta: {
      const path = r.str(MAX_STR);
      const meta = readMeta(r);
      const size = r.uint();
      return { t: "file_meta", path, meta, size, hash: readHash(r, false) };
    }
    case KIND.file_vouch: {
      const path = r.str(MAX_STR);
      const meta = readMeta(r);
      const size = r.uint();
      if (size >= LARGE_FILE_BYTES) throw malformed("a vouched file is small");
      return { t: "file_vouch", path, meta, size, hash: readHash(r, false) };
    }
    case KIND.file_inline: {
      const path = r.str(MAX_STR);
      const meta = readMeta(r);
      const hash = readHash(r, false);
      return { t: "file_inline", path, meta, hash, data: r.bytes(LARGE_FILE_BYTES) };
    }
    case KIND.file_append: {
      const path = r.str(MAX_STR);
      const meta = readMeta(r);
      // Bounded here, before the target reads its base: base and tail together stay a small file (whose hash is a
      // plain sha256, and which the target holds in memory), and an append appends something.
      const baseSize = r.uint();
      if (baseSize >= LARGE_FILE_BYTES) throw malformed(`an append's base of ${baseSize} bytes is not a small file`);
      const baseHash = readHash(r, false);
      const hash = readHash(r, false);
      const tail = r.bytes(LARGE_FILE_BYTES - 1 - baseSize);
      if (tail.length === 0) throw malformed("an append with an empty tail");
      return { t: "file_append", path, meta, baseSize, baseHash, hash, tail };
    }
    case KIND.file_begin: {
      const path = r.str(MAX_STR);
      const meta = readMeta(r);
      const mode = r.u8() === 1 ? "patch" : "whole";
      const baseHash = readHash(r, true);
      return { t: "file_begin", path, meta, mode, baseHash, resumeFrom: r.uint() };
    }
    case KIND.load:
      return { t: "load", busyPermille: Math.min(1000, r.uint()) };
    case KIND.partial: {
      const path = r.str(MAX_STR);
      const blocks = r.uint();
      return { t: "partial", path, blocks, prefixHash: readHash(r, false) };
    }
    case KIND.torn: {
      const path = r.str(MAX_STR);
      const baseHash = readHash(r, false);
      const blocks = r.uint();
      const prefixHash = readHash(r, false);
      return { t: "torn", path, baseHash, blocks, prefixHash, dirtyBlocks: r.uint() };
    }
    case KIND.data: {
      const offset = r.uint();
      return { t: "data", offset, data: r.bytes(MAX_DATA_BYTES) };
    }
    case KIND.zero: {
      const offset = r.uint();
      return { t: "zero", offset, length: r.uint() };
    }
    case KIND.file_end: {
      const size = r.uint();
      return { t: "file_end", size, hash: readHash(r, false) };
    }
    case KIND.delete:
      return { t: "delete", path: r.str(MAX_STR) };
    case KIND.end: {
      const digest = readHash(r, false);
      const v: number[] = [];
      for (let i = 0; i < 15; i++) v.push(r.uint());
      const [entriesScanned, entriesChanged, entriesDeleted, bytesRead, bytesChanged, wireBytes, rawBytes] = v as [
        number, number, number, number, number, number, number,
      ];
      return {
        t: "end",
        digest,
        stats: {
          entriesScanned,
          entriesChanged,
          entriesDeleted,
          bytesRead,
          bytesChanged,
          wireBytes,
          rawBytes,
          ownersNotPreserved: v[7] as number,
          specialFilesSkipped: v[8] as number,
          previousRoundEndMs: v[9] as number,
          setidStripped: v[10] as number,
          vouchedUnverified: v[11] as number,
          vouchedUnverifiedBytes: v[12] as number,
          listsReceived: v[13] as number,
          listBytesReceived: v[14] as number,
          firstSpecialFile: r.str(MAX_STR),
        },
      };
    }
    case KIND.error:
      return { t: "error", code: r.str(64), message: r.str(MAX_STR) };
    default:
      throw malformed(`unknown record kind ${kind}`);
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Frames: [codec u8][raw length u32 LE][payload]. codec 0 = raw, 1 = zstd (exactly one frame with its content size).

const CODEC_RAW = 0;
const CODEC_ZSTD = 1;
const HEADER_BYTES = 5;
/** A compressed frame is sent raw unless it saves at least 3%. */
const INCOMPRESSIBLE_RATIO = 0.97;

export class FrameEncoder {
  private compressor: Compressor | undefined;
  private level = 0;

  /** 0 = no compression; otherwise a zstd level. Can change between frames. */
  setLevel(level: number): void {
    if (level === this.level) return;
    this.level = level;
    if (level > 0) {
      this.compressor ??= new Compressor();
      this.compressor.setParameters({ compressionLevel: level });
    }
  }
  get currentLevel(): number {
    return this.level;
  }

  /** A writer whose batches leave room for the frame header. */
  static writer(): ByteWriter {
    return new ByteWriter(FRAME_TARGET_BYTES + 64 * 1024, HEADER_BYTES);
  }

  /** Turns a writer's batch (from FrameEncoder.writer()) into a frame. Returns the frame and its raw size. */
  encode(w: ByteWriter): { frame: Buffer; rawBytes: number } {
    const buf = w.take();
    const raw = buf.subarray(HEADER_BYTES);
    if (this.level > 0 && this.compressor !== undefined) {
      const z = this.compressor.compress(raw);
      if (z.length < raw.length * INCOMPRESSIBLE_RATIO) return { frame: withHeader(CODEC_ZSTD, raw.length, z), rawBytes: raw.length };
    }
    buf[0] = CODEC_RAW;
    buf.writeUInt32LE(raw.length, 1);
    return { frame: buf, rawBytes: raw.length };
  }
}

function withHeader(codec: number, rawLength: number, payload: Buffer): Buffer {
  const out = Buffer.allocUnsafe(HEADER_BYTES + payload.length);
  out[0] = codec;
  out.writeUInt32LE(rawLength, 1);
  payload.copy(out, HEADER_BYTES);
  return out;
}

export class FrameDecoder {
  private readonly decompressor = new Decompressor();

  /** Returns the frame's raw bytes; refuses anything whose declared or actual size exceeds MAX_FRAME_RAW_BYTES. */
  decode(frame: Uint8Array): Buffer {
    if (frame.length < HEADER_BYTES) throw malformed("frame shorter than its header");
    const buf = Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength);
    const codec = buf[0];
    const rawLength = buf.readUInt32LE(1);
    if (rawLength > MAX_FRAME_RAW_BYTES) throw malformed(`frame of ${rawLength} bytes exceeds ${MAX_FRAME_RAW_BYTES}`);
    const payload = buf.subarray(HEADER_BYTES);
    if (codec === CODEC_RAW) {
      if (payload.length !== rawLength) throw malformed("raw frame length mismatch");
      return payload;
    }
    if (codec !== CODEC_ZSTD) throw malformed(`unknown frame codec ${codec}`);
    // Check the zstd frame before decompressing: exactly one frame, with a declared content size equal to ours, so a
    // decompression bomb is refused before any allocation.
    let compressedSize: number;
    let contentSize: number | null;
    try {
      compressedSize = zstdBinding.findFrameCompressedSize(payload);
      contentSize = zstdBinding.getFrameContentSize(payload);
    } catch (cause) {
      throw new TheseusError("protocol", "the peer sent a corrupt zstd frame", { cause });
    }
    if (compressedSize !== payload.length) throw malformed("zstd payload is not exactly one frame");
    if (contentSize !== rawLength) throw malformed("zstd frame content size differs from the declared size");
    let out: Buffer;
    try {
      out = this.decompressor.decompress(payload);
    } catch (cause) {
      throw new TheseusError("protocol", "the peer sent a corrupt zstd frame", { cause });
    }
    if (out.length !== rawLength) throw malformed("decompressed size differs from the declared size");
    return out;
  }
}

/** Decodes all records of one raw frame. */
export function decodeFrameRecords(raw: Buffer): SyncRecord[] {
  const r = new ByteReader(raw);
  const out: SyncRecord[] = [];
  while (!r.done) out.push(decodeRecord(r));
  return out;
}
