// The target half of a round. It streams its index of the volume to the source (from its own stat-validated hash
// cache, so unchanged files are not re-read), applies the source's records as they arrive, verifies every file
// against the source's hash before it becomes visible, and at the end computes the volume digest and compares it with
// the source's.
//
// Safety against a hostile or broken source: every path is validated; records must arrive in strictly increasing walk
// order, which lets the target keep the chain of verified (lstat'ed, real) parent directories of the current path as a
// stack, so nothing is ever written through a symlink, into a device or fifo, or below something that is not a
// directory; files are opened with O_NOFOLLOW; sizes are bounded by the decoder.
//
// Staging: new content is written into ".theseus-partial" at the volume root (same filesystem, so rename is atomic and
// no copy is needed), then renamed into place once verified. The directory exists only while a round runs; the walk
// hides it. Large files whose target copy matches the source's base are patched in place instead (copying a 2 GiB
// file to change 1% of it would defeat the purpose): the target is not serving the app during pre-copy, and a patched
// file is journaled as torn until it is complete and verified (torn.ts), so a patch cut short is never taken for a
// complete file and the next round sends only what it had left.
import fs from "node:fs";
import path from "node:path";
import { sleep, systemErrorCode, TheseusError, throwIfAborted } from "../../common/index.js";
import type { Logger } from "../../common/index.js";
import {
  BLOCK_BYTES,
  decodeFrameRecords,
  encodeRecord,
  FRAME_TARGET_BYTES,
  FrameDecoder,
  FrameEncoder,
  LARGE_FILE_BYTES,
  PROTOCOL_VERSION,
} from "./codec.js";
import type { IndexEntry, Meta, RoundStatsWire, SyncRecord } from "./codec.js";
import { comparePaths, isWithin, MAX_PATH_LENGTH, parentOf, validatePeerPath } from "./paths.js";
import {
  allHoles,
  BlockStore,
  blockCount,
  EntryFileReader,
  EntryFileWriter,
  hashFile,
  isLarge,
  isZero,
  readSmall,
  sha256,
  statMatches,
  VerifyBudget,
  utimeArg,
  writeAtomically,
  writeMemo,
  ZERO_BLOCK,
} from "./state.js";
import { BlockList } from "./block-list.js";
import type { CacheEntry } from "./state.js";
import { shortPath, walk, walkError, metaOf, VolumeDigest } from "./walk.js";
import type { WalkStat } from "./walk.js";
import { acquireVolumeLock, LOCK_NAME } from "./volume-lock.js";
import { CACHE_DIR } from "./cache-dir.js";
import type { VolumeLock } from "./volume-lock.js";
import { STAGING_DIR, StagingDir } from "./staging.js";
import { idleLimited, LoopTurns, syncTimeouts, withKeepalive } from "./idle.js";
import type { SyncTimeouts } from "./idle.js";
import { ChangedBlocks, loadTornFiles, tornJournalFor } from "./torn.js";
import { HeldLists, offerRecords } from "./list-offers.js";
import { ownerTag, sweepLeftovers } from "./leftovers.js";

const OWN_TAG = ownerTag();
import type { TornFile, TornJournal } from "./torn.js";

export { STAGING_DIR };
/** Largest file the target accepts (16 TiB): bounds what a hostile peer's offsets can make us allocate or write. */
const MAX_FILE_BYTES = 2 ** 44;
const O_NOFOLLOW = fs.constants.O_NOFOLLOW;

export interface SyncTargetOptions {
  root: string;
  stateDir: string;
  logger: Logger;
  /** Apply numeric uid/gid (default: when running as root). */
  preserveOwner?: boolean;
  /** Called at most every 250 ms while the round runs, with cumulative counters. */
  onProgress?: (progress: RoundProgress) => void;
  /** Who writes, as the volume's lock names it to a second writer that is refused. */
  writer?: string;
  /** Default: from the environment (idle.ts). */
  timeouts?: SyncTimeouts;
  /**
   * Keep set-user-ID/set-group-ID bits of files. Default: kept only when the agent does not run as root, or when
   * THESEUS_KEEP_SETID=1; a root agent otherwise drops them, so that a source cannot plant setuid-root programs.
   */
  keepSetid?: boolean;
}

export interface RoundProgress {
  entries: number;
  bytes: number;
  wireBytes: number;
}

const PROGRESS_INTERVAL_MS = 250;
const LOAD_INTERVAL_MS = 250;
const FIRST_INDEX_FRAME_BYTES = 8 * 1024;

/** Opens the transport: given the target's outgoing frames, returns the source's frames. */
export type SyncConnect = (up: AsyncIterable<Uint8Array>) => AsyncIterable<Uint8Array>;

export interface RoundResult {
  /** Statistics as the source counted them (wire bytes, bytes read on the source, entries changed...). */
  source: RoundStatsWire;
  entriesApplied: number;
  bytesWritten: number;
  /** Bytes the target read to hash files its cache did not vouch for. */
  targetBytesRead: number;
  targetEntries: number;
  durationMs: number;
  /** The volume digest the target computed over what it holds now (hex). */
  digest: string;
  /** The digest the source computed over what it sent (hex): equal to `digest`, or the round failed with data_loss. */
  sourceDigest: string;
  /** Bytes changed per second of time since the previous round ended (0 for the first round). */
  dirtyBytesPerSecond: number;
  compressionRatio: number;
  ownersPreserved: boolean;
  /** Files received this round whose set-id bits the policy dropped (the source counts them too, in `source`). */
  setidStripped: number;
  /**
   * Copies whose hash the target took from the source unread (file_vouch, after its own cache was lost) and has not
   * verified yet, at the round's end: the target's side of the source's `vouchedUnverified`.
   */
  targetVouchedUnverified: number;
}

export async function runTargetRound(options: SyncTargetOptions, connect: SyncConnect, signal?: AbortSignal): Promise<RoundResult> {
  const root = path.resolve(options.root);
  const stateDir = path.resolve(options.stateDir);
  // A mover's state is the one exception: it lives in the volume's reserved cache directory, which no walk shows.
  if ((isWithin(stateDir, root) && !isWithin(stateDir, path.join(root, CACHE_DIR))) || isWithin(root, stateDir)) {
    throw new TheseusError("invalid_argument", `the state directory ${stateDir} must lie outside the volume ${root}`, {
      hint: "the app would see Theseus's files; choose a state directory elsewhere",
    });
  }
  // One round at a time per volume: two would share the staging directory and the index files.
  if (ACTIVE.has(root) || ACTIVE.has(stateDir)) {
    throw new TheseusError("failed_precondition", `a sync round into ${root} is already running`, {
      hint: "wait for it to finish, or cancel it, then start the next round",
    });
  }
  ACTIVE.add(root);
  ACTIVE.add(stateDir);
  let lock: VolumeLock | undefined;
  try {
    fs.mkdirSync(stateDir, { recursive: true });
    fs.mkdirSync(root, { recursive: true });
    // Across processes and agents too: the volume's lock file names who writes it.
    lock = acquireVolumeLock(root, options.writer ?? "a sync round");
    // Scratch files of killed rounds (their owners are dead; this round is the only one on this state directory).
    sweepLeftovers(stateDir, options.logger);
    const round = new TargetRound(root, stateDir, options.logger, options.preserveOwner ?? process.getuid?.() === 0, signal, options.onProgress, options.timeouts ?? syncTimeouts(), !(options.keepSetid ?? (process.getuid?.() !== 0 || process.env["THESEUS_KEEP_SETID"] === "1")));
    return await round.run(connect);
  } finally {
    lock?.release();
    ACTIVE.delete(root);
    ACTIVE.delete(stateDir);
  }
}

const ACTIVE = new Set<string>();

interface DirFrame {
  path: string;
  abs: string;
  /** Metadata the source declared, applied when the walk leaves the directory (after its children changed). */
  meta: Meta | undefined;
  st: fs.Stats;
  dirty: boolean;
}

interface OpenFile {
  path: string;
  abs: string;
  meta: Meta;
  mode: "whole" | "patch";
  fd: number;
  staging: string;
  /** The list of what was received, built in order: blocks not received are copied from `base` (patch). */
  list: BlockList;
  /** The list of the contents a patch applies to. */
  base: BlockList | undefined;
  /** Next offset expected (whole) or the end of the last write (patch). */
  offset: number;
  oldSize: number;
  /** Offset up to which a whole file's blocks are durable and recorded for resumption (a patch's: as verified). */
  checkpoint: number;
  /** A torn file's repair: every block up to here must be rewritten (the journal does not know what it holds). */
  mustWriteUntil: number;
}

