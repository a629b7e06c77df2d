// The torn-file journal of the target: a large file patched in place is, while the patch runs, neither its old nor its
// new content. Patching in place stays (copying a 2 GiB file to change 1% of it would defeat the purpose), but the
// target records in its state directory, before the file changes, that the file is torn and how far:
//
//   blocks [0, blocks)             hold verified new content, made durable (fdatasync) before they were recorded; their
//                                  hashes are kept in `torn.list` (its list hash in the header);
//   blocks [blocks, dirtyBlocks)   may hold anything: the patch was writing there when it was cut;
//   blocks [dirtyBlocks, ...)      still hold the base content (`baseHash`): the journal is extended before the patch
//                                  writes past it.
//
// A torn file is never indexed as complete (its index entry has no hash, so no digest can agree while it is torn) and
// the next round is told the three ranges: the source skips the verified prefix if its own content still starts with
// it, sends every block of the unknown range, and diffs the rest against the base, so a kill -9 mid-patch costs what
// the cut patch had left, not a full resend. The journal is cleared once the file is complete and verified, or
// replaced, or deleted. Journals live in the state directory (torn/<sha256 of the path>.json and .list), never in the
// volume, like the rest of the target's state; one per file, since a later round may patch other files first.
import fs from "node:fs";
import path from "node:path";
import { sha256 } from "./state.js";
import { BlockList } from "./block-list.js";
import { validatePeerPath } from "./paths.js";

export interface TornFile {
  path: string;
  baseHash: Buffer;
  /** Blocks of verified new content at the start of the file. */
  blocks: number;
  /** Their hashes (`blocks` of them; sparse, block-list.ts). */
  prefixList: BlockList;
  /** Blocks from `blocks` to here are unknown; from here on the file holds its base content. */
  dirtyBlocks: number;
}

interface Header {
  path: string;
  baseHash: string;
  blocks: number;
  prefixHash: string;
  dirtyBlocks: number;
}

const DIR = "torn";

/** The torn files killed or failed rounds left (whole journals only; a damaged one is dropped). */
export function loadTornFiles(stateDir: string): Map<string, { file: TornFile; journal: TornJournal }> {
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
    const file = journal.load();
    if (file !== undefined) out.set(file.path, { file, journal });
  }
  // Lists whose header is gone (cleared half-way): nothing refers to them.
  for (const n of names) if (n.endsWith(".list") && !names.includes(n.slice(0, -".list".length) + ".json")) fs.rmSync(path.join(stateDir, DIR, n), { force: true });
  return out;
}

/** The journal of the file at `p` (relative to the volume root). */
export function tornJournalFor(stateDir: string, p: string): TornJournal {
  return new TornJournal(stateDir, sha256(Buffer.from(p, "utf8")).toString("hex"));
}

export class TornJournal {
  private readonly header: string;
  private readonly list: string;
  /** What the header says now (undefined: nothing torn). */
  private current: Header | undefined;

  constructor(stateDir: string, key: string) {
    fs.mkdirSync(path.join(stateDir, DIR), { recursive: true });
    this.header = path.join(stateDir, DIR, `${key}.json`);
    this.list = path.join(stateDir, DIR, `${key}.list`);
  }

  /** The torn file this journal describes, if it is whole; a damaged journal is dropped. */
  load(): TornFile | undefined {
    let h: Partial<Header>;
    try {
      h = JSON.parse(fs.readFileSync(this.header, "utf8")) as Partial<Header>;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") this.clear();
      return undefined;
    }
    try {
      if (typeof h.path !== "string" || typeof h.baseHash !== "string" || typeof h.prefixHash !== "string") throw new Error("fields");
      if (!Number.isSafeInteger(h.blocks) || !Number.isSafeInteger(h.dirtyBlocks)) throw new Error("fields");
      const blocks = h.blocks as number;
      const dirtyBlocks = h.dirtyBlocks as number;
      validatePeerPath(h.path);
      const baseHash = Buffer.from(h.baseHash, "hex");
      const encoded = fs.readFileSync(this.list);
      if (!sha256(encoded).equals(Buffer.from(h.prefixHash, "hex"))) throw new Error("list");
      const prefixList = BlockList.decode(encoded);
      if (baseHash.length !== 32 || blocks < 0 || dirtyBlocks < 0 || prefixList.length !== blocks) throw new Error("sizes");
      this.current = { path: h.path, baseHash: h.baseHash, blocks, prefixHash: h.prefixHash, dirtyBlocks };
        return { path: h.path, baseHash, blocks, prefixList, dirtyBlocks };
    } catch {
      // A journal we cannot trust cannot say which blocks are good. The file it names still has no valid cache entry
      // (its ctime changed), so it is re-read and compared whole: costly, but never wrong.
      this.clear();
      return undefined;
    }
  }

  /**
   * Marks `p` torn before its first block changes: its first `blocks` blocks (hashes in `prefix`) are verified new
   * content, everything up to `dirtyBlocks` unknown.
   */
  begin(p: string, baseHash: Uint8Array, prefix: BlockList, blocks: number, dirtyBlocks: number): void {
    const base = Buffer.from(baseHash).toString("hex");
    // The header first says "nothing verified": a crash while the list is rewritten then leaves a journal that is
    // whole and merely pessimistic, never one whose list does not match.
    this.writeHeader({ path: p, baseHash: base, blocks: 0, prefixHash: sha256(new Uint8Array(0)).toString("hex"), dirtyBlocks });
    const encoded = writeList(this.list, prefix.prefix(blocks));
    if (blocks === 0) return;
    this.writeHeader({ path: p, baseHash: base, blocks, prefixHash: sha256(encoded).toString("hex"), dirtyBlocks });
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

  /** Records the first `blocks` blocks as verified; the caller made them durable first. `list` holds their hashes. */
  checkpoint(blocks: number, list: BlockList): void {
    const c = this.current;
    if (c === undefined || blocks <= c.blocks) return;
    // Rewritten whole (the sparse encoding cannot simply be appended to: a zero run may continue across the
    // checkpoint). A crash between the list and the header leaves a journal whose list does not match its header:
    // it is dropped, and the file is re-read and compared whole (costly, never wrong).
    const encoded = writeList(this.list, list.prefix(blocks));
    this.writeHeader({ ...c, blocks, prefixHash: sha256(encoded).toString("hex"), dirtyBlocks: Math.max(c.dirtyBlocks, blocks) });
  }

  /** The file is complete and verified, or replaced, or gone: nothing is torn any more. */
  clear(): void {
    this.current = undefined;
    fs.rmSync(this.header, { force: true });
    fs.rmSync(this.list, { force: true });
  }

  private writeHeader(h: Header): void {
    writeDurably(this.header + ".tmp", Buffer.from(JSON.stringify(h)));
    fs.renameSync(this.header + ".tmp", this.header);
    this.current = h;
  }
}

/** Writes a list's canonical encoding durably (through a temporary name); returns the bytes written. */
function writeList(file: string, list: BlockList): Buffer {
  const encoded = Buffer.concat([...list.encode()]);
  writeDurably(file + ".tmp", encoded);
  fs.renameSync(file + ".tmp", file);
  return encoded;
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
