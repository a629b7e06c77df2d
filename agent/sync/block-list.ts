// A large file's block list: the sha256 of each of its 4 KiB blocks, in order. Stored sparsely: a run of all-zero
// blocks (a hole, or zeros written) is one count, whatever its length, and the hashes of other blocks sit in chunks of
// at most CHUNK_BLOCKS, never one Buffer per file. So a list costs memory and disk in proportion to the blocks that
// hold data, not to the size a file declares: a 64 GiB file of holes (issue 13, defect 2) costs a few bytes, and a file
// of 512 GiB or more, whose flat list would exceed Node's largest Buffer (defect 4), is just more chunks.
//
// The list's canonical encoding is also its on-disk form and what the content hash of a large file is taken over:
// every block with data is its 32-byte hash; every maximal run of zero blocks is ZERO_BLOCK_HASH followed by the run's
// length (u64 LE). No data block's hash equals ZERO_BLOCK_HASH (a full zero block is always part of a run), so the
// encoding is unambiguous, and runs being maximal makes it unique: both sides get the same hash for the same contents,
// and a hole costs O(1) to hash, not 32 bytes per 4 KiB (which for 600 GiB was seconds of sha256).
//
// A source's list also carries a fingerprint of each data block: its XXH3-128, which our addon computes at ~15 GB/s,
// a whole read's blocks per call, where sha256 manages 1.5 GB/s. Fingerprints only find what changed since the list was taken;
// they never leave the agent and never enter a content hash. A round re-reading a large file takes a block whose
// fingerprint is its base's as unchanged and reuses the base's sha256; every other block is hashed with sha256, sent,
// and verified by the target. The price: a block rewritten into one with the same XXH3-128 would be missed. That takes
// a crafted collision (XXH3 is not cryptographic; by chance it is 2^-128 per block), and the writer would have to be the
// application itself, which can already write what it likes into its own volume. rsync 3.2 makes the same choice with
// xxh128 for its block checksums.
import crypto from "node:crypto";
import { TheseusError } from "../../common/index.js";
import { BLOCK_BYTES } from "./codec.js";
import { nativeAddon } from "./native.js";

export const ZERO_BLOCK = Buffer.alloc(BLOCK_BYTES);
export const ZERO_BLOCK_HASH = crypto.hash("sha256", ZERO_BLOCK, "buffer");

export const HASH_BYTES = 32;
export const FINGERPRINT_BYTES = 16;
/** Hashes per chunk (256 KiB): a chunk is allocated on demand, growing up to this size. */
const CHUNK_BLOCKS = 8192;
const RUN_BYTES = HASH_BYTES + 8;
/** Blocks whose fingerprints matchingRun compares in one call while they all match. */
const MATCH_WINDOW = 16;

const { blockHashes, fingerprints } = nativeAddon;
export { blockHashes, fingerprints };

/** Scratch outputs of blockHashes for `bytes` of data, reused (grown on demand) across calls. */
let scratch = { shas: Buffer.alloc(0), fps: Buffer.alloc(0) };
function scratchFor(bytes: number): { shas: Buffer; fps: Buffer } {
  const blocks = Math.ceil(bytes / BLOCK_BYTES);
  if (scratch.shas.length < blocks * HASH_BYTES) {
    scratch = { shas: Buffer.allocUnsafe(blocks * HASH_BYTES), fps: Buffer.allocUnsafe(blocks * FINGERPRINT_BYTES) };
  }
  return scratch;
}

/** A data block's fingerprint (XXH3-128, seed 0): for finding changed blocks, never for verifying them. */
export function fingerprint(block: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(FINGERPRINT_BYTES);
  fingerprints(block.subarray(0, BLOCK_BYTES), out);
  return out;
}
export const ZERO_BLOCK_FINGERPRINT = fingerprint(ZERO_BLOCK);

/** `fps`: the data blocks' fingerprints, parallel to `hashes`; undefined once the list has lost them (see append). */
type Segment = { zeros: number } | { hashes: Buffer; fps: Buffer | undefined; n: number };