interface PatchJournal {
  journal: TornJournal;
  begun: boolean;
  baseHash: Buffer;
  /** The verified prefix the patch started from (a torn file's, resumed). */
  prefixBlocks: number;
  /** The unknown range a torn file had before this patch, which stays unknown until rewritten. */
  dirty: number;
  /** The blocks that differ from the base: a torn file's within its verified prefix, then those this patch writes. */
  changes: ChangedBlocks;
}

/** What the target keeps of a large file whose round was cut: its first `blocks` blocks, verified, and their hashes. */
interface PartialFile {
  path: string;
  blocks: number;
  /** Exactly `blocks` blocks. */
  list: BlockList;
}

const RESUME_NAME = "resume";
/** A received large file is made durable and recorded every this many bytes, so a killed agent resumes from there. */
const CHECKPOINT_BYTES = 256 * 1024 * 1024;
/**
 * A patch in place is made durable and its verified prefix journaled once it has moved on by this many bytes and by half
 * the prefix journaled so far. Checkpoints at a fixed 16 MiB made a patch's journaling quadratic (a 1 GiB database with
 * 1% of its pages rewritten cost 64 checkpoints and 2.4 s of the final round's 3.9 s on the target, issue 12's
 * profile); growing steps cost about ten. The journal's unknown range reaches to where the next checkpoint falls plus
 * 16 MiB, and each checkpoint's own header write moves it there: extended apart, a quarter of the offset ahead, it
 * cost 16 more header writes, each an fdatasync and a rename, for that 1% patch. The price: a patch cut short resends
 * its unknown range, at most half of its verified prefix plus 32 MiB; a cut is the rare case, every round the common
 * one.
 */
const PATCH_CHECKPOINT_BYTES = 16 * 1024 * 1024;
const PATCH_DIRTY_AHEAD_BLOCKS = (16 * 1024 * 1024) / BLOCK_BYTES;

/** Whether a patch at `offset`, last journaled at `checkpoint`, is due for a checkpoint (see PATCH_CHECKPOINT_BYTES). */
function patchCheckpointDue(offset: number, checkpoint: number): boolean {
  return offset - checkpoint >= Math.max(PATCH_CHECKPOINT_BYTES, checkpoint / 2);
}

/**
 * How far the journal's unknown range reaches once a patch writes up to (or is checkpointed at) block `endBlock`: past
 * the next checkpoint (patchCheckpointDue), so that the writes before it need no header of their own.
 */
function dirtyAhead(endBlock: number): number {
  return endBlock + Math.max(PATCH_DIRTY_AHEAD_BLOCKS, Math.ceil(endBlock / 2)) + PATCH_DIRTY_AHEAD_BLOCKS;
}

interface LargeKnown {
  hash: Uint8Array;
  st: WalkStat;
}

/** Marks a path removed in the applied log (NUL never occurs in a real symlink target). */
const TOMBSTONE = "\0deleted";

class TargetRound {
  private readonly blocks: BlockStore;
  private readonly staging: StagingDir;
  private stagingSeq = 0;
  private readonly spoolFile: string;
  private readonly partialFile: string;
  private resume: PartialFile | undefined;
  /** The journal of the file being patched in place, begun at its first write. */
  private patchJournal: PatchJournal | undefined;
  /** Files cut patches left torn, until this round completes, replaces or deletes them (see torn.ts). */
  private torns = new Map<string, { file: TornFile; journal: TornJournal }>();
  private readonly appliedFile: string;
  private readonly applied: EntryFileWriter;
  private spool: EntryFileWriter | undefined;
  private readonly large = new Map<string, LargeKnown>();
  private readonly stack: DirFrame[] = [];
  private lastPath: string | undefined;
  private file: OpenFile | undefined;
  private sourceEnd: Extract<SyncRecord, { t: "end" }> | undefined;
  private readonly startedMs = Date.now();
  private readonly readBuf = Buffer.allocUnsafe(1024 * 1024);
  private entriesApplied = 0;
  private bytesWritten = 0;
  private targetBytesRead = 0;
  private targetEntries = 0;
  /** Small files sent in the index unread (entry_unhashed), each of which the source must answer. */
  private unhashedSent = 0;
  /** What this round reads to verify copies the source vouched for. */
  private readonly verify = new VerifyBudget();
  private walkDone = false;
  /** The digest and block lists of the index as walked: the final ones when the round changes nothing. */
  private readonly walkDigest: VolumeDigest;
  private readonly walkKeep = new Set<string>();
  private busyMs = 0;
  /** Bytes of the frames this target sent (its index, its load reports). */
  private upWireBytes = 0;
  private waitMs = 0;
  /** Aborted when the round ends: stops the load reports. */
  private readonly done = new AbortController();
  /** The block lists the source holds (its first records): the index offers it the others (list-offers.ts). */
  private readonly held = new HeldLists(this.done.signal);

  constructor(
    private readonly root: string,
    private readonly stateDir: string,
    private readonly logger: Logger,
    private readonly preserveOwner: boolean,
    private readonly signal: AbortSignal | undefined,
    private readonly onProgress: ((progress: RoundProgress) => void) | undefined,
    private readonly timeouts: SyncTimeouts,
    private readonly stripSetid: boolean,
  ) {
    this.blocks = new BlockStore(stateDir);
    this.staging = new StagingDir(root);
    this.spoolFile = path.join(stateDir, `spool.${OWN_TAG}`);
    this.partialFile = path.join(stateDir, "partial");
    this.appliedFile = path.join(stateDir, `applied.${OWN_TAG}`);
    this.applied = new EntryFileWriter(this.appliedFile);
    this.walkDigest = new VolumeDigest(preserveOwner);
  }

  async run(connect: SyncConnect): Promise<RoundResult> {
    // Leftovers of a round cut short are dropped (the files they would have become are resent, the rest is indexed),
    // except the large file that was being received, whose verified first blocks are resumed.
    // The staging directory is opened once and verified; everything after goes through its descriptor (staging.ts).
    const hadStaging = this.staging.openExisting();
    this.resume = hadStaging ? loadPartial(this.partialFile, this.staging.entry(RESUME_NAME)) : undefined;
    if (this.resume === undefined) {
      fs.rmSync(this.partialFile, { force: true });
      this.staging.remove();
    } else {
      this.staging.clear(RESUME_NAME);
      this.stagingReady = true;
    }
    this.torns = loadTornFiles(this.stateDir, (hash) => this.blocks.get(hash));
    for (const [p, t] of this.torns) {
      if (lstatOrUndefined(this.abs(p))?.isFile() === true) continue;
      // Removed or replaced since (by hand): nothing of it is left to repair.
      t.journal.clear();
      this.torns.delete(p);
    }
    const decoder = new FrameDecoder();
    let ok = false;
    let wireBytes = 0;
    let lastProgress = performance.now();
    let idleSince = performance.now();
    try {
      // Alive both ways: an empty frame up when the index is slow to come, and a source silent for the idle timeout
      // ends the round (and so releases the volume) instead of holding it for ever.
      const idleS = Math.round(this.timeouts.idleMs / 1000);
      const down = idleLimited(connect(withKeepalive(this.indexFrames(), this.timeouts.keepaliveMs)), this.timeouts.idleMs, () =>
        new TheseusError("deadline_exceeded", `the source sent nothing for ${idleS} s`, { hint: "the source agent is stuck or its link is down; run the round again" }),
      );
      for await (const frame of down) {
        const started = performance.now();
        this.waitMs += started - idleSince;
        throwIfAborted(this.signal);
        wireBytes += frame.length;
        if (this.onProgress !== undefined && performance.now() - lastProgress >= PROGRESS_INTERVAL_MS) {
          lastProgress = performance.now();
          // Both directions: the index this target sends up is traffic too.
          this.onProgress({ entries: this.entriesApplied, bytes: this.bytesWritten, wireBytes: wireBytes + this.upWireBytes });
        }
        for (const rec of decodeFrameRecords(decoder.decode(frame))) {
          if (this.sourceEnd !== undefined) throw new TheseusError("protocol", "the source sent records after its end record");
          try {
            this.apply(rec);
          } catch (e) {
            throw this.applyError(e, rec);
          }
        }
        idleSince = performance.now();
        this.busyMs += idleSince - started;
        if (this.sourceEnd !== undefined) break;
      }
      if (this.sourceEnd === undefined) {
        throw new TheseusError("unavailable", "the source's stream ended before the round was complete", {
          hint: "run the round again: what was applied is kept and is not resent",
        });
      }
      const result = this.finish(this.sourceEnd);
      ok = true;
      return result;
    } finally {
      this.done.abort();
      const kept = ok ? false : this.salvage();
      this.closeFile();
      if (!kept) {
        this.staging.remove();
        fs.rmSync(this.partialFile, { force: true });
      } else this.staging.close();
      fs.rmSync(this.spoolFile, { force: true });
      fs.rmSync(this.appliedFile, { force: true });
    }
  }

