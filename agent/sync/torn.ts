// The torn-file journal of the target: a large file patched in place is, while the patch runs, neither its old nor its
// new content. Patching in place stays (copying a 2 GiB file to change 1% of it would defeat the purpose), but the
// target records in its state directory, before the file changes, that the file is torn and how far:
//
//   blocks [0, blocks)             hold verified new content, made durable (fdatasync) before they were recorded: the
//                                  base's blocks except those the patch changed, whose hashes are in `torn.changes`;
//   blocks [blocks, dirtyBlocks)   may hold anything: the patch was writing there when it was cut;
//   blocks [dirtyBlocks, ...)      still hold the base content (`baseHash`): the journal is extended before the patch
//                                  writes past it.
//
// A torn file is never indexed as complete (its index entry has no hash, so no digest can agree while it is torn) and
// the next round is told the three ranges: the source skips the verified prefix if its own content still starts with
// it, sends every block of the unknown range, and diffs the rest against the base, so a kill -9 mid-patch costs what
// the cut patch had left, not a full resend. The journal is cleared once the file is complete and verified, or
// replaced, or deleted. Journals live in the state directory (torn/<sha256 of the path>.json and .changes), never in
// the volume, like the rest of the target's state; one per file, since a later round may patch other files first.
//
// The prefix is journaled as its changes against the base, whose list the target's block store holds while the file
// is torn (a patch needs it too): a checkpoint then costs what the patch changed, where rewriting the prefix's whole
// list cost 8 MiB per GiB patched, a sha256 of it and an fdatasync of it at each of about ten checkpoints (a quarter
// of the target's CPU in a final round that rewrote 1% of a 1 GiB database).
import fs from "node:fs";
import path from "node:path";
import { sha256 } from "./state.js";
import { BlockList, HASH_BYTES } from "./block-list.js";
import { validatePeerPath } from "./paths.js";

export interface TornFile {
  path: string;
  baseHash: Buffer;
  /** Blocks of verified new content at the start of the file. */
  blocks: number;
  /** Their hashes (`blocks` of them; sparse, block-list.ts). */
  prefixList: BlockList;
  /** Which of them differ from the base's. */
  changes: ChangedBlocks;
  /** Blocks from `blocks` to here are unknown; from here on the file holds its base content. */
  dirtyBlocks: number;
}

interface Header {
  format: number;
  path: string;
  baseHash: string;
  blocks: number;
  /** sha256 of the changes file. */
  changesHash: string;
  dirtyBlocks: number;
}

/** 2: the prefix as changes against the base (1 held the prefix's whole list; such a journal is dropped). */
const FORMAT = 2;
const DIR = "torn";
const RUN_HEAD_BYTES = 16;

/**
 * The blocks a patch wrote (data or zeros), as sorted runs [start, end) of block numbers. A patch writes in ascending
 * order (the target refuses a block before the last one), so a run is only ever appended or extended.
 */
export class ChangedBlocks {
  /** start0, end0, start1, end1, ... */
  private readonly runs: number[] = [];

  add(from: number, to: number): void {
    if (to <= from) return;
    const n = this.runs.length;
    const lastEnd = n > 0 ? (this.runs[n - 1] as number) : -1;
    if (from < lastEnd) throw new RangeError(`blocks ${from}-${to} come before the last change, which ends at ${lastEnd}`);
    if (from === lastEnd) this.runs[n - 1] = to;
    else this.runs.push(from, to);
  }

  /** The changes within the first `blocks` blocks (as ChangedBlocks, for a patch resumed there). */
  prefix(blocks: number): ChangedBlocks {
    const out = new ChangedBlocks();
    for (let i = 0; i < this.runs.length; i += 2) out.add(this.runs[i] as number, Math.min(this.runs[i + 1] as number, blocks));
    return out;
  }

  /** The journal's encoding of the changes within the first `blocks` blocks: per run its start, length and hashes. */
  encode(list: BlockList, blocks: number): Buffer {
    let bytes = 0;
    for (let i = 0; i < this.runs.length && (this.runs[i] as number) < blocks; i += 2) {
      bytes += RUN_HEAD_BYTES + (Math.min(this.runs[i + 1] as number, blocks) - (this.runs[i] as number)) * HASH_BYTES;
    }
    const out = Buffer.allocUnsafe(bytes);
    let o = 0;
    for (let i = 0; i < this.runs.length && (this.runs[i] as number) < blocks; i += 2) {
      const start = this.runs[i] as number;
      const end = Math.min(this.runs[i + 1] as number, blocks);
      out.writeBigUInt64LE(BigInt(start), o);
      out.writeBigUInt64LE(BigInt(end - start), o + 8);
      o += RUN_HEAD_BYTES;
      for (let b = start; b < end; b++, o += HASH_BYTES) list.at(b).copy(out, o);
    }
    return out;
  }

