// Each side's persistent, stat-validated hash cache, kept in the volume's state directory (registry.ts says where and
// when the agent's own directory keeps it instead). Like git's index: an entry is trusted only while the file's
// inode, size, mtime and ctime are unchanged, so a restart loses nothing and a stale entry can only cost a re-read,
// never a wrong answer.
//
// The cache is one sorted file (walk order), streamed while the walk runs and rewritten each round, so memory stays
// O(1) in the number of files. Block-hash lists of large files live beside it in blocks/<content hash> (sparse:
// block-list.ts), loaded only when a large file changes.
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { TheseusError } from "../../common/index.js";
import { BLOCK_BYTES, ByteReader, ByteWriter, decodeEntry, encodeEntry, LARGE_FILE_BYTES } from "./codec.js";
import type { IndexEntry } from "./codec.js";
import { comparePaths } from "./paths.js";
import { BlockList, FINGERPRINT_BYTES, isZeroBlock, ZERO_BLOCK, ZERO_BLOCK_HASH } from "./block-list.js";

export interface CacheEntry extends IndexEntry {
  ino: number;
  mtimeMs: number;
  ctimeMs: number;
  /**
   * The source took this hash from the target's index without reading the file (a quick check after its cache was
   * lost: same size, mtime and mode). Trusted like any entry while the stat matches, and read within a per-round
   * budget until verified (VERIFY_BUDGET_BYTES). On a target: the source vouched for its copy (file_vouch).
   */
  vouched: boolean;
}

export interface StatLike {
  ino: number;
  size: number;
  mtimeMs: number;
  ctimeMs: number;
}

export function statMatches(c: CacheEntry, st: StatLike): boolean {
  return c.ino === st.ino && c.size === st.size && c.mtimeMs === st.mtimeMs && c.ctimeMs === st.ctimeMs;
}

const CHUNK_BYTES = 256 * 1024;

// Every entry file starts with a magic and its format version. A file of another format (an older agent's, which
// had no header, or a newer one's) is not read at all: it is only a cache, so the round re-reads or vouches as after a
// lost cache and writes the new format. The magic read as a little-endian u32 is above the 64 MiB batch bound of the
// headerless format, so an older reader given a new file also sees no entries rather than misreading them.
// Format 2: a flags byte after the stat fields (bit 0: vouched).
const FILE_MAGIC = Buffer.from("THSC", "latin1");
export const CACHE_FORMAT = 2;
const HEADER_BYTES = 8;
const FLAG_VOUCHED = 1;

function fileHeader(): Buffer {
  const h = Buffer.alloc(HEADER_BYTES);
  FILE_MAGIC.copy(h, 0);
  h.writeUInt32LE(CACHE_FORMAT, 4);
  return h;
}

/** Appends length-prefixed batches of entries to a file. */
export class EntryFileWriter {
  private readonly fd: number;
  private readonly w = new ByteWriter(CHUNK_BYTES + 16 * 1024);
  private last = "";
  private count = 0;
  constructor(readonly file: string) {
    this.fd = fs.openSync(file, "w", 0o600);
    writeFully(this.fd, fileHeader());
  }
  get entries(): number {
    return this.count;
  }
  /** Adds an entry with the stat fields that validate it (given apart, so callers need not build a new object). */
  addWithStat(e: IndexEntry, ino: number, mtimeMs: number, ctimeMs: number, vouched = false): void {
    if (this.count > 0 && comparePaths(this.last, e.path) >= 0) {
      throw new TheseusError("internal", `cache entries out of order: ${this.last} then ${e.path}`);
    }
    this.last = e.path;
    this.count++;
    encodeEntry(this.w, e);
    this.w.f64(ino);
    this.w.f64(mtimeMs);
    this.w.f64(ctimeMs);
    this.w.u8(vouched ? FLAG_VOUCHED : 0);
    if (this.w.length >= CHUNK_BYTES) this.flush();
  }
  add(e: CacheEntry): void {
    if (this.count > 0 && comparePaths(this.last, e.path) >= 0) {
      throw new TheseusError("internal", `cache entries out of order: ${this.last} then ${e.path}`);
    }
    this.last = e.path;
    this.count++;
    encodeEntry(this.w, e);
    this.w.f64(e.ino);
    this.w.f64(e.mtimeMs);
    this.w.f64(e.ctimeMs);
    this.w.u8(e.vouched ? FLAG_VOUCHED : 0);
    if (this.w.length >= CHUNK_BYTES) this.flush();
  }
  private flush(): void {
    if (this.w.length === 0) return;
    const body = this.w.take();
    const head = Buffer.allocUnsafe(4);
    head.writeUInt32LE(body.length, 0);
    fs.writeSync(this.fd, head);
    fs.writeSync(this.fd, body);
  }
  private closed = false;
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.flush();
    fs.closeSync(this.fd);
  }
  /** Closes and atomically replaces `dest` with this file. */
  commit(dest: string): void {
    this.close();
    fs.renameSync(this.file, dest);
  }
  abort(): void {
    if (!this.closed) fs.closeSync(this.fd);
    this.closed = true;
    fs.rmSync(this.file, { force: true });
  }
}