  // -------------------------------------------------------------------------------------------------------------------
  // The index stream: the target's walk joined with its cache.

  private async *indexFrames(): AsyncGenerator<Uint8Array> {
    const w = FrameEncoder.writer();
    const enc = new FrameEncoder();
    const uid = process.getuid?.() ?? 0;
    const gid = process.getgid?.() ?? 0;
    encodeRecord(w, { t: "start", version: PROTOCOL_VERSION, targetUid: uid, targetGid: gid, preserveOwner: this.preserveOwner, stripSetid: this.stripSetid });
    if (this.resume !== undefined) {
      const r = this.resume;
      encodeRecord(w, { t: "partial", path: r.path, blocks: r.blocks, prefixHash: r.list.digest() });
    }
    // (The source heeds 16; more are torn only if rounds keep failing, and those beyond are resent whole.)
    for (const { file: r } of [...this.torns.values()].slice(0, 16)) {
      encodeRecord(w, { t: "torn", path: r.path, baseHash: r.baseHash, blocks: r.blocks, prefixHash: r.prefixList.digest(), dirtyBlocks: r.dirtyBlocks });
    }
    yield this.counted(enc.encode(w).frame);
    const cache = new EntryFileReader(path.join(this.stateDir, "index"));
    this.spool = new EntryFileWriter(this.spoolFile);
    const firstOfInode = new Map<number, string>();
    const offered = new Set<string>();
    const turns = new LoopTurns();
    // The source waits for the index's first entries before it walks at all: the first frames are small (8 KiB, a
    // hundred entries) and grow to the usual size. With 256 KiB from the start, a no-change round of 21,000 files
    // had the source idle for the 50 ms the target took to fill it, and 120 ms after the target began.
    let frameBytes = FIRST_INDEX_FRAME_BYTES;
    try {
      for (const e of walk(this.root, new Set([STAGING_DIR, LOCK_NAME, CACHE_DIR]))) {
        const st = e.st;
        let unhashed = false;
        const abs = e.path === "" ? this.root : `${this.root}/${e.path}`;
        let entry: IndexEntry;
        if (e.type === "dir") {
          entry = { path: e.path, type: "dir", meta: metaOf(st, "dir"), size: 0, hash: EMPTY, linkTarget: "", hardlinkTo: "" };
        } else if (e.type === "symlink") {
          let target = "";
          try {
            target = fs.readlinkSync(abs);
          } catch {
            continue; // vanished
          }
          entry = { path: e.path, type: "symlink", meta: metaOf(st, "symlink"), size: 0, hash: EMPTY, linkTarget: target, hardlinkTo: "" };
        } else if (e.type === "special") {
          // A fifo/socket/device in the target volume: reported as an empty-hash file, so the source replaces or deletes it.
          entry = { path: e.path, type: "file", meta: metaOf(st, "file"), size: 0, hash: EMPTY, linkTarget: "", hardlinkTo: "" };
        } else if (this.torns.has(e.path)) {
          // Torn: no hash, so it is never taken for complete (no digest agrees, no source skips it); not read either,
          // the torn record tells the source what it holds.
          entry = { path: e.path, type: "file", meta: metaOf(st, "file"), size: st.size, hash: EMPTY, linkTarget: "", hardlinkTo: "" };
          this.large.set(e.path, { hash: EMPTY, st });
        } else {
          const c = cache.seek(e.path);
          // A cached entry without a hash is a torn file's: never trusted.
          let hash: Uint8Array | undefined = c !== undefined && c.type === "file" && c.hash.length === 32 && statMatches(c, st) ? c.hash : undefined;
          if (hash !== undefined && c?.vouched === true) {
            // The source vouched for this copy in an earlier round and it is unchanged since: verify it within the
            // round's budget. A hash other than the vouched one goes into the index, and the source resends the file.
            // Beyond the budget it goes unhashed again, and the source vouches again or sends the file: the index
            // never claims a hash this target has not read, which the source would take as the base of an append
            // (a copy changed behind both stats would fail that round and every next one until verified).
            if (this.verify.take(st.size)) hash = undefined;
            else if (!isLarge(st.size) && st.nlink === 1) {
              unhashed = true;
              hash = EMPTY;
            }
          } else if (hash !== undefined && isLarge(st.size) && !this.blocks.has(hash)) {
            hash = undefined;
          } else if (hash === undefined && (c === undefined || c.hash.length === 0) && !isLarge(st.size) && st.nlink === 1) {
            // No cache entry (the cache was lost, or a file new to this volume): sent unread, and the source answers
            // with its hash when its file has this size, mtime and mode (file_vouch), or with the file. Large files
            // are still hashed: one changed on the source would otherwise go whole, with no base to patch.
            unhashed = true;
            hash = EMPTY;
          }
          if (hash === undefined) hash = this.hashLocal(abs, st.size);
          if (hash === undefined) continue; // vanished or changed under us: absent from the index, so resent
          let hardlinkTo = "";
          if (st.nlink > 1) {
            const first = firstOfInode.get(st.ino);
            if (first === undefined) firstOfInode.set(st.ino, e.path);
            else hardlinkTo = first;
          }
          entry = { path: e.path, type: "file", meta: metaOf(st, "file"), size: st.size, hash, linkTarget: "", hardlinkTo };
          if (isLarge(st.size)) this.large.set(e.path, { hash, st });
        }
        this.spool.addWithStat(entry, st.ino, st.mtimeMs, st.ctimeMs);
        this.walkDigest.add(entry);
        const largeHex = entry.type === "file" && isLarge(entry.size) ? Buffer.from(entry.hash).toString("hex") : undefined;
        if (largeHex !== undefined) this.walkKeep.add(largeHex);
        this.targetEntries++;
        if (unhashed) this.unhashedSent++;
        if (largeHex !== undefined && entry.hash.length === 32) {
          // Its block list goes first when the source does not hold it (it lost its state): it then patches the file
          // if it changed, instead of sending it whole. The source's hashes are awaited here, once a round.
          if (!this.held.done) await this.held.ready;
          if (this.done.signal.aborted) return;
          if (!this.held.has(largeHex) && !offered.has(largeHex)) {
            offered.add(largeHex);
            for (const offer of offerRecords(this.blocks, entry.hash)) {
              encodeRecord(w, offer);
              if (w.length >= frameBytes) yield this.counted(enc.encode(w).frame);
            }
          }
        }
        encodeRecord(w, unhashed ? { t: "entry_unhashed", e: entry } : { t: "entry", e: entry });
        if (w.length >= frameBytes) {
          yield this.counted(enc.encode(w).frame);
          frameBytes = Math.min(FRAME_TARGET_BYTES, frameBytes * 2);
        }
        if (turns.due()) await turns.turn();
      }
    } finally {
      cache.close();
      this.spool.close();
    }
    this.walkDone = true;
    encodeRecord(w, { t: "index_end" });
    yield this.counted(enc.encode(w).frame);
    // Then, until the round ends, how busy applying keeps us: the source compresses for a slow link, not for us.
    let lastBusy = this.busyMs;
    let lastWait = this.waitMs;
    for (;;) {
      try {
        await sleep(LOAD_INTERVAL_MS, this.done.signal);
      } catch {
        return;
      }
      const busy = this.busyMs - lastBusy;
      const wait = this.waitMs - lastWait;
      lastBusy = this.busyMs;
      lastWait = this.waitMs;
      encodeRecord(w, { t: "load", busyPermille: Math.round((1000 * busy) / Math.max(1, busy + wait)) });
      yield this.counted(enc.encode(w).frame);
    }
  }

