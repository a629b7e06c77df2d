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
import crypto from "node:crypto";
import { TheseusError } from "../../common/index.js";
import { BLOCK_BYTES } from "./codec.js";

export const ZERO_BLOCK = Buffer.alloc(BLOCK_BYTES);
export const ZERO_BLOCK_HASH = crypto.hash("sha256", ZERO_BLOCK, "buffer");

const HASH_BYTES = 32;
/** Hashes per chunk (256 KiB): a chunk is allocated on demand, growing up to this size. */
const CHUNK_BLOCKS = 8192;
const RUN_BYTES = HASH_BYTES + 8;

type Segment = { zeros: number } | { hashes: Buffer; n: number };

export function isZeroBlock(block: Uint8Array): boolean {
  if (block.length !== BLOCK_BYTES) return false;
  return Buffer.from(block.buffer, block.byteOffset, block.length).equals(ZERO_BLOCK);
}

/** The hash of one block, as the list records it: a full zero block is ZERO_BLOCK_HASH without hashing it. */
export function blockHash(block: Uint8Array): Buffer {
  return isZeroBlock(block) ? ZERO_BLOCK_HASH : crypto.hash("sha256", block, "buffer");
}

export class BlockList {
  private readonly segs: Segment[] = [];
  private count = 0;
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
    for (const s of this.segs) n += "hashes" in s ? s.hashes.length : 16;
    return n;
  }

  appendZeros(n: number): void {
    if (n <= 0) return;
    const last = this.segs[this.segs.length - 1];
    if (last !== undefined && "zeros" in last) last.zeros += n;
    else this.segs.push({ zeros: n });
    this.count += n;
  }

  /** Appends one block's hash (ZERO_BLOCK_HASH extends a zero run). */
  append(hash: Uint8Array): void {
    if (hash.length !== HASH_BYTES) throw new TheseusError("internal", "a block hash is 32 bytes");
    if (ZERO_BLOCK_HASH.equals(hash)) return this.appendZeros(1);
    this.appendHashes(hash, 0, 1);
  }

  /** Hashes and appends the blocks of `data` (the file's blocks from the current end of the list on). */
  appendData(data: Uint8Array): void {
    for (let o = 0; o < data.length; o += BLOCK_BYTES) this.append(blockHash(data.subarray(o, Math.min(o + BLOCK_BYTES, data.length))));
  }

  /** Appends `n` non-zero hashes from `src` at byte offset `first` (none of them is ZERO_BLOCK_HASH). */
  private appendHashes(src: Uint8Array, first: number, n: number): void {
    let i = 0;
    while (i < n) {
      let last = this.segs[this.segs.length - 1];
      if (last === undefined || "zeros" in last || last.n === CHUNK_BLOCKS) {
        last = { hashes: Buffer.allocUnsafe(Math.min(CHUNK_BLOCKS, Math.max(64, n - i)) * HASH_BYTES), n: 0 };
        this.segs.push(last);
      }
      if (last.n === last.hashes.length / HASH_BYTES) {
        // Grow the chunk (doubling, up to CHUNK_BLOCKS): a 1 MiB file's list needs 8 KiB, not 256.
        const grown = Buffer.allocUnsafe(Math.min(CHUNK_BLOCKS, last.n * 2) * HASH_BYTES);
        last.hashes.copy(grown, 0, 0, last.n * HASH_BYTES);
        last.hashes = grown;
      }
      const take = Math.min(n - i, last.hashes.length / HASH_BYTES - last.n);
      Buffer.from(src.buffer, src.byteOffset, src.byteLength).copy(
        last.hashes,
        last.n * HASH_BYTES,
        first + i * HASH_BYTES,
        first + (i + take) * HASH_BYTES,
      );
      last.n += take;
      this.count += take;
      i += take;
    }
  }

  /** The hash of block `b` (ZERO_BLOCK_HASH in a zero run). Cheapest when called in ascending order. */
  at(b: number): Buffer {
    if (b < 0 || b >= this.count) throw new TheseusError("internal", `block ${b} is outside a list of ${this.count}`);
    if (b < this.curStart) {
      this.curSeg = 0;
      this.curStart = 0;
    }
    for (;;) {
      const s = this.segs[this.curSeg] as Segment;
      const n = "zeros" in s ? s.zeros : s.n;
      if (b < this.curStart + n) {
        if ("zeros" in s) return ZERO_BLOCK_HASH;
        const o = (b - this.curStart) * HASH_BYTES;
        return s.hashes.subarray(o, o + HASH_BYTES);
      }
      this.curStart += n;
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
        else this.appendHashes(s.hashes, (a - start) * HASH_BYTES, e - a);
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

  /** sha256 of the canonical encoding: a large file's content hash. */
  digest(): Buffer {
    const h = crypto.createHash("sha256");
    for (const piece of this.encode()) h.update(piece);
    return h.digest();
  }

  /** Parses a canonical encoding (from the agent's own state; refuses anything malformed or not canonical). */
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
      // A stretch of data hashes up to the next run marker, copied in bulk.
      let e = o + HASH_BYTES;
      while (e + HASH_BYTES <= buf.length && ZERO_BLOCK_HASH.compare(buf, e, e + HASH_BYTES) !== 0) e += HASH_BYTES;
      if (e + HASH_BYTES > buf.length && e !== buf.length) throw badList();
      out.appendHashes(buf, o, (e - o) / HASH_BYTES);
      o = e;
      lastWasRun = false;
    }
    return out;
  }
}

function badList(): TheseusError {
  return new TheseusError("data_loss", "a stored block list is malformed");
}