  /**
   * The first `blocks` blocks' list: the base's, with the changes `encoded` applied. Throws on anything malformed:
   * runs out of order, past `blocks`, or leaving a block beyond the base unaccounted for.
   */
  static applyTo(base: BlockList, encoded: Buffer, blocks: number): { list: BlockList; changes: ChangedBlocks } {
    const list = new BlockList();
    const changes = new ChangedBlocks();
    let at = 0;
    let o = 0;
    while (o < encoded.length) {
      if (o + RUN_HEAD_BYTES > encoded.length) throw new Error("a cut run");
      const start = Number(encoded.readBigUInt64LE(o));
      const n = Number(encoded.readBigUInt64LE(o + 8));
      o += RUN_HEAD_BYTES;
      if (start < at || n <= 0 || start + n > blocks || start > base.length || o + n * HASH_BYTES > encoded.length) throw new Error("a bad run");
      list.copyFrom(base, at, start);
      for (let b = 0; b < n; b++, o += HASH_BYTES) list.append(encoded.subarray(o, o + HASH_BYTES));
      changes.add(start, start + n);
      at = start + n;
    }
    if (at < blocks && blocks > base.length) throw new Error("blocks beyond the base are not all changes");
    list.copyFrom(base, at, blocks);
    return { list, changes };
  }
}

/**
 * The torn files killed or failed rounds left (whole journals only; a damaged one is dropped, and so is one whose
 * base list `baseList` does not give).
 */
export function loadTornFiles(stateDir: string, baseList: (hash: Buffer) => BlockList | undefined): Map<string, { file: TornFile; journal: TornJournal }> {
  const out = new Map<string, { file: TornFile; journal: TornJournal }>();
  let names: string[];
  try {
    names = fs.readdirSync(path.join(stateDir, DIR));
  } catch {
    return out;
  }
  for (const n of names) {
    if (n.endsWith(".tmp")) fs.rmSync(path.join(stateDir, DIR, n), { force: true });
    if (!n.endsWith(".json")) continue;
    const journal = new TornJournal(stateDir, n.slice(0, -".json".length));
    const file = journal.load(baseList);
    if (file !== undefined) out.set(file.path, { file, journal });
  }
  // Changes whose header is gone (cleared half-way), and the whole lists of format 1: nothing refers to them.
  for (const n of names) {
    const orphan = n.endsWith(".changes") && !names.includes(n.slice(0, -".changes".length) + ".json");
    if (orphan || n.endsWith(".list")) fs.rmSync(path.join(stateDir, DIR, n), { force: true });
  }
  return out;
}

/** The journal of the file at `p` (relative to the volume root). */
export function tornJournalFor(stateDir: string, p: string): TornJournal {
  return new TornJournal(stateDir, sha256(Buffer.from(p, "utf8")).toString("hex"));
}

const NO_CHANGES = Buffer.alloc(0);

export class TornJournal {
  private readonly header: string;
  private readonly changes: string;
  /** What the header says now (undefined: nothing torn). */
  private current: Header | undefined;
  /** The changes file as last written: a checkpoint with no new change since rewrites only the header. */
  private written: Buffer | undefined;

  constructor(stateDir: string, key: string) {
    fs.mkdirSync(path.join(stateDir, DIR), { recursive: true });
    this.header = path.join(stateDir, DIR, `${key}.json`);
    this.changes = path.join(stateDir, DIR, `${key}.changes`);
  }