  private counted(frame: Buffer): Buffer {
    this.upWireBytes += frame.length;
    return frame;
  }

  /** Hashes a file the cache does not vouch for; undefined if it is not a readable regular file any more. */
  private hashLocal(abs: string, size: number): Uint8Array | undefined {
    let fd: number;
    try {
      fd = fs.openSync(abs, fs.constants.O_RDONLY | O_NOFOLLOW | fs.constants.O_NONBLOCK);
    } catch {
      return undefined;
    }
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile()) return undefined;
      const h = hashFile(fd, size, this.readBuf, allHoles(abs, st));
      this.targetBytesRead += h.bytesRead;
      if (h.size !== size) return undefined;
      if (h.blocks !== undefined) this.blocks.put(h.hash, h.blocks);
      return h.hash;
    } finally {
      fs.closeSync(fd);
    }
  }

  // -------------------------------------------------------------------------------------------------------------------
  // Applying records.

  /** True once the volume ran out of space (or quota): a cut round then keeps no partial file, which holds the space. */
  private diskFull = false;

  /** A system error while applying, as the user can act on it: which file, which volume, what to do. */
  private applyError(e: unknown, rec: SyncRecord): unknown {
    const sys = systemErrorCode(e);
    if (sys === undefined || e instanceof TheseusError) return e;
    const p = this.file?.path ?? ("path" in rec ? rec.path : undefined);
    const what = p === undefined ? "" : ` ${shortPath(p)}`;
    if (sys === "ENOSPC" || sys === "EDQUOT") {
      this.diskFull = true;
      return new TheseusError("resource_exhausted", `the target volume ${this.root} is full (${sys === "ENOSPC" ? "no space or inodes left" : "quota exhausted"}) while writing${what}`, {
        cause: e,
        hint: "free space on the target volume or grow it, then run the round again: the files already complete are kept, the partial one was removed to free its space",
      });
    }
    if (sys === "ENAMETOOLONG") {
      return new TheseusError("invalid_argument", `cannot write${what} on the target: its path is longer than the system allows below ${this.root}`, {
        cause: e,
        hint: "shorten the path in the source volume, or use a target volume with a shorter mount path",
      });
    }
    return e;
  }

  private apply(rec: SyncRecord): void {
    // The source's first records name the block lists it holds; an error may come before them.
    if (!this.held.done && rec.t !== "error") return this.held.take(rec);
    if (this.file !== undefined) {
      if (rec.t === "data") return this.fileData(this.file, rec.offset, rec.data);
      if (rec.t === "zero") return this.fileZero(this.file, rec.offset, rec.length);
      if (rec.t === "file_end") return this.fileEnd(this.file, rec.size, rec.hash);
      throw new TheseusError("protocol", `the source sent ${rec.t} inside the contents of ${this.file.path}`);
    }
    switch (rec.t) {
      case "error":
        // What a peer says reaches a coordinator's terminal: no escape sequences, newlines or other control bytes.
        throw new TheseusError(asCode(rec.code), `the source failed: ${printable(rec.message)}`);
      case "end":
        // The staging directory goes before the root's mtime is restored, which removing it would change.
        this.staging.remove();
        this.leaveDirsUntil(undefined);
        this.sourceEnd = rec;
        return;
      case "dir":
        return this.dir(this.enter(rec.path, true), rec.meta);
      case "file_inline":
        return this.fileInline(this.enter(rec.path), this.fileMetaOf(rec.meta), rec.hash, rec.data);
      case "file_append":
        return this.fileAppend(this.enter(rec.path), this.fileMetaOf(rec.meta), rec.baseSize, rec.baseHash, rec.hash, rec.tail);
      case "file_begin":
        return this.fileBegin(this.enter(rec.path), this.fileMetaOf(rec.meta), rec.mode, rec.baseHash, rec.resumeFrom);
      case "file_meta":
        return this.fileMeta(this.enter(rec.path), this.fileMetaOf(rec.meta), rec.size, rec.hash);
      case "file_vouch":
        // Trusts the source no more than file_meta does: a source that lies here could as well send other content.
        return this.fileMeta(this.enter(rec.path), this.fileMetaOf(rec.meta), rec.size, rec.hash, true);
      case "symlink":
        return this.symlink(this.enter(rec.path), rec.meta, rec.target);
      case "hardlink":
        return this.hardlink(this.enter(rec.path), rec.to, rec.hash);
      case "delete":
        return this.remove(this.enter(rec.path));
      default:
        throw new TheseusError("protocol", `the source sent an unexpected ${rec.t} record`);
    }
  }

  /**
   * Validates a record's path and its order, finishes the directories the walk has left, and makes sure every parent
   * of the path is a verified real directory. Returns the path.
   */
  private enter(p: string, allowRoot = false): string {
    validatePeerPath(p, allowRoot);
    if (this.lastPath === undefined ? p !== "" : comparePaths(this.lastPath, p) >= 0) {
      throw new TheseusError("protocol", `the source's records are out of order at ${JSON.stringify(p)}`, {
        hint: "the source agent is broken or hostile; nothing was written outside the volume",
      });
    }
    this.lastPath = p;
    if (p === "") return p;
    refuseReserved(p);
    const parent = parentOf(p);
    this.leaveDirsUntil(parent);
    // Verify and push the parents below the deepest verified one (normally none: the source sends every directory).
    const top = this.stack[this.stack.length - 1];
    if (top === undefined) throw new TheseusError("protocol", "the source did not start with the volume root");
    if (top.path !== parent) {
      const missing = parent.slice(top.path === "" ? 0 : top.path.length + 1).split("/");
      let cur = top.path;
      for (const name of missing) {
        cur = cur === "" ? name : `${cur}/${name}`;
        const abs = `${this.root}/${cur}`;
        const st = lstatOrUndefined(abs);
        if (st === undefined || !st.isDirectory()) {
          throw new TheseusError("protocol", `the source wrote below ${JSON.stringify(cur)}, which is not a directory on the target`, {
            hint: "the source agent is broken or hostile; nothing was written outside the volume",
          });
        }
        this.stack.push({ path: cur, abs, meta: undefined, st, dirty: false });
      }
    }
    return p;
  }

  /** Pops (and finishes) every directory on the stack that is not `dir` or an ancestor of it; all when undefined. */
  private leaveDirsUntil(dir: string | undefined): void {
    for (;;) {
      const top = this.stack[this.stack.length - 1];
      if (top === undefined) return;
      if (dir !== undefined && isWithin(dir, top.path)) return;
      this.stack.pop();
      this.finishDir(top);
    }
  }

  private finishDir(d: DirFrame): void {
    const m = d.meta;
    if (m === undefined) return;
    const st = d.st;
    if (!d.dirty && metaOf(st, "dir").mtimeUs === m.mtimeUs && (st.mode & 0o7777) === m.mode && !this.ownerDiffers(st, m)) return;
    const fd = fs.openSync(d.abs, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | O_NOFOLLOW);
    try {
      this.setMeta(fd, m);
    } finally {
      fs.closeSync(fd);
    }
  }

  private markDirty(): void {
    const top = this.stack[this.stack.length - 1];
    if (top !== undefined) top.dirty = true;
  }

  private ownerDiffers(st: fs.Stats, m: Meta): boolean {
    return this.preserveOwner && (st.uid !== m.uid || st.gid !== m.gid);
  }

  /** Files written this round, counted when their set-id bits are dropped. */
  private setidStripped = 0;
  /** A file's metadata under the set-id policy, enforced here whatever the source did (it is told in the start record). */
  private fileMetaOf(m: Meta): Meta {
    if (!this.stripSetid || (m.mode & 0o6000) === 0) return m;
    this.setidStripped++;
    return { ...m, mode: m.mode & ~0o6000 };
  }

  /** chown before chmod: chown clears set-id bits. */
  private setMeta(fd: number, m: Meta, fresh = false): void {
    // A file this round just created already has our owner and its mode (less the umask): skip what is already right.
    if (this.preserveOwner && !(fresh && m.uid === OWN_UID && m.gid === OWN_GID)) fs.fchownSync(fd, m.uid, m.gid);
    if (!(fresh && m.mode === createMode(m.mode) && (m.uid === OWN_UID || !this.preserveOwner))) fs.fchmodSync(fd, m.mode);
    // Exactly the source's microsecond, before 1970 too (see utimeArg).
    const t = utimeArg(m.mtimeUs);
    fs.futimesSync(fd, t, t);
  }

  private abs(p: string): string {
    return p === "" ? this.root : `${this.root}/${p}`;
  }

  private log(e: IndexEntry, st: fs.Stats | undefined, vouched = false): void {
    // Complete and verified (a patch's end is logged only then), replaced, or deleted with a directory above it.
    if (this.torns.size > 0) {
      for (const [p, t] of this.torns) {
        if (p === e.path || ((e.type !== "dir" || e.linkTarget === TOMBSTONE) && isWithin(p, e.path))) {
          t.journal.clear();
          this.torns.delete(p);
        }
      }
    }
    this.entriesApplied++;
    this.applied.addWithStat(e, st?.ino ?? 0, st?.mtimeMs ?? -1, st?.ctimeMs ?? -1, vouched);
  }

  /** Removes whatever is at `abs` (never following a symlink: rm and unlink act on the link itself). */
  private clear(abs: string, st: fs.Stats | undefined): void {
    if (st === undefined) return;
    if (st.isDirectory()) fs.rmSync(abs, { recursive: true, force: true });
    else fs.unlinkSync(abs);
  }

  private dir(p: string, meta: Meta): void {
    const abs = this.abs(p);
    let st = lstatOrUndefined(abs);
    if (st !== undefined && !st.isDirectory()) {
      this.clear(abs, st);
      st = undefined;
    }
    let created = false;
    if (st === undefined) {
      this.markDirty();
      fs.mkdirSync(abs, { mode: 0o700 });
      st = fs.lstatSync(abs);
      created = true;
    }
    // A staging directory kept from a cut round changed the root's mtime; restore it when the round ends.
    this.stack.push({ path: p, abs, meta, st, dirty: p === "" && this.stagingReady });
    // Logged only when it changes: a directory as the index already has it needs no entry, and a round that changes
    // nothing then logs nothing at all (and commits its index without a merge).
    const m = metaOf(st, "dir");
    if (created || m.mode !== meta.mode || m.mtimeUs !== meta.mtimeUs || this.ownerDiffers(st, meta)) {
      this.log({ path: p, type: "dir", meta, size: 0, hash: EMPTY, linkTarget: "", hardlinkTo: "" }, undefined);
    }
  }

  /** The staging directory is created on first use, so a round that changes nothing leaves the root untouched. */
  private stagingReady = false;
  private newStaging(): string {
    if (!this.stagingReady) {
      this.staging.create();
      this.stagingReady = true;
      const rootFrame = this.stack[0];
      if (rootFrame !== undefined) rootFrame.dirty = true;
    }
    return this.staging.entry(String(++this.stagingSeq));
  }

  /** Renames a finished staging entry over `abs`, replacing a directory there if need be. */
  private place(staging: string, abs: string): fs.Stats {
    try {
      fs.renameSync(staging, abs);
    } catch (e) {
      // A directory is in the way (rename never replaces one with a file or symlink): remove it, then place.
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== "EISDIR" && code !== "ENOTEMPTY" && code !== "EEXIST") throw e;
      this.clear(abs, lstatOrUndefined(abs));
      fs.renameSync(staging, abs);
    }
    this.markDirty();
    return fs.lstatSync(abs);
  }

  private fileInline(p: string, meta: Meta, hash: Uint8Array, data: Uint8Array): void {
    if (data.length >= LARGE_FILE_BYTES) throw new TheseusError("protocol", `inline contents of ${p} are too large`);
    this.placeSmall(p, meta, hash, data);
  }

  /**
   * A small file that grew by an append: its new content is this target's copy, which must still be exactly the base
   * the source saw in the index, followed by the tail. The copy is read (it is small), never trusted from the index:
   * it may have changed since the walk. A copy that is not the base fails the round like a patch against contents
   * the target does not hold; the next round's index shows what the file holds now, and the source resends it whole.
   * The result is staged and verified like an inline file, so a crash leaves the old copy or the new one.
   */
  private fileAppend(p: string, meta: Meta, baseSize: number, baseHash: Uint8Array, hash: Uint8Array, tail: Uint8Array): void {
    // The decoder bounds both; checked again where the sizes are used, as fileInline does.
    if (baseSize + tail.length >= LARGE_FILE_BYTES || tail.length === 0) throw new TheseusError("protocol", `the append to ${p} is not a small file's`);
    const notBase = (cause?: unknown): TheseusError =>
      new TheseusError("failed_precondition", `the source appended to ${p} against contents the target does not hold`, {
        ...(cause === undefined ? {} : { cause }),
        hint: "the target volume changed during the round; run the round again",
      });
    let fd: number;
    try {
      // O_NOFOLLOW|O_NONBLOCK: a symlink is refused, a fifo never blocks the round (fstat then refuses it).
      fd = fs.openSync(this.abs(p), fs.constants.O_RDONLY | O_NOFOLLOW | fs.constants.O_NONBLOCK);
    } catch (cause) {
      throw notBase(cause);
    }
    let base: Buffer;
    try {
      const st = fs.fstatSync(fd);
      if (!st.isFile() || st.size !== baseSize) throw notBase();
      // One byte more than the base: a file that grew between the fstat and the read is not the base either.
      base = readSmall(fd, baseSize + 1, this.readBuf);
      this.targetBytesRead += base.length;
    } finally {
      fs.closeSync(fd);
    }
    if (base.length !== baseSize || !sha256(base).equals(baseHash)) throw notBase();
    this.placeSmall(p, meta, hash, Buffer.concat([base, tail]));
  }

  /** Stages a small file's whole content, verified against the source's hash first, and renames it into place. */
  private placeSmall(p: string, meta: Meta, hash: Uint8Array, data: Uint8Array): void {
    if (!sha256(data).equals(hash)) {
      throw new TheseusError("data_loss", `the contents received for ${p} do not match the source's hash`, {
        hint: "the stream was corrupted in transit; run the round again",
      });
    }
    const staging = this.newStaging();
    const fd = fs.openSync(staging, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | O_NOFOLLOW, meta.mode & 0o777);
    try {
      if (writeSparse(fd, data, 0) < data.length) fs.ftruncateSync(fd, data.length);
      this.setMeta(fd, meta, true);
    } finally {
      fs.closeSync(fd);
    }
    this.bytesWritten += data.length;
    const st = this.place(staging, this.abs(p));
    this.log({ path: p, type: "file", meta, size: data.length, hash, linkTarget: "", hardlinkTo: "" }, st);
  }

  private fileBegin(p: string, meta: Meta, mode: "whole" | "patch", baseHash: Uint8Array, resumeFrom: number): void {
    const abs = this.abs(p);
    if (mode === "whole") {
      // Large files are received under one fixed name, so that a cut round leaves at most one partial file to resume.
      this.newStaging();
      const staging = this.staging.entry(RESUME_NAME);
      const r = this.resume;
      this.resume = undefined;
      if (resumeFrom > 0) {
        if (r === undefined || r.path !== p || r.blocks * BLOCK_BYTES !== resumeFrom) {
          throw new TheseusError("protocol", `the source resumed ${p} at ${resumeFrom} bytes, which this target did not offer`);
        }
        const fd = fs.openSync(staging, fs.constants.O_WRONLY | O_NOFOLLOW);
        fs.ftruncateSync(fd, resumeFrom);
        this.file = { path: p, abs, meta, mode, fd, staging, list: r.list, base: undefined, offset: resumeFrom, oldSize: 0, checkpoint: resumeFrom, mustWriteUntil: 0 };
        return;
      }
      fs.rmSync(staging, { force: true });
      fs.rmSync(this.partialFile, { force: true });
      const fd = fs.openSync(staging, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | O_NOFOLLOW, 0o600);
      this.file = { path: p, abs, meta, mode, fd, staging, list: new BlockList(), base: undefined, offset: 0, oldSize: 0, checkpoint: 0, mustWriteUntil: 0 };
      return;
    }
    // A torn file (a patch of it was cut) is patched on against the base its journal names; the source resumes after
    // the verified prefix only if its own content still starts with it.
    const torn = this.torns.get(p)?.file;
    if (resumeFrom !== 0 && (torn === undefined || resumeFrom !== torn.blocks * BLOCK_BYTES)) {
      throw new TheseusError("protocol", `the source resumed a patch of ${p} at ${resumeFrom} bytes, which this target did not offer`);
    }
    // Patch in place: only against exactly the content this target reported, still unchanged since it hashed it.
    const known = this.large.get(p);
    const st = lstatOrUndefined(abs);
    const baseOk = known !== undefined && (torn !== undefined ? torn.baseHash.equals(baseHash) : known.hash.length === 32 && Buffer.from(known.hash).equals(baseHash));
    const base = baseOk && baseHash.length === 32 ? this.blocks.get(baseHash) : undefined;
    if (known === undefined || base === undefined || st === undefined || !st.isFile() || st.nlink !== 1 || !sameStat(st, known.st)) {
      throw new TheseusError("failed_precondition", `the source patched ${p} against contents the target does not hold`, {
        hint: "the target volume changed during the round; run the round again",
      });
    }
    const dirty = torn?.dirtyBlocks ?? 0;
    // The list is built in order: a torn file's verified prefix, then (advance) the base's hashes between the blocks
    // received.
    const list = new BlockList();
    const prefixBlocks = resumeFrom / BLOCK_BYTES;
    if (torn !== undefined && prefixBlocks > 0) list.copyFrom(torn.prefixList, 0, prefixBlocks);
    // Journaled before the first write (beforePatchWrite): from then on the file is torn until fileEnd has verified
    // it. A patch refused before it wrote anything leaves the file as complete as it was.
    const changes = torn !== undefined ? torn.changes.prefix(prefixBlocks) : new ChangedBlocks();
    this.patchJournal = { journal: this.torns.get(p)?.journal ?? tornJournalFor(this.stateDir, p), begun: false, baseHash: Buffer.from(baseHash), prefixBlocks, dirty, changes };
    const fd = fs.openSync(abs, fs.constants.O_WRONLY | O_NOFOLLOW);
    this.file = { path: p, abs, meta, mode, fd, staging: "", list, base, offset: resumeFrom, oldSize: st.size, checkpoint: resumeFrom, mustWriteUntil: dirty * BLOCK_BYTES };
  }

  /** The torn journal of the file being patched, if it was begun (something was written). */
  private journalOf(f: OpenFile): TornJournal | undefined {
    const pj = this.patchJournal;
    return f.mode === "patch" && pj?.begun === true ? pj.journal : undefined;
  }

  /** Extends the torn journal's unknown range before a patch writes past it. */
  private beforePatchWrite(f: OpenFile, end: number): void {
    const pj = this.patchJournal;
    if (f.mode !== "patch" || pj === undefined) return;
    if (!pj.begun) {
      const dirty = Math.max(pj.dirty, pj.prefixBlocks, dirtyAhead(blockCount(end)));
      pj.journal.begin(f.path, pj.baseHash, f.list, pj.changes, pj.prefixBlocks, dirty);
      pj.begun = true;
      this.torns.set(f.path, {
        file: { path: f.path, baseHash: pj.baseHash, blocks: pj.prefixBlocks, prefixList: f.list.prefix(pj.prefixBlocks), changes: pj.changes.prefix(pj.prefixBlocks), dirtyBlocks: dirty },
        journal: pj.journal,
      });
      return;
    }
    if (end > pj.journal.dirtyBlocks * BLOCK_BYTES) pj.journal.extendDirty(dirtyAhead(blockCount(end)));
  }

  /** Makes a patch's blocks so far durable and journals them as verified: a later round does not resend them. */
  private checkpointPatch(f: OpenFile): void {
    const blocks = Math.floor(f.offset / BLOCK_BYTES);
    const journal = this.journalOf(f);
    if (journal === undefined || f.fd < 0 || blocks * BLOCK_BYTES <= f.checkpoint) return;
    fs.fdatasyncSync(f.fd);
    journal.checkpoint(blocks, f.list, (this.patchJournal as PatchJournal).changes, dirtyAhead(blocks));
    f.checkpoint = blocks * BLOCK_BYTES;
  }

  /** A patch's list up to `block`: the base's hashes of the blocks between the last one received and `block`. */
  private advance(f: OpenFile, block: number): void {
    if (f.base !== undefined && f.list.length < block) f.list.copyFrom(f.base, f.list.length, Math.min(block, f.base.length));
  }

  private checkRange(f: OpenFile, offset: number, length: number): void {
    // Checked before anything is written. A patch may rewrite any block of the old contents, but past the old end
    // only contiguously: the source sends every block beyond the base list, so a far block is no real patch, and
    // writing it would leave a huge apparent size that every later round must read (issue 13, defect 3).
    const patchLimit = Math.max(blockCount(f.oldSize) * BLOCK_BYTES, f.offset);
    if (
      offset % BLOCK_BYTES !== 0 ||
      offset + length > MAX_FILE_BYTES ||
      (f.mode === "whole" ? offset !== f.offset : offset < f.offset || offset > patchLimit) ||
      // Repairing a torn file: its unknown blocks are all rewritten, none skipped.
      (f.offset < f.mustWriteUntil && offset !== f.offset)
    ) {
      throw new TheseusError("protocol", `the source sent a misplaced block for ${f.path} at offset ${offset}`);
    }
  }

  private fileData(f: OpenFile, offset: number, data: Uint8Array): void {
    this.checkRange(f, offset, data.length);
    this.beforePatchWrite(f, offset + data.length);
    if (f.mode === "whole") writeSparse(f.fd, data, offset);
    else {
      writeAll(f.fd, data, offset);
      this.patchJournal?.changes.add(offset / BLOCK_BYTES, blockCount(offset + data.length));
    }
    this.bytesWritten += data.length;
    this.advance(f, offset / BLOCK_BYTES);
    f.list.appendData(data);
    f.offset = offset + data.length;
    if (f.mode === "whole" && f.offset - f.checkpoint >= CHECKPOINT_BYTES) this.checkpoint(f);
    if (f.mode === "patch" && patchCheckpointDue(f.offset, f.checkpoint)) this.checkpointPatch(f);
  }

  /** Makes the blocks received so far durable, then records them: a later round resumes after them. */
  private checkpoint(f: OpenFile): boolean {
    const blocks = Math.floor(f.offset / BLOCK_BYTES);
    if (f.mode !== "whole" || blocks === 0 || f.fd < 0) return false;
    fs.fdatasyncSync(f.fd);
    savePartial(this.partialFile, { path: f.path, blocks, list: f.list.prefix(blocks) });
    f.checkpoint = blocks * BLOCK_BYTES;
    return true;
  }

  private fileZero(f: OpenFile, offset: number, length: number): void {
    this.checkRange(f, offset, length);
    if (length % BLOCK_BYTES !== 0 || length === 0) throw new TheseusError("protocol", `bad zero run for ${f.path}`);
    this.advance(f, offset / BLOCK_BYTES);
    f.list.appendZeros(length / BLOCK_BYTES);
    // A new file keeps the hole; a patched one needs the zeros written over the old data (Node cannot punch holes),
    // but not past its old end, where the final truncate makes a hole.
    if (f.mode === "patch") {
      if (offset < f.oldSize) this.beforePatchWrite(f, Math.min(offset + length, f.oldSize));
      for (let o = 0; o < length && offset + o < f.oldSize; o += BLOCK_BYTES) writeAll(f.fd, ZERO_BLOCK, offset + o);
      this.patchJournal?.changes.add(offset / BLOCK_BYTES, (offset + length) / BLOCK_BYTES);
    }
    f.offset = offset + length;
    if (f.mode === "patch" && patchCheckpointDue(f.offset, f.checkpoint)) this.checkpointPatch(f);
  }

  private fileEnd(f: OpenFile, size: number, hash: Uint8Array): void {
    if (
      size > MAX_FILE_BYTES ||
      (f.mode === "whole" && f.offset !== size) ||
      (f.mode === "patch" && (f.offset > size || f.offset < Math.min(f.mustWriteUntil, size)))
    ) {
      throw new TheseusError("protocol", `the source's end of ${f.path} does not match its contents`);
    }
    const n = blockCount(size);
    // A patched file that shrank inside a block: that block's hash changed without being sent; rehash it from disk.
    if (f.mode === "patch" && size % BLOCK_BYTES !== 0 && size < f.oldSize && f.offset < size) {
      this.advance(f, n - 1);
      const start = (n - 1) * BLOCK_BYTES;
      const buf = Buffer.alloc(size - start);
      const rfd = fs.openSync(f.abs, fs.constants.O_RDONLY | O_NOFOLLOW);
      try {
        fs.readSync(rfd, buf, 0, buf.length, start);
      } finally {
        fs.closeSync(rfd);
      }
      f.list.append(sha256(buf));
    } else this.advance(f, n);
    const list = f.list;
    const got = f.list.length === n ? list.digest() : undefined;
    // Verified before the file takes its new size: a lying end record must not leave a huge apparent size behind.
    if (got === undefined || !got.equals(hash)) {
      if (f.mode === "patch") this.salvagePatch(f);
      this.closeFile();
      throw new TheseusError("data_loss", `the contents received for ${f.path} do not match the source's hash`, {
        hint: "run the round again; the file is re-read and repaired",
      });
    }
    // Cutting (or growing) a patched file changes blocks the journal counts as base content: mark them unknown first,
    // so that a crash before the journal is cleared cannot leave a block the next round would wrongly skip.
    if (f.mode === "patch") {
      const current = fs.fstatSync(f.fd).size;
      if (current !== size) this.beforePatchWrite(f, Math.max(current, size));
    }
    fs.ftruncateSync(f.fd, size);
    this.blocks.put(got, list);
    this.setMeta(f.fd, f.meta);
    fs.closeSync(f.fd);
    f.fd = -1;
    const st = f.mode === "whole" ? this.place(f.staging, f.abs) : fs.lstatSync(f.abs);
    this.file = undefined;
    this.log({ path: f.path, type: "file", meta: f.meta, size, hash: got, linkTarget: "", hardlinkTo: "" }, st);
  }

  private closeFile(keep = false): void {
    const f = this.file;
    if (f === undefined) return;
    this.file = undefined;
    if (f.fd >= 0) {
      fs.closeSync(f.fd);
    }
    if (f.staging !== "" && !keep) fs.rmSync(f.staging, { force: true });
  }

  private fileMeta(p: string, meta: Meta, size: number, hash: Uint8Array, vouched = false): void {
    const abs = this.abs(p);
    let fd: number;
    try {
      fd = fs.openSync(abs, fs.constants.O_RDONLY | O_NOFOLLOW | fs.constants.O_NONBLOCK);
    } catch (cause) {
      throw new TheseusError("failed_precondition", `${p} changed on the target during the round`, { cause, hint: "run the round again" });
    }
    let st: fs.Stats;
    try {
      st = fs.fstatSync(fd);
      const known = this.large.get(p);
      if (!st.isFile() || st.size !== size || (known !== undefined && !Buffer.from(known.hash).equals(hash))) {
        throw new TheseusError("failed_precondition", `${p} on the target is not the file the source expects`, {
          hint: "run the round again",
        });
      }
      this.setMeta(fd, meta);
      st = fs.fstatSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    this.log({ path: p, type: "file", meta, size, hash, linkTarget: "", hardlinkTo: "" }, st, vouched);
  }

  private symlink(p: string, meta: Meta, target: string): void {
    if (target === "" || target.length > MAX_PATH_LENGTH || target.includes("\0")) {
      throw new TheseusError("protocol", `the source sent an invalid symlink target for ${p}`);
    }
    // Created at a staging name and renamed over: a symlink's target is just data here, never followed.
    const staging = this.newStaging();
    fs.symlinkSync(target, staging);
    if (this.preserveOwner) fs.lchownSync(staging, meta.uid, meta.gid);
    // A symlink's own mtime is metadata like a file's (rsync -a keeps it); rename keeps what lutimes set.
    const t = utimeArg(meta.mtimeUs);
    fs.lutimesSync(staging, t, t);
    const st = this.place(staging, this.abs(p));
    this.log({ path: p, type: "symlink", meta, size: 0, hash: EMPTY, linkTarget: target, hardlinkTo: "" }, st);
  }

  private hardlink(p: string, to: string, hash: Uint8Array): void {
    // The link's target is a path like any other: what enter() refuses as a record's path, it refuses here (a link
    // into the staging directory would publish unverified contents).
    validatePeerPath(to);
    refuseReserved(to);
    if (comparePaths(to, p) >= 0) throw new TheseusError("protocol", `hard link ${p} points forward to ${to}`);
    // The link's target was passed already: check its whole chain again, it is not on the current stack.
    let cur = "";
    for (const name of parentOf(to) === "" ? [] : parentOf(to).split("/")) {
      cur = cur === "" ? name : `${cur}/${name}`;
      const st = lstatOrUndefined(this.abs(cur));
      if (st === undefined || !st.isDirectory()) throw new TheseusError("protocol", `hard link ${p} points through ${cur}`);
    }
    const toAbs = this.abs(to);
    const toSt = lstatOrUndefined(toAbs);
    if (toSt === undefined || !toSt.isFile()) throw new TheseusError("protocol", `hard link ${p} points to ${to}, not a regular file`);
    const abs = this.abs(p);
    const cur2 = lstatOrUndefined(abs);
    let st: fs.Stats;
    if (cur2 !== undefined && cur2.isFile() && cur2.ino === toSt.ino && cur2.dev === toSt.dev) st = cur2;
    else {
      const staging = this.newStaging();
      fs.linkSync(toAbs, staging);
      st = this.place(staging, abs);
    }
    this.log({ path: p, type: "file", meta: metaOf(st, "file"), size: st.size, hash, linkTarget: "", hardlinkTo: "" }, st);
  }

  private remove(p: string): void {
    const abs = this.abs(p);
    const st = lstatOrUndefined(abs);
    if (st !== undefined) {
      this.clear(abs, st);
      this.markDirty();
    }
    this.log({ path: p, type: "file", meta: NO_META, size: 0, hash: EMPTY, linkTarget: TOMBSTONE, hardlinkTo: "" }, undefined);
  }

  // -------------------------------------------------------------------------------------------------------------------
  // The end: merge the index spool with what was applied into the new cache, computing the digest on the way.

  private finish(end: Extract<SyncRecord, { t: "end" }>): RoundResult {
    if (!this.walkDone) throw new TheseusError("protocol", "the source ended the round before reading the target's index");
    for (const p of this.torns.keys()) {
      if (lstatOrUndefined(this.abs(p)) === undefined) continue;
      // Never digested as complete: a round that did not repair a torn file cannot agree with its source.
      throw new TheseusError("data_loss", `${p} on the target is torn (an in-place patch of it was cut short) and this round did not repair it`, {
        hint: "run the round again: the source resends what the cut patch had left",
      });
    }
    let keep = new Set<string>();
    let got: Buffer;
    let vouched = 0;
    if (this.applied.entries === 0 && this.unhashedSent === 0) {
      // Nothing changed: the index as walked is the new index.
      this.applied.close();
      fs.renameSync(this.spoolFile, path.join(this.stateDir, "index"));
      got = this.walkDigest.digest();
      keep = this.walkKeep;
    } else {
      const digest = new VolumeDigest(this.preserveOwner);
      this.merge((e) => {
        if (this.unhashedSent > 0 && e.type === "file" && e.hash.length === 0) {
          // Sent unhashed and never answered (torn files were refused above): the source is broken.
          throw new TheseusError("protocol", `the source did not answer the target's unhashed entry ${JSON.stringify(e.path)}`, {
            hint: "run the same Theseus version on both clusters",
          });
        }
        digest.add(e);
        if (e.vouched) vouched++;
        if (e.type === "file" && isLarge(e.size)) keep.add(Buffer.from(e.hash).toString("hex"));
      });
      got = digest.digest();
    }
    if (!got.equals(end.digest)) {
      throw new TheseusError("data_loss", "the volume digest on the target differs from the source's", {
        hint: "the target volume changed during the round, or data was corrupted; run the round again",
      });
    }
    this.blocks.retainOnly(keep);
    const endMs = Date.now();
    writeMemo(this.stateDir, { lastRoundEndMs: endMs });
    const s = end.stats;
    const sincePrevious = s.previousRoundEndMs > 0 ? endMs - s.previousRoundEndMs : 0;
    const result: RoundResult = {
      source: s,
      entriesApplied: this.entriesApplied,
      bytesWritten: this.bytesWritten,
      targetBytesRead: this.targetBytesRead,
      targetEntries: this.targetEntries,
      durationMs: endMs - this.startedMs,
      digest: got.toString("hex"),
      sourceDigest: Buffer.from(end.digest).toString("hex"),
      dirtyBytesPerSecond: sincePrevious > 0 ? Math.round((s.bytesChanged / sincePrevious) * 1000) : 0,
      compressionRatio: s.wireBytes > 0 ? s.rawBytes / s.wireBytes : 1,
      ownersPreserved: this.preserveOwner,
      setidStripped: this.setidStripped,
      targetVouchedUnverified: vouched,
    };
    if (this.setidStripped > 0) {
      this.logger.warn({ root: this.root, files: this.setidStripped }, "set-user-ID/set-group-ID bits dropped from files (THESEUS_KEEP_SETID=1 keeps them)");
    }
    this.logger.info({ root: this.root, ...result, source: undefined, ...s }, "sync round applied");
    return result;
  }

  /**
   * A patch that failed: its verified blocks are journaled, and the file goes back to its old size if it grew (a lying
   * source must not leave a huge apparent size that every later round reads; issue 13). The journal is rewritten
   * first, to count no verified block past the old end, then the file is cut.
   */
  private salvagePatch(f: OpenFile): void {
    const journal = this.journalOf(f);
    if (journal === undefined || f.fd < 0) return;
    const grown = fs.fstatSync(f.fd).size > f.oldSize;
    if (!grown) return this.checkpointPatch(f);
    fs.fdatasyncSync(f.fd);
    const pj = this.patchJournal as PatchJournal;
    journal.begin(f.path, pj.baseHash, f.list, pj.changes, Math.min(Math.floor(f.offset / BLOCK_BYTES), Math.floor(f.oldSize / BLOCK_BYTES)), journal.dirtyBlocks);
    fs.ftruncateSync(f.fd, f.oldSize);
  }

  /** After a failed round, keep what was learnt (applied files, hashed files) so the next round resends nothing complete. */
  private salvage(): boolean {
    let kept = false;
    try {
      const f = this.file;
      // A full disk: the partial file goes (it holds the space the user must free), what is complete stays.
      if (this.diskFull) kept = false;
      else if (f !== undefined && f.mode === "whole") kept = this.checkpoint(f);
      else kept = this.resume !== undefined; // offered but not reached this round: still valid
      if (f !== undefined && f.mode === "patch") this.salvagePatch(f);
      this.closeFile(kept);
    } catch (e) {
      this.logger.warn({ err: (e as Error).message }, "could not keep the partly received file");
    }
    try {
      this.merge(() => undefined);
    } catch (e) {
      this.logger.warn({ err: (e as Error).message }, "could not save the target's index after a failed round");
    }
    return kept;
  }

  private merge(onEntry: (e: CacheEntry) => void): void {
    this.applied.close();
    const spool = new EntryFileReader(this.spoolFile);
    const applied = new EntryFileReader(this.appliedFile);
    const out = new EntryFileWriter(path.join(this.stateDir, `index.new.${OWN_TAG}`));
    let kill: string | undefined;
    const emit = (e: CacheEntry): void => {
      out.add(e);
      onEntry(e);
    };
    try {
      for (;;) {
        const s = spool.peek();
        const a = applied.peek();
        if (s === undefined && a === undefined) break;
        const c = s === undefined ? 1 : a === undefined ? -1 : comparePaths(s.path, a.path);
        if (c < 0) {
          spool.next();
          const sp = s as CacheEntry;
          if (kill !== undefined && isWithin(sp.path, kill) && sp.path !== kill) continue;
          emit(sp);
          continue;
        }
        if (c === 0) spool.next();
        applied.next();
        const ap = a as CacheEntry;
        if (ap.linkTarget === TOMBSTONE || ap.type !== "dir") kill = ap.path;
        if (ap.linkTarget !== TOMBSTONE) emit(ap);
      }
      out.commit(path.join(this.stateDir, "index"));
    } catch (e) {
      out.abort();
      throw e;
    } finally {
      spool.close();
      applied.close();
    }
  }
}