export function isZeroBlock(block: Uint8Array): boolean {
  if (block.length !== BLOCK_BYTES) return false;
  return Buffer.from(block.buffer, block.byteOffset, block.length).equals(ZERO_BLOCK);
}

export class BlockList {
  private readonly segs: Segment[] = [];
  private count = 0;
  /**
   * Whether every data block has its fingerprint. A list loses them for good when a block is appended without one
   * (a target's lists, a list read back without its fingerprint file): the next source round then hashes every block.
   */
  private fingerprinted = true;
  /** The cursor of at(): the segment it is in and that segment's first block. */
  private curSeg = 0;
  private curStart = 0;

  /** Number of blocks. */
  get length(): number {
    return this.count;
  }

  /** Bytes of memory the list holds (hash chunks; runs are a few bytes each). */
  get memoryBytes(): number {
    let n = 0;
    for (const s of this.segs) n += "hashes" in s ? s.hashes.length + (s.fps?.length ?? 0) : 16;
    return n;
  }

  /** Whether every data block's fingerprint is known (an empty list or one of zeros trivially has them all). */
  get hasFingerprints(): boolean {
    return this.fingerprinted;
  }

  appendZeros(n: number): void {
    if (n <= 0) return;
    const last = this.segs[this.segs.length - 1];
    if (last !== undefined && "zeros" in last) last.zeros += n;
    else this.segs.push({ zeros: n });
    this.count += n;
  }

  /**
   * Appends one block's hash (ZERO_BLOCK_HASH extends a zero run) and, on a source, its fingerprint. A data block
   * without one costs the list all of its fingerprints.
   */
  append(hash: Uint8Array, fp?: Uint8Array): void {
    if (hash.length !== HASH_BYTES) throw new TheseusError("internal", "a block hash is 32 bytes");
    if (fp !== undefined && fp.length !== FINGERPRINT_BYTES) throw new TheseusError("internal", "a block fingerprint is 16 bytes");
    if (ZERO_BLOCK_HASH.equals(hash)) return this.appendZeros(1);
    this.appendHashes(hash, 0, 1, fp, 0);
  }

  /**
   * Hashes and appends the blocks of `data` (the file's blocks from the current end of the list on); `fingerprints`:
   * also take each data block's fingerprint (a source's lists, which later rounds diff against).
   */
  appendData(data: Uint8Array, fingerprints = false): void {
    const { shas, fps } = scratchFor(data.length);
    const blocks = blockHashes(data, fingerprints ? fps : null, shas);
    // A full zero block's sha256 is ZERO_BLOCK_HASH itself: the runs between zero blocks are appended in bulk, found
    // by one native search each rather than one comparison per block.
    const end = blocks * HASH_BYTES;
    let run = 0;
    for (;;) {
      const z = nextZeroHash(shas, run * HASH_BYTES, end);
      const b = z < 0 ? blocks : z / HASH_BYTES;
      if (b > run) this.appendHashes(shas, run * HASH_BYTES, b - run, fingerprints ? fps : undefined, run * FINGERPRINT_BYTES);
      if (z < 0) return;
      this.appendZeros(1);
      run = b + 1;
    }
  }