  /** The torn file this journal describes, if it is whole and its base list is at hand; otherwise it is dropped. */
  load(baseList: (hash: Buffer) => BlockList | undefined): TornFile | undefined {
    let h: Partial<Header>;
    try {
      h = JSON.parse(fs.readFileSync(this.header, "utf8")) as Partial<Header>;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") this.clear();
      return undefined;
    }
    try {
      if (h.format !== FORMAT || typeof h.path !== "string" || typeof h.baseHash !== "string" || typeof h.changesHash !== "string") throw new Error("fields");
      if (!Number.isSafeInteger(h.blocks) || !Number.isSafeInteger(h.dirtyBlocks)) throw new Error("fields");
      const blocks = h.blocks as number;
      const dirtyBlocks = h.dirtyBlocks as number;
      validatePeerPath(h.path);
      const baseHash = Buffer.from(h.baseHash, "hex");
      if (baseHash.length !== 32 || blocks < 0 || dirtyBlocks < 0) throw new Error("sizes");
      const encoded = blocks === 0 ? NO_CHANGES : fs.readFileSync(this.changes);
      if (!sha256(encoded).equals(Buffer.from(h.changesHash, "hex"))) throw new Error("changes");
      const base = baseList(baseHash);
      if (base === undefined) throw new Error("base");
      const { list: prefixList, changes } = ChangedBlocks.applyTo(base, encoded, blocks);
      if (prefixList.length !== blocks) throw new Error("sizes");
      this.current = { format: FORMAT, path: h.path, baseHash: h.baseHash, blocks, changesHash: h.changesHash, dirtyBlocks };
      this.written = encoded;
      return { path: h.path, baseHash, blocks, prefixList, changes, dirtyBlocks };
    } catch {
      // A journal we cannot trust cannot say which blocks are good. The file it names still has no valid cache entry
      // (its ctime changed), so it is re-read and compared whole: costly, but never wrong.
      this.clear();
      return undefined;
    }
  }

  /**
   * Marks `p` torn before its first block changes: its first `blocks` blocks are verified new content (the base's
   * but for `changes`, whose hashes `list` holds), everything up to `dirtyBlocks` unknown.
   */
  begin(p: string, baseHash: Uint8Array, list: BlockList, changes: ChangedBlocks, blocks: number, dirtyBlocks: number): void {
    const base = Buffer.from(baseHash).toString("hex");
    // The header first says "nothing verified": a crash while the changes are rewritten then leaves a journal that is
    // whole and merely pessimistic, never one whose changes do not match.
    this.writeHeader({ format: FORMAT, path: p, baseHash: base, blocks: 0, changesHash: sha256(NO_CHANGES).toString("hex"), dirtyBlocks });
    this.written = NO_CHANGES;
    if (blocks === 0) return;
    const encoded = this.writeChanges(changes.encode(list, blocks));
    this.writeHeader({ format: FORMAT, path: p, baseHash: base, blocks, changesHash: sha256(encoded).toString("hex"), dirtyBlocks });
  }

  get dirtyBlocks(): number {
    return this.current?.dirtyBlocks ?? 0;
  }

  /** Records that the patch may now write up to block `dirtyBlocks` (called before it does). */
  extendDirty(dirtyBlocks: number): void {
    const c = this.current;
    if (c === undefined || dirtyBlocks <= c.dirtyBlocks) return;
    this.writeHeader({ ...c, dirtyBlocks });
  }

  /**
   * Records the first `blocks` blocks as verified; the caller made them durable first. `changes` are those the patch
   * changed, their hashes in `list`. The same header write extends the unknown range to `dirtyBlocks`, if that is
   * further (the patch's writes up to its next checkpoint then need no header of their own).
   */
  checkpoint(blocks: number, list: BlockList, changes: ChangedBlocks, dirtyBlocks = 0): void {
    const c = this.current;
    if (c === undefined || blocks <= c.blocks) return;
    // A crash between the changes and the header leaves a journal whose changes do not match its header: it is
    // dropped, and the file is re-read and compared whole (costly, never wrong).
    const encoded = this.writeChanges(changes.encode(list, blocks));
    this.writeHeader({ ...c, blocks, changesHash: sha256(encoded).toString("hex"), dirtyBlocks: Math.max(c.dirtyBlocks, blocks, dirtyBlocks) });
  }

  /** The file is complete and verified, or replaced, or gone: nothing is torn any more. */
  clear(): void {
    this.current = undefined;
    this.written = undefined;
    fs.rmSync(this.header, { force: true });
    fs.rmSync(this.changes, { force: true });
  }

  /** Writes the changes durably (through a temporary name), unless the file holds them already; returns them. */
  private writeChanges(encoded: Buffer): Buffer {
    if (this.written !== undefined && this.written.equals(encoded) && encoded.length > 0) return encoded;
    writeDurably(this.changes + ".tmp", encoded);
    fs.renameSync(this.changes + ".tmp", this.changes);
    this.written = encoded;
    return encoded;
  }

  private writeHeader(h: Header): void {
    writeDurably(this.header + ".tmp", Buffer.from(JSON.stringify(h)));
    fs.renameSync(this.header + ".tmp", this.header);
    this.current = h;
  }
}

function writeDurably(file: string, data: Uint8Array): void {
  const fd = fs.openSync(file, "w", 0o600);
  try {
    let done = 0;
    while (done < data.length) done += fs.writeSync(fd, data, done, data.length - done);
    fs.fdatasyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