/** A peer's text made safe to print: control characters (C0, DEL, C1) become "?". */
function printable(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, "?");
}

/** The staging directory is the target's own: no record may name it or anything below it. */
function refuseReserved(p: string): void {
  if (p === STAGING_DIR || p.startsWith(STAGING_DIR + "/") || p === LOCK_NAME || p === CACHE_DIR || p.startsWith(CACHE_DIR + "/")) {
    const name = p === LOCK_NAME ? LOCK_NAME : p === CACHE_DIR || p.startsWith(CACHE_DIR + "/") ? CACHE_DIR : STAGING_DIR;
    throw new TheseusError("failed_precondition", `the source volume contains ${name}, a name Theseus reserves`, {
      hint: `rename ${name} at the root of the source volume`,
    });
  }
}

const EMPTY = new Uint8Array(0);
const NO_META: Meta = { mode: 0, uid: 0, gid: 0, mtimeUs: 0 };

function lstatOrUndefined(abs: string): fs.Stats | undefined {
  try {
    return fs.lstatSync(abs);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw walkError(e, abs);
  }
}

function sameStat(a: WalkStat, b: WalkStat): boolean {
  return a.ino === b.ino && a.size === b.size && a.mtimeMs === b.mtimeMs && a.ctimeMs === b.ctimeMs;
}