/** Reads a cache file sequentially; `seek(path)` advances monotonically and returns the entry for `path`, if any. */
export class EntryFileReader {
  private fd: number | undefined;
  private batch: CacheEntry[] = [];
  private i = 0;
  /** The file exists but is of another format (or too short for a header): read as empty. */
  readonly rejected: boolean = false;
  constructor(file: string) {
    try {
      this.fd = fs.openSync(file, "r");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
      return;
    }
    const head = Buffer.alloc(HEADER_BYTES);
    let n = 0;
    try {
      // From the current position (null), which the batches are then read from.
      n = fs.readSync(this.fd, head, 0, HEADER_BYTES, null);
    } catch {
      // unreadable: as damaged
    }
    if (n !== HEADER_BYTES || !head.subarray(0, 4).equals(FILE_MAGIC) || head.readUInt32LE(4) !== CACHE_FORMAT) {
      this.rejected = true;
      this.finish();
    }
  }
  private load(): boolean {
    if (this.fd === undefined) return false;
    const head = Buffer.alloc(4);
    if (fs.readSync(this.fd, head) < 4) return this.finish();
    const n = head.readUInt32LE(0);
    if (n > 64 * 1024 * 1024) return this.finish();
    const body = Buffer.allocUnsafe(n);
    if (fs.readSync(this.fd, body) < n) return this.finish();
    const r = new ByteReader(body);
    this.batch = [];
    this.i = 0;
    try {
      while (!r.done) {
        // Extend the decoded object in place (no spread): this loop runs once per file per round.
        const e = decodeEntry(r) as CacheEntry;
        e.ino = r.f64();
        e.mtimeMs = r.f64();
        e.ctimeMs = r.f64();
        e.vouched = (r.u8() & FLAG_VOUCHED) !== 0;
        this.batch.push(e);
      }
    } catch {
      // A damaged cache is only a cache: stop using it, every later file is re-read.
      return this.finish();
    }
    return true;
  }
  private finish(): false {
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
    this.batch = [];
    this.i = 0;
    return false;
  }
  /** The next entry in order, or undefined at the end. */
  next(): CacheEntry | undefined {
    while (this.i >= this.batch.length) if (!this.load()) return undefined;
    return this.batch[this.i++];
  }
  peek(): CacheEntry | undefined {
    while (this.i >= this.batch.length) if (!this.load()) return undefined;
    return this.batch[this.i];
  }
  seek(p: string): CacheEntry | undefined {
    for (;;) {
      const e = this.peek();
      if (e === undefined) return undefined;
      const c = comparePaths(e.path, p);
      if (c > 0) return undefined;
      this.i++;
      if (c === 0) return e;
    }
  }
  close(): void {
    this.finish();
  }
}

/**
 * What one round may read to verify files vouched for after a lost cache (on the source: entry(), the quick check;
 * on the target: its index walk, for copies the source vouched for), whichever bound comes first, on each side.
 * Verifying everything at once would make the next round the slow cache-lost round again (a round reading every file
 * of ~1 GB and 20,000 files measured 7.7x rsync-tls's incremental). Measured on the shared 2-core VM (20,000 files of
 * 1-8 KiB and a 256 MiB file): the round verifying the 256 MiB file took 0.9-1.5 s beside 0.8-1.1 s for rounds
 * without changes, the one verifying 1,024 small files 0.6 s; so 20,000 small files are verified within 20 rounds,
 * none of them slow. Files that do not fit what is left wait for a later round; one larger than the whole byte
 * budget is never verified by it, only read when its stat changes (and then patched against the block list the
 * target offered when the source lost its state: list-offers.ts). The stats' vouchedUnverified says how many remain.
 */
export const VERIFY_BUDGET_BYTES = 256 * 1024 * 1024;
export const VERIFY_BUDGET_FILES = 1024;