  /**
   * Appends `n` non-zero hashes from `src` at byte offset `first` (none of them is ZERO_BLOCK_HASH), with their
   * fingerprints from `fps` at byte offset `fpFirst` when known.
   */
  private appendHashes(src: Uint8Array, first: number, n: number, fps: Uint8Array | undefined, fpFirst: number): void {
    if (fps === undefined) this.dropFingerprints();
    let i = 0;
    while (i < n) {
      let last = this.segs[this.segs.length - 1];
      if (last === undefined || "zeros" in last || last.n === CHUNK_BLOCKS) {
        const blocks = Math.min(CHUNK_BLOCKS, Math.max(64, n - i));
        last = {
          hashes: Buffer.allocUnsafe(blocks * HASH_BYTES),
          fps: this.fingerprinted ? Buffer.allocUnsafe(blocks * FINGERPRINT_BYTES) : undefined,
          n: 0,
        };
        this.segs.push(last);
      }
      if (last.n === last.hashes.length / HASH_BYTES) {
        // Grow the chunk (doubling, up to CHUNK_BLOCKS): a 1 MiB file's list needs 8 KiB, not 256.
        const blocks = Math.min(CHUNK_BLOCKS, last.n * 2);
        last.hashes = grow(last.hashes, blocks * HASH_BYTES, last.n * HASH_BYTES);
        if (last.fps !== undefined) last.fps = grow(last.fps, blocks * FINGERPRINT_BYTES, last.n * FINGERPRINT_BYTES);
      }
      const take = Math.min(n - i, last.hashes.length / HASH_BYTES - last.n);
      copyInto(last.hashes, last.n * HASH_BYTES, src, first + i * HASH_BYTES, take * HASH_BYTES);
      if (last.fps !== undefined && fps !== undefined) {
        copyInto(last.fps, last.n * FINGERPRINT_BYTES, fps, fpFirst + i * FINGERPRINT_BYTES, take * FINGERPRINT_BYTES);
      }
      last.n += take;
      this.count += take;
      i += take;
    }
  }

  /**
   * Appends `n` non-zero hashes that stay in `src` from byte offset `first` on: segments of at most CHUNK_BLOCKS that
   * are views of it, each full for appendHashes, which copies it into a chunk of its own before growing it.
   */
  private adoptHashes(src: Buffer, first: number, n: number): void {
    this.dropFingerprints();
    for (let i = 0; i < n; i += CHUNK_BLOCKS) {
      const take = Math.min(CHUNK_BLOCKS, n - i);
      const at = first + i * HASH_BYTES;
      this.segs.push({ hashes: src.subarray(at, at + take * HASH_BYTES), fps: undefined, n: take });
      this.count += take;
    }
  }

  private dropFingerprints(): void {
    if (!this.fingerprinted) return;
    this.fingerprinted = false;
    for (const s of this.segs) if ("hashes" in s) s.fps = undefined;
  }

  /** The hash of block `b` (ZERO_BLOCK_HASH in a zero run). Cheapest when called in ascending order. */
  at(b: number): Buffer {
    const s = this.seek(b);
    if ("zeros" in s) return ZERO_BLOCK_HASH;
    const o = (b - this.curStart) * HASH_BYTES;
    return s.hashes.subarray(o, o + HASH_BYTES);
  }

  /** Whether block `b` is in a zero run. */
  isZeroAt(b: number): boolean {
    return "zeros" in this.seek(b);
  }

  /** Whether block `b` holds data whose fingerprint is the 16 bytes of `fps` at `offset` (no allocation: per-block use). */
  fingerprintMatches(b: number, fps: Buffer, offset: number): boolean {
    const s = this.seek(b);
    if ("zeros" in s || s.fps === undefined) return false;
    const o = (b - this.curStart) * FINGERPRINT_BYTES;
    return s.fps.compare(fps, offset, offset + FINGERPRINT_BYTES, o, o + FINGERPRINT_BYTES) === 0;
  }

  /** Whether block `b` holds data whose sha256 is the 32 bytes of `shas` at `offset` (no allocation: per-block use). */
  hashMatches(b: number, shas: Buffer, offset: number): boolean {
    const s = this.seek(b);
    if ("zeros" in s) return false;
    const o = (b - this.curStart) * HASH_BYTES;
    return s.hashes.compare(shas, offset, offset + HASH_BYTES, o, o + HASH_BYTES) === 0;
  }