function writeAll(fd: number, data: Uint8Array, offset: number): void {
  let done = 0;
  while (done < data.length) done += fs.writeSync(fd, data, done, data.length - done, offset + done);
}

/**
 * Writes `data` at `offset`, skipping whole zero blocks so that a new file keeps its holes. Returns how far into
 * `data` was written (less than its length when it ends in zero blocks: the caller extends the file).
 */
function writeSparse(fd: number, data: Uint8Array, offset: number): number {
  let runStart = -1;
  let written = 0;
  for (let o = 0; o < data.length; o += BLOCK_BYTES) {
    const end = Math.min(o + BLOCK_BYTES, data.length);
    const zero = end - o === BLOCK_BYTES && isZero(data.subarray(o, end));
    if (zero) {
      if (runStart >= 0) {
        writeAll(fd, data.subarray(runStart, o), offset + runStart);
        written = o;
      }
      runStart = -1;
    } else if (runStart < 0) runStart = o;
  }
  if (runStart >= 0) {
    writeAll(fd, data.subarray(runStart), offset + runStart);
    written = data.length;
  }
  return written;
}

const OWN_UID = process.getuid?.() ?? -1;
const OWN_GID = process.getgid?.() ?? -1;
const UMASK = process.umask();
/** The mode a file created with `mode` actually gets. */
function createMode(mode: number): number {
  return mode & 0o777 & ~UMASK;
}