/** One round's verification budget (VERIFY_BUDGET_*). */
export class VerifyBudget {
  files = 0;
  bytes = 0;
  /** Takes a vouched file of `size` bytes out of the budget, if it fits what is left. */
  take(size: number): boolean {
    if (this.files >= VERIFY_BUDGET_FILES || this.bytes + size > VERIFY_BUDGET_BYTES) return false;
    this.files++;
    this.bytes += size;
    return true;
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Content hashes. Small files: sha256 of the content. Large files (>= LARGE_FILE_BYTES): sha256 of the canonical
// encoding of their list of 4 KiB block hashes (block-list.ts: runs of zero blocks count once), so that a target
// patching a few blocks in place can compute the new file hash from its stored list without re-reading the file, and
// still verifies every block it received.

export { ZERO_BLOCK, ZERO_BLOCK_HASH };

export function isLarge(size: number): boolean {
  return size >= LARGE_FILE_BYTES;
}

export function sha256(data: Uint8Array): Buffer {
  return crypto.hash("sha256", data, "buffer");
}

export function isZero(block: Uint8Array): boolean {
  if (block.length === BLOCK_BYTES) return isZeroBlock(block);
  for (const b of block) if (b !== 0) return false;
  return true;
}

export function blockCount(size: number): number {
  return Math.ceil(size / BLOCK_BYTES);
}

// Filesystems whose st_blocks counts every allocated block, delayed allocation included (statfs f_type magic): on
// them a file with no block allocated is all holes, and is hashed (and sent) without reading it. Node has no
// SEEK_DATA, and reading 600 GiB of holes takes minutes; elsewhere (FUSE, network filesystems, ZFS) st_blocks may
// lag or be 0 for data, so the file is read.
const COUNTS_BLOCKS = new Set([0xef53 /* ext2/3/4 */, 0x58465342 /* xfs */, 0x9123683e /* btrfs */, 0x01021994 /* tmpfs */]);

/** Whether a large file is provably all holes: nothing allocated, on a filesystem that counts what it allocates. */
export function allHoles(abs: string, st: { size: number; blocks: number }): boolean {
  if (!isLarge(st.size) || st.blocks !== 0) return false;
  try {
    return COUNTS_BLOCKS.has(fs.statfsSync(abs).type);
  } catch {
    return false;
  }
}

/** The list of a file of `size` bytes of zeros: a run, and the hash of a short last block. */
export function holesList(size: number): BlockList {
  const list = new BlockList();
  list.appendZeros(Math.floor(size / BLOCK_BYTES));
  if (size % BLOCK_BYTES !== 0) list.append(sha256(ZERO_BLOCK.subarray(0, size % BLOCK_BYTES)));
  return list;
}

export interface FileHash {
  hash: Buffer;
  /** The block list for large files. */
  blocks: BlockList | undefined;
  /** Bytes actually read (0 for a file of holes). */
  bytesRead: number;
  /** The size hashed: the file's size when it held still. */
  size: number;
}

/**
 * Reads and hashes a file the way the protocol defines its content hash; `holes`: known to be all holes (allHoles);
 * `fingerprints`: a source's read, whose list later rounds diff against (block-list.ts).
 */
export function hashFile(fd: number, size: number, readBuf: Buffer, holes = false, fingerprints = false): FileHash {
  if (!isLarge(size)) {
    const data = readAll(fd, size, readBuf);
    return { hash: sha256(data), blocks: undefined, bytesRead: data.length, size: data.length };
  }
  if (holes) {
    const blocks = holesList(size);
    return { hash: blocks.digest(), blocks, bytesRead: 0, size };
  }
  const blocks = new BlockList();
  let pos = 0;
  for (;;) {
    const n = fs.readSync(fd, readBuf, 0, readBuf.length, pos);
    if (n === 0) break;
    blocks.appendData(readBuf.subarray(0, n), fingerprints);
    pos += n;
    if (n % BLOCK_BYTES !== 0) break; // short read: end of file
  }
  return { hash: blocks.digest(), blocks, bytesRead: pos, size: pos };
}

/** Reads up to `size` bytes (the file may have shrunk or grown since it was stat'ed; what we read is what we hash). */
function readAll(fd: number, size: number, readBuf: Buffer): Buffer {
  const buf = size <= readBuf.length ? readBuf : Buffer.allocUnsafe(size);
  let pos = 0;
  while (pos < size) {
    const n = fs.readSync(fd, buf, pos, size - pos, pos);
    if (n === 0) break;
    pos += n;
  }
  return buf.subarray(0, pos);
}

export function readSmall(fd: number, size: number, readBuf: Buffer): Buffer {
  return readAll(fd, size, readBuf);
}

// ---------------------------------------------------------------------------------------------------------------------

/** The stat of each list file has() found intact, by path, for this process's lifetime (bounded: cleared when full). */
const intactLists = new Map<string, string>();
const MAX_INTACT_LISTS = 100_000;

/** Block lists by content hash, each stored in its canonical encoding, so a file's name is the sha256 of its bytes. */
export class BlockStore {
  readonly dir: string;
  constructor(stateDir: string) {
    this.dir = path.join(stateDir, "blocks");
    fs.mkdirSync(this.dir, { recursive: true });
  }
  private file(hash: Uint8Array): string {
    return path.join(this.dir, Buffer.from(hash).toString("hex"));
  }
  /**
   * Whether a list is stored under `hash`, not read: a damaged one is found when get() reads it. For a source, whose
   * get() failing only costs that file a full read; has() reads and hashes 8 MiB per GiB of file, every round.
   */
  stored(hash: Uint8Array): boolean {
    return fs.existsSync(this.file(hash));
  }
  /**
   * Whether the list is stored intact (read and hashed in pieces, never decoded). A list found intact is not read
   * again while its file keeps the stat it had: a long-running target asked every round about a 1 GiB file's list
   * read and hashed 8 MiB each time (5% of a round that changes nothing). get() still verifies what it decodes.
   */
  has(hash: Uint8Array): boolean {
    const file = this.file(hash);
    let fd: number;
    try {
      fd = fs.openSync(file, "r");
    } catch {
      return false;
    }
    try {
      const st = fs.fstatSync(fd);
      const key = `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
      if (intactLists.get(file) === key) return true;
      const h = crypto.createHash("sha256");
      const buf = Buffer.allocUnsafe(256 * 1024);
      for (let n = fs.readSync(fd, buf); n > 0; n = fs.readSync(fd, buf)) h.update(buf.subarray(0, n));
      if (!h.digest().equals(hash)) return false;
      if (intactLists.size >= MAX_INTACT_LISTS) intactLists.clear();
      intactLists.set(file, key);
      return true;
    } catch {
      return false;
    } finally {
      fs.closeSync(fd);
    }
  }
  get(hash: Uint8Array): BlockList | undefined {
    let list: BlockList;
    try {
      const b = fs.readFileSync(this.file(hash));
      // Self-verifying: a list is stored under the hash of its content.
      if (!sha256(b).equals(hash)) return undefined;
      list = BlockList.decode(b);
    } catch {
      return undefined;
    }
    // Its fingerprints, when a source stored them: missing or damaged ones only make the next diff hash every block.
    try {
      const f = fs.readFileSync(this.file(hash) + FINGERPRINTS_SUFFIX);
      const body = f.subarray(0, f.length - FINGERPRINT_BYTES);
      if (f.length >= FINGERPRINT_BYTES && fingerprintsCheck([body]).equals(f.subarray(body.length))) list.attachFingerprints(body);
    } catch {
      // none stored
    }
    return list;
  }
  /** Stores a list (once: its name is its hash) and, when it has them, its fingerprints beside it. */
  put(hash: Uint8Array, blocks: BlockList): void {
    const f = this.file(hash);
    if (!fs.existsSync(f)) writeAtomically(f, blocks.encode());
    if (!blocks.hasFingerprints || blocks.dataBlocks === 0 || fs.existsSync(f + FINGERPRINTS_SUFFIX)) return;
    // The fingerprints end with a check of their own, so that a damaged file is told from a good one.
    const pieces = [...blocks.encodeFingerprints()];
    writeAtomically(f + FINGERPRINTS_SUFFIX, [...pieces, fingerprintsCheck(pieces)]);
  }
  /** The hashes of the lists stored (not verified: a damaged one is found when it is read). */
  *held(): Generator<Buffer> {
    for (const name of fs.readdirSync(this.dir)) if (LIST_NAME.test(name)) yield Buffer.from(name, "hex");
  }

  /**
   * A stored list's encoding in pieces of at most `pieceBytes`, with the list's size; undefined when it is not stored.
   * Read as it is sent (a list is up to 8 MiB per GiB of data), never whole.
   */
  pieces(hash: Uint8Array, pieceBytes: number): { total: number; pieces: () => Generator<Buffer> } | undefined {
    const file = this.file(hash);
    let total: number;
    try {
      total = fs.statSync(file).size;
    } catch {
      return undefined;
    }
    function* read(): Generator<Buffer> {
      const fd = fs.openSync(file, "r");
      try {
        for (let pos = 0; pos < total; ) {
          const buf = Buffer.allocUnsafe(Math.min(pieceBytes, total - pos));
          const n = fs.readSync(fd, buf, 0, buf.length, pos);
          if (n === 0) throw new TheseusError("internal", `the stored block list ${path.basename(file)} shrank while it was read`);
          pos += n;
          yield buf.subarray(0, n);
        }
      } finally {
        fs.closeSync(fd);
      }
    }
    return { total, pieces: read };
  }

  /**
   * Receives a list the peer offers, piece by piece, into `<hash>.tmp`: commit() renames it into place when its
   * sha256 is `hash` (false, and nothing kept, otherwise). Nothing of it is held in memory.
   */
  receive(hash: Uint8Array): ListReceipt {
    const file = this.file(hash);
    const fd = fs.openSync(file + ".tmp", "w", 0o600);
    const h = crypto.createHash("sha256");
    let open = true;
    const close = (): void => {
      if (open) fs.closeSync(fd);
      open = false;
    };
    return {
      write(piece: Uint8Array): void {
        writeFully(fd, piece);
        h.update(piece);
      },
      commit(): boolean {
        close();
        if (!h.digest().equals(hash)) {
          fs.rmSync(file + ".tmp", { force: true });
          return false;
        }
        fs.renameSync(file + ".tmp", file);
        return true;
      },
      abort(): void {
        close();
        fs.rmSync(file + ".tmp", { force: true });
      },
    };
  }

  /** Removes lists (and their fingerprints) no longer referenced by the cache just committed. */
  retainOnly(keep: ReadonlySet<string>): void {
    for (const name of fs.readdirSync(this.dir)) {
      if (!keep.has(name.endsWith(FINGERPRINTS_SUFFIX) ? name.slice(0, -FINGERPRINTS_SUFFIX.length) : name)) {
        fs.rmSync(path.join(this.dir, name), { force: true });
      }
    }
  }
}

const FINGERPRINTS_SUFFIX = ".fp";
/** A stored list's file name: its hash in hex (beside it: `.fp` fingerprints, `.tmp` writes in progress). */
const LIST_NAME = /^[0-9a-f]{64}$/;

/** A list being received from the peer (BlockStore.receive). */
export interface ListReceipt {
  write(piece: Uint8Array): void;
  /** Keeps the list when its sha256 is its hash; returns whether it did. */
  commit(): boolean;
  abort(): void;
}

/** The check a fingerprint file ends with: the first 16 bytes of the sha256 of the rest (4 MiB per GiB of data). */
function fingerprintsCheck(body: Iterable<Uint8Array>): Buffer {
  const h = crypto.createHash("sha256");
  for (const piece of body) h.update(piece);
  return h.digest().subarray(0, FINGERPRINT_BYTES);
}

/** Writes `file` whole or not at all: the pieces go to `file.tmp` (swept if a crash leaves it), renamed over it. */
export function writeAtomically(file: string, pieces: Iterable<Uint8Array>): void {
  const fd = fs.openSync(file + ".tmp", "w", 0o600);
  try {
    for (const piece of pieces) writeFully(fd, piece);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(file + ".tmp", file);
}

export function writeFully(fd: number, data: Uint8Array): void {
  let done = 0;
  while (done < data.length) done += fs.writeSync(fd, data, done, data.length - done);
}

export interface RoundMemo {
  lastRoundEndMs: number;
}

export function readMemo(stateDir: string): RoundMemo {
  try {
    const v = JSON.parse(fs.readFileSync(path.join(stateDir, "round.json"), "utf8")) as Partial<RoundMemo>;
    return { lastRoundEndMs: typeof v.lastRoundEndMs === "number" ? v.lastRoundEndMs : 0 };
  } catch {
    return { lastRoundEndMs: 0 };
  }
}

export function writeMemo(stateDir: string, memo: RoundMemo): void {
  const f = path.join(stateDir, "round.json");
  fs.writeFileSync(f + ".tmp", JSON.stringify(memo));
  fs.renameSync(f + ".tmp", f);
}

/** The metadata half of an entry as both sides compare it. */
export function toMtimeUs(mtimeMs: number): number {
  return Math.round(mtimeMs * 1000);
}

/**
 * A time in whole microseconds as fs.utimes/futimes/lutimes must get it to store exactly that microsecond:
 * - as a numeric string, because Node replaces a negative *number* (any time before 1970) with the current time,
 *   silently (a pre-1970 mtime came out as the copy time, and every later round saw it changed again);
 * - aimed half a microsecond away from zero, because libuv truncates the fraction toward zero at microseconds.
 */
export function utimeArg(us: number): string {
  return String((us >= 0 ? us + 0.5 : us - 0.5) / 1e6);
}