  /**
   * How many blocks from `b` on (at most `max`, and within the segment holding b) hold data whose fingerprints are
   * the ones in `fps` from `offset` on: fingerprintMatches for a run, 16 blocks per comparison where they all match.
   * A file re-read at the final round has 1% of its blocks changed, so most of its 262,144 blocks per GiB are in such
   * runs (measured: about 50 ms less CPU per GiB; the round's wall time did not move beyond its noise).
   */
  matchingRun(b: number, fps: Buffer, offset: number, max: number): number {
    const s = this.seek(b);
    if ("zeros" in s || s.fps === undefined) return 0;
    const base = s.fps;
    const limit = Math.min(max, s.n - (b - this.curStart));
    let o = (b - this.curStart) * FINGERPRINT_BYTES;
    let k = 0;
    while (k + MATCH_WINDOW <= limit) {
      const bytes = MATCH_WINDOW * FINGERPRINT_BYTES;
      if (base.compare(fps, offset, offset + bytes, o, o + bytes) !== 0) break;
      k += MATCH_WINDOW;
      o += bytes;
      offset += bytes;
    }
    while (k < limit && base.compare(fps, offset, offset + FINGERPRINT_BYTES, o, o + FINGERPRINT_BYTES) === 0) {
      k++;
      o += FINGERPRINT_BYTES;
      offset += FINGERPRINT_BYTES;
    }
    return k;
  }

  /** Moves the cursor to the segment holding block `b` and returns it (block b is at b - curStart in it). */
  private seek(b: number): Segment {
    if (b < 0 || b >= this.count) throw new TheseusError("internal", `block ${b} is outside a list of ${this.count}`);
    if (b < this.curStart) {
      this.curSeg = 0;
      this.curStart = 0;
    }
    for (;;) {
      const s = this.segs[this.curSeg] as Segment;
      if (b < this.curStart + ("zeros" in s ? s.zeros : s.n)) return s;
      this.curStart += "zeros" in s ? s.zeros : s.n;
      this.curSeg++;
    }
  }

  /**
   * Calls `fn` for the runs of blocks in [from, to): `zero` runs are all-zero blocks, others hold data. Bulk access
   * for a range where the new contents are all holes: only the blocks that held data changed.
   */
  forEachRun(from: number, to: number, fn: (start: number, end: number, zero: boolean) => void): void {
    let start = 0;
    for (const s of this.segs) {
      const n = "zeros" in s ? s.zeros : s.n;
      const a = Math.max(start, from);
      const e = Math.min(start + n, to);
      if (a < e) fn(a, e, "zeros" in s);
      start += n;
      if (start >= to) return;
    }
  }

  /** Appends blocks [from, to) of `src`, runs as runs. */
  copyFrom(src: BlockList, from: number, to: number): void {
    let start = 0;
    for (const s of src.segs) {
      const n = "zeros" in s ? s.zeros : s.n;
      const a = Math.max(start, from);
      const e = Math.min(start + n, to);
      if (a < e) {
        if ("zeros" in s) this.appendZeros(e - a);
        else this.appendHashes(s.hashes, (a - start) * HASH_BYTES, e - a, s.fps, (a - start) * FINGERPRINT_BYTES);
      }
      start += n;
      if (start >= to) return;
    }
  }

  /** The first `n` blocks, as a new list. */
  prefix(n: number): BlockList {
    const out = new BlockList();
    out.copyFrom(this, 0, Math.min(n, this.count));
    return out;
  }

  /** The canonical encoding, in pieces (no piece larger than a chunk). */
  *encode(): Generator<Buffer> {
    for (const s of this.segs) {
      if ("hashes" in s) {
        yield s.hashes.subarray(0, s.n * HASH_BYTES);
        continue;
      }
      const run = Buffer.allocUnsafe(RUN_BYTES);
      ZERO_BLOCK_HASH.copy(run, 0);
      run.writeBigUInt64LE(BigInt(s.zeros), HASH_BYTES);
      yield run;
    }
  }

  /** The data blocks' fingerprints in list order, how a source stores them beside the list (see hasFingerprints). */
  *encodeFingerprints(): Generator<Buffer> {
    for (const s of this.segs) if ("hashes" in s && s.fps !== undefined) yield s.fps.subarray(0, s.n * FINGERPRINT_BYTES);
  }

  /** Number of blocks that hold data (each has a hash and, on a source, a fingerprint). */
  get dataBlocks(): number {
    let n = 0;
    for (const s of this.segs) if ("hashes" in s) n += s.n;
    return n;
  }