const CODES = new Set([
  "invalid_argument",
  "not_found",
  "already_exists",
  "permission_denied",
  "unauthenticated",
  "failed_precondition",
  "unavailable",
  "deadline_exceeded",
  "cancelled",
  "resource_exhausted",
  "data_loss",
  "protocol",
  "internal",
]);
function asCode(code: string): TheseusError["code"] {
  return (CODES.has(code) ? code : "internal") as TheseusError["code"];
}

/** partial file: [u32 path length][path][f64 blocks][the prefix's block list, canonical encoding] */
function savePartial(file: string, p: PartialFile): void {
  const name = Buffer.from(p.path, "utf8");
  const head = Buffer.alloc(12 + name.length);
  head.writeUInt32LE(name.length, 0);
  name.copy(head, 4);
  head.writeDoubleLE(p.blocks, 4 + name.length);
  writeAtomically(file, [head, ...p.list.encode()]);
}

function loadPartial(file: string, staging: string): PartialFile | undefined {
  try {
    const b = fs.readFileSync(file);
    const n = b.readUInt32LE(0);
    const p = b.toString("utf8", 4, 4 + n);
    const blocks = b.readDoubleLE(4 + n);
    const list = BlockList.decode(b.subarray(12 + n));
    const st = fs.lstatSync(staging);
    if (list.length !== blocks || !st.isFile() || st.size < blocks * BLOCK_BYTES) return undefined;
    validatePeerPath(p);
    return { path: p, blocks, list };
  } catch {
    return undefined;
  }
}