  /**
   * Gives a list decoded without fingerprints the ones stored beside it (encodeFingerprints' bytes). Returns false,
   * changing nothing, when they do not fit the list (a stale or cut file): the list then simply has none.
   */
  attachFingerprints(buf: Buffer): boolean {
    if (buf.length !== this.dataBlocks * FINGERPRINT_BYTES) return false;
    let o = 0;
    for (const s of this.segs) {
      if (!("hashes" in s)) continue;
      // A view, like the hashes decode() keeps, where the chunk is full (appendHashes copies both before it grows
      // them); a chunk with room to grow gets a copy with as much room.
      const fps = buf.subarray(o, o + s.n * FINGERPRINT_BYTES);
      const room = s.hashes.length / HASH_BYTES;
      s.fps = room === s.n ? fps : Buffer.concat([fps], room * FINGERPRINT_BYTES);
      o += s.n * FINGERPRINT_BYTES;
    }
    this.fingerprinted = true;
    return true;
  }

  /** sha256 of the canonical encoding: a large file's content hash. */
  digest(): Buffer {
    const h = crypto.createHash("sha256");
    for (const piece of this.encode()) h.update(piece);
    return h.digest();
  }

  /**
   * Parses a canonical encoding (from the agent's own state; refuses anything malformed or not canonical). The list
   * keeps views of `buf`, not copies (a 1 GiB file's list is 8 MiB, read each round it changes): `buf` must not be
   * written afterwards. Appending to the list copies a view before it grows it.
   */
  static decode(buf: Buffer): BlockList {
    const out = new BlockList();
    let o = 0;
    let lastWasRun = false;
    while (o < buf.length) {
      if (o + HASH_BYTES > buf.length) throw badList();
      if (ZERO_BLOCK_HASH.compare(buf, o, o + HASH_BYTES) === 0) {
        if (o + RUN_BYTES > buf.length || lastWasRun) throw badList();
        const n = buf.readBigUInt64LE(o + HASH_BYTES);
        if (n === 0n || n > BigInt(Number.MAX_SAFE_INTEGER)) throw badList();
        out.appendZeros(Number(n));
        o += RUN_BYTES;
        lastWasRun = true;
        continue;
      }
      // A stretch of data hashes up to the next run marker, found by one native search and copied in bulk.
      const marker = nextZeroHash(buf, o + HASH_BYTES, buf.length);
      const e = marker < 0 ? o + HASH_BYTES * Math.floor((buf.length - o) / HASH_BYTES) : marker;
      if (marker < 0 && e !== buf.length) throw badList();
      out.adoptHashes(buf, o, (e - o) / HASH_BYTES);
      o = e;
      lastWasRun = false;
    }
    return out;
  }
}

/**
 * The offset of the first ZERO_BLOCK_HASH in `buf` at a multiple of HASH_BYTES from `from` (itself one) and ending by
 * `end`, or -1. Buffer.indexOf searches natively; a match straddling two hashes is no marker, and the search goes on.
 */
function nextZeroHash(buf: Buffer, from: number, end: number): number {
  for (let at = from; at + HASH_BYTES <= end; ) {
    const i = buf.indexOf(ZERO_BLOCK_HASH, at);
    if (i < 0 || i + HASH_BYTES > end) return -1;
    if ((i - from) % HASH_BYTES === 0) return i;
    at = i + 1;
  }
  return -1;
}

function grow(buf: Buffer, bytes: number, used: number): Buffer {
  const grown = Buffer.allocUnsafe(bytes);
  buf.copy(grown, 0, 0, used);
  return grown;
}

function copyInto(dst: Buffer, at: number, src: Uint8Array, from: number, bytes: number): void {
  Buffer.from(src.buffer, src.byteOffset, src.byteLength).copy(dst, at, from, from + bytes);
}

function badList(): TheseusError {
  return new TheseusError("data_loss", "a stored block list is malformed");
}
