// The source half of a round. It receives the target's index as a sorted stream, merge-joins it with its own walk of
// the volume (and its stat-validated hash cache), and streams back only what differs: new and changed entries, the
// changed 4 KiB blocks of large files, and deletions. No per-file round trip: the target's answer for every path is
// already in the index stream when the source gets to it.
import fs from "node:fs";
import path from "node:path";
import { TheseusError, throwIfAborted } from "../../common/index.js";
import type { Logger } from "../../common/index.js";
import {
  BLOCK_BYTES,
  decodeFrameRecords,
  encodeRecord,
  FRAME_TARGET_BYTES,
  FrameDecoder,
  FrameEncoder,
  PROTOCOL_VERSION,
  emptyRoundStats,
} from "./codec.js";
import type { IndexEntry, Meta, RoundStatsWire, SyncRecord } from "./codec.js";
import { comparePaths, isWithin, validatePeerPath } from "./paths.js";
import {
  allHoles,
  BlockStore,
  EntryFileReader,
  EntryFileWriter,
  hashFile,
  isLarge,
  readMemo,
  readSmall,
  sha256,
  statMatches,
  VerifyBudget,
  writeMemo,
  ZERO_BLOCK_HASH,
} from "./state.js";
import { BlockList, blockHashes, FINGERPRINT_BYTES, fingerprints, HASH_BYTES, ZERO_BLOCK, ZERO_BLOCK_FINGERPRINT } from "./block-list.js";
import { TokenBucket } from "./throttle.js";
import { ReadAhead } from "./read-ahead.js";
import { heldListRecords, OfferedLists } from "./list-offers.js";
import type { Clock } from "./throttle.js";
import { metaOf, VolumeDigest, walk, walkError } from "./walk.js";
import { LOCK_NAME } from "./volume-lock.js";
import { LoopTurns, syncTimeouts, withKeepalive } from "./idle.js";
import type { SyncTimeouts } from "./idle.js";
import { CACHE_DIR } from "./cache-dir.js";
import type { WalkEntry } from "./walk.js";
import { ownerTag, sweepLeftovers } from "./leftovers.js";

const OWN_TAG = ownerTag();

export type CompressionSetting = "auto" | "off" | number;

export interface SyncSourceOptions {
  /** The volume's root directory. */
  root: string;
  /**
   * The state directory for this volume (hash cache, block lists): a path, or a function asked at each round's start
   * (registry.ts's syncStateDir: the volume's reserved cache directory while it has room, else the agent's own).
   * Inside the volume only under its cache directory, which the walk hides.
   */
  stateDir: string | (() => string);
  logger: Logger;
  /** Initial bandwidth limit; 0 = unlimited. */
  bandwidthBytesPerSecond?: number;
  compression?: CompressionSetting;
  clock?: Clock;
  /** Default: from the environment (idle.ts). */
  timeouts?: SyncTimeouts;
  /**
   * For tests: runs between the walk's lstat of an entry and its open (or readlink), the window in which a live app's
   * delete must not fail the round. Never set in production.
   */
  beforeOpen?: (relativePath: string) => void;
}

export interface RoundOptions {
  /**
   * The limit the peer asked for this round (0 = none): applied to this round only, once it runs, and never above the
   * volume's limit. A refused round applies nothing.
   */
  bandwidthBytesPerSecond?: number;
}

export interface SyncSource {
  /** Runs one round: consumes the target's frames, produces frames for the target. */
  serve(up: AsyncIterable<Uint8Array>, signal?: AbortSignal, round?: RoundOptions): AsyncGenerator<Uint8Array>;
  /**
   * Changes the volume's limit (the coordinator's), also while a round runs: it then replaces what the round's peer
   * asked for, since the coordinator's latest word wins.
   */
  setBandwidth(bytesPerSecond: number): void;
}

/** What a round's frames wait for: the volume's bucket and the round's own, whichever is stricter. */
interface Limiter {
  readonly bytesPerSecond: number;
  take(bytes: number, signal?: AbortSignal): Promise<void>;
}

function pairedLimiter(volume: TokenBucket, round: TokenBucket): Limiter {
  return {
    get bytesPerSecond() {
      const a = volume.bytesPerSecond;
      const b = round.bytesPerSecond;
      return a === 0 ? b : b === 0 ? a : Math.min(a, b);
    },
    async take(bytes, signal) {
      await round.take(bytes, signal);
      await volume.take(bytes, signal);
    },
  };
}

// One frame's worth: frames stay ~256 KiB, so the transport's 16-message write buffer holds ~4 MiB, not 16.
const READ_CHUNK_BYTES = 256 * 1024;
/**
 * A large file is read 4 MiB at a time, one read ahead: each read is a trip through libuv's pool and a turn of the
 * event loop (~40 us), which at 256 KiB left the source idle for half of a 1 GiB database's diff at the final round
 * (interleaved medians of 5: the round took 1.15 s with 256 KiB reads, 1.00 s with 4 MiB). Frames stay at their
 * size: the diff flushes within a read.
 */
const LARGE_READ_BYTES = 4 * 1024 * 1024;
/**
 * Chunks of a large file read ahead at once, on two of libuv's threads, while one is diffed: one copy from the page
 * cache at a time was what a final round's diff waited for. Reading and fingerprinting a 1 GiB file alone: 264-318 ms
 * with one chunk ahead, 207-229 ms with two; warm final rounds on the bench's final tree, interleaved, 4 pairs of 2:
 * 1,048 -> 957 ms median. 4 MiB more per round that reads a large file.
 */
const READ_AHEAD_CHUNKS = 2;
/** Changed blocks are coalesced into data records of at most this size. */
const DATA_RECORD_BYTES = 256 * 1024;
const O_NOFOLLOW = fs.constants.O_NOFOLLOW;
const O_NONBLOCK = fs.constants.O_NONBLOCK;

export function createSyncSource(options: SyncSourceOptions): SyncSource {
  const root = path.resolve(options.root);
  const stateDirOf = (): string => path.resolve(typeof options.stateDir === "string" ? options.stateDir : options.stateDir());
  const bucket = new TokenBucket(options.bandwidthBytesPerSecond ?? 0, options.clock);
  const compression = options.compression ?? "auto";
  const timeouts = options.timeouts ?? syncTimeouts();
  let running: TokenBucket | undefined;
  return {
    setBandwidth(bytesPerSecond) {
      bucket.setRate(bytesPerSecond);
      running?.setRate(0);
    },
    async *serve(up, signal, roundOptions = {}) {
      if (running !== undefined) throw new TheseusError("failed_precondition", `a round is already running for ${root}`);
      const requested = roundOptions.bandwidthBytesPerSecond ?? 0;
      if (!Number.isSafeInteger(requested) || requested < 0) throw new TheseusError("invalid_argument", `bandwidth limit ${requested} is not a byte rate`);
      const roundBucket = new TokenBucket(requested, options.clock);
      running = roundBucket;
      try {
        const stateDir = stateDirOf();
        fs.mkdirSync(stateDir, { recursive: true });
        // Scratch files of this volume's killed rounds (their owners are dead; this round is the only one here).
        sweepLeftovers(stateDir, options.logger);
        const round = new SourceRound(root, stateDir, options.logger, pairedLimiter(bucket, roundBucket), compression, up, signal, options.beforeOpen);
        // An empty frame whenever the round has sent nothing for a while (unchanged files, waiting for the index).
        yield* withKeepalive(round.run(), timeouts.keepaliveMs);
      } finally {
        running = undefined;
      }
    },
  };
}

/** Pulls the target's records one frame at a time; the hot path peeks synchronously. */
class UpCursor {
  private recs: SyncRecord[] = [];
  private i = 0;
  private ended = false;
  private readonly decoder = new FrameDecoder();
  /**
   * `onFrame(wire, raw)` counts each of the target's frames: its index is traffic too (20 MB for 300k unchanged
   * files), which the round's statistics, the prediction and the bandwidth limit must see.
   */
  constructor(
    private readonly it: AsyncIterator<Uint8Array>,
    private readonly onFrame: (wireBytes: number, rawBytes: number) => Promise<void>,
    /** Takes the block lists the target offers (list-offers.ts): they are not records of its index. */
    private readonly offers: OfferedLists,
  ) {}

  /** The current record, undefined at the end of the stream, or null when a frame must be awaited first. */
  peekSync(): SyncRecord | undefined | null {
    this.takeOffers();
    if (this.i < this.recs.length) return this.recs[this.i];
    return this.ended ? undefined : null;
  }
  async peek(): Promise<SyncRecord | undefined> {
    for (;;) {
      this.takeOffers();
      if (this.i < this.recs.length) return this.recs[this.i];
      if (this.ended) return undefined;
      const r = await this.it.next();
      if (r.done === true) {
        this.ended = true;
        return undefined;
      }
      const raw = this.decoder.decode(r.value);
      await this.onFrame(r.value.length, raw.length);
      this.recs = decodeFrameRecords(raw);
      this.i = 0;
    }
  }
  advance(): void {
    this.i++;
  }
  /** The target's index ended: an offer after it is refused. */
  endOfIndex(): void {
    this.offers.endOfIndex();
  }
  private takeOffers(): void {
    for (let r = this.recs[this.i]; r !== undefined; r = this.recs[++this.i]) {
      if (r.t !== "list_offer") return this.offers.expectComplete();
      this.offers.take(r);
    }
  }
}

/** A large file to stream; `finish` records it once streamed. */
interface PendingLarge {
  abs: string;
  rel: string;
  meta: Meta;
  /** The size the walk saw: a round sends the file up to there (what is appended meanwhile is the next round's). */
  size: number;
  baseList: BlockList | undefined;
  baseHash: Uint8Array;
  /** The target's copy is torn (a patch of it was cut): what its journal says it holds. */
  torn: TornInfo | undefined;
  finish(hash: Uint8Array, size: number): void;
}

interface TornInfo {
  blocks: number;
  prefixHash: Uint8Array;
  dirtyBlocks: number;
}

interface LinkGroup {
  path: string;
  hash: Uint8Array;
  /** A record was sent for the group's first path this round, so every other path must be re-linked. */
  touched: boolean;
}

class SourceRound {
  private readonly w = FrameEncoder.writer();
  private readonly encoder = new FrameEncoder();
  private readonly readBuf = Buffer.allocUnsafe(READ_CHUNK_BYTES);
  /** The fingerprints of one read's blocks (block-list.ts), taken in one native call. */
  private readonly fpBuf = Buffer.allocUnsafe(Math.ceil(LARGE_READ_BYTES / BLOCK_BYTES) * FINGERPRINT_BYTES);
  /** And their sha256s, when a file is sent whole. */
  private readonly shaBuf = Buffer.allocUnsafe(Math.ceil(LARGE_READ_BYTES / BLOCK_BYTES) * HASH_BYTES);
  /** The read buffers of large files (READ_AHEAD_CHUNKS + 1), made at the round's first one and kept for the others. */
  private largeBufs: Buffer[] | undefined;
  private readonly blocks: BlockStore;
  private readonly stats: RoundStatsWire = emptyRoundStats();
  private readonly startedMs = Date.now();
  private lastTargetPath: string | undefined;
  private lastTargetRecord: SyncRecord | undefined;
  private indexEnded = false;
  private targetBusy = 0;
  private readonly partials = new Map<string, { blocks: number; prefixHash: Uint8Array }>();
  private readonly torns = new Map<string, TornInfo & { baseHash: Uint8Array }>();
  /** Entries deleted between the walk's lstat and their open (logged; the next round sees them gone). */
  private vanishedCount = 0;
  private readonly turns = new LoopTurns();
  /** The target's entries sent without a hash (its cache lost), which entry() must answer (see entry_unhashed). */
  private readonly unhashed = new WeakSet<IndexEntry>();
  /** What this round reads to verify vouched files. */
  private readonly verify = new VerifyBudget();

  constructor(
    private readonly root: string,
    private readonly stateDir: string,
    private readonly logger: Logger,
    private readonly bucket: Limiter,
    private readonly compression: CompressionSetting,
    private readonly up: AsyncIterable<Uint8Array>,
    private readonly signal: AbortSignal | undefined,
    private readonly beforeOpen: ((relativePath: string) => void) | undefined,
  ) {
    this.blocks = new BlockStore(stateDir);
  }

  async *run(): AsyncGenerator<Uint8Array> {
    const offers = new OfferedLists(this.blocks, this.stats, this.logger);
    try {
      yield* this.serveRound(offers);
    } finally {
      // A list half received when the round failed (or the target hung up) is not kept.
      offers.close();
    }
  }

  private async *serveRound(offers: OfferedLists): AsyncGenerator<Uint8Array> {
    const cursor = new UpCursor(
      this.up[Symbol.asyncIterator](),
      async (wire, raw) => {
        this.stats.wireBytes += wire;
        this.stats.rawBytes += raw;
        // Both directions share the link, so both draw on the limit.
        await this.bucket.take(wire, this.signal);
      },
      offers,
    );
    const start = await cursor.peek();
    if (start?.t !== "start") throw new TheseusError("protocol", "the target did not open the round with a start record");
    if (start.version !== PROTOCOL_VERSION) {
      throw new TheseusError("failed_precondition", `the target speaks sync protocol ${start.version}, this agent ${PROTOCOL_VERSION}`, {
        hint: "run the same Theseus version on both clusters",
      });
    }
    cursor.advance();
    this.chooseLevel();
    // The block lists we hold, before we wait for anything more of the target's: it offers the others
    // (list-offers.ts), and waits for these at its first large file.
    for (const rec of heldListRecords(this.blocks)) this.emit(rec);
    yield* this.flush();
    // Large files the target holds in part from a round cut short: it keeps their verified first blocks.
    // And large files it holds torn (an in-place patch cut short), with what of them is verified, unknown and old.
    for (let r = await cursor.peek(); r?.t === "partial" || r?.t === "torn"; r = await cursor.peek()) {
      validatePeerPath(r.path);
      if (r.t === "partial" && this.partials.size < 16) this.partials.set(r.path, { blocks: r.blocks, prefixHash: r.prefixHash });
      if (r.t === "torn" && this.torns.size < 16) {
        this.torns.set(r.path, { baseHash: r.baseHash, blocks: r.blocks, prefixHash: r.prefixHash, dirtyBlocks: r.dirtyBlocks });
      }
      cursor.advance();
    }
    const memo = readMemo(this.stateDir);
    this.stats.previousRoundEndMs = memo.lastRoundEndMs;
    const cache = new EntryFileReader(path.join(this.stateDir, "index"));
    if (cache.rejected) {
      this.logger.info({ root: this.root }, "the hash cache is of another format: rebuilt this round, as after a lost cache");
    }
    const next = new EntryFileWriter(path.join(this.stateDir, `index.new.${OWN_TAG}`));
    const digest = new VolumeDigest(start.preserveOwner);
    const groups = new Map<string, LinkGroup>();
    const keepBlocks = new Set<string>();
    let dropWithin: string | undefined;
    let committed = false;
    try {
      // A volume that was a target keeps its lock while a round writes it; the lock is never data.
      for (const w of walk(this.root, SKIP_AT_ROOT)) {
        throwIfAborted(this.signal);
        this.stats.entriesScanned++;
        // Target entries before this path are gone from the source: delete them (a deleted directory takes its subtree).
        let t: IndexEntry | undefined;
        for (;;) {
          let e = this.peekTargetSync(cursor);
          if (e === null) e = this.classify(await cursor.peek(), cursor);
          if (e === undefined) break;
          if (dropWithin !== undefined && isWithin(e.path, dropWithin) && e.path !== dropWithin) {
            cursor.advance();
            continue;
          }
          const c = comparePaths(e.path, w.path);
          if (c > 0) break;
          cursor.advance();
          if (c === 0) {
            t = e;
            break;
          }
          this.emit({ t: "delete", path: e.path });
          this.stats.entriesDeleted++;
          if (e.type === "dir") dropWithin = e.path;
          // Any number of deletions may fall between two of our entries (a mass delete, or a flood from a hostile
          // target): flush them in frames of the usual size, never one frame per gap.
          if (this.w.length >= FRAME_TARGET_BYTES) yield* this.flush();
        }
        // A directory on the target replaced by something else here: its subtree goes with it.
        if (t !== undefined && t.type === "dir" && w.type !== "dir") dropWithin = t.path;
        const pending = this.entry(w, t, start, cache, next, digest, groups, keepBlocks);
        if (pending !== undefined) {
          const res = yield* this.sendLarge(pending.abs, pending.rel, pending.meta, pending.baseList, pending.baseHash, pending.size, pending.torn);
          if (res === undefined) this.vanished(w.path, t);
          else pending.finish(res.hash, res.size);
        }
        if (this.w.length >= FRAME_TARGET_BYTES) yield* this.flush();
        // Let the event loop run (frames out, the peer's frames in, timers) during long stretches of unchanged files.
        if (this.turns.due()) await this.turns.turn();
      }
      for (;;) {
        let e = this.peekTargetSync(cursor);
        if (e === null) e = this.classify(await cursor.peek(), cursor);
        if (e === undefined) break;
        cursor.advance();
        if (dropWithin !== undefined && isWithin(e.path, dropWithin) && e.path !== dropWithin) continue;
        this.emit({ t: "delete", path: e.path });
        this.stats.entriesDeleted++;
        if (e.type === "dir") dropWithin = e.path;
        if (this.w.length >= FRAME_TARGET_BYTES) yield* this.flush();
      }
      if (!this.indexEnded) throw new TheseusError("protocol", "the target's index ended without its end record");
      cache.close();
      next.commit(path.join(this.stateDir, "index"));
      committed = true;
      this.blocks.retainOnly(keepBlocks);
      const endMs = Date.now();
      writeMemo(this.stateDir, { lastRoundEndMs: endMs });
      yield* this.flush();
      // Wire bytes of the end frame itself are not counted: the stats travel inside it (nor the target's load reports
      // after this point: a few bytes every 250 ms).
      this.emit({ t: "end", digest: digest.digest(), stats: { ...this.stats } });
      yield* this.flush();
      this.logger.info(
        {
          root: this.root,
          ...this.stats,
          vanished: this.vanishedCount,
          verifiedFiles: this.verify.files,
          verifiedBytes: this.verify.bytes,
          durationMs: endMs - this.startedMs,
        },
        "sync round sent",
      );
    } catch (e) {
      const err = TheseusError.from(e);
      if (err.code === "cancelled") throw err;
      // Tell the target why, in-band: its error then names the file, whatever the transport does with exceptions.
      this.w.take();
      // The record has no hint field: the fix travels in the message, so the user still reads what to do.
      this.emit({ t: "error", code: err.code, message: err.hint === undefined ? err.message : `${err.message} (${err.hint})` });
      yield* this.flush();
      this.logger.warn({ root: this.root, err: err.message }, "sync round failed on the source");
    } finally {
      // Also reached when the target hangs up (the transport returns this generator at a yield).
      cache.close();
      if (!committed) next.abort();
    }
  }

  /** The target's current index entry; undefined after its index ended; null when a frame must be awaited first. */
  private peekTargetSync(cursor: UpCursor): IndexEntry | undefined | null {
    if (this.indexEnded) return undefined;
    const r = cursor.peekSync();
    return r === null ? null : this.classify(r, cursor);
  }

  private classify(r: SyncRecord | undefined, cursor: UpCursor): IndexEntry | undefined {
    if (this.indexEnded) return undefined;
    if (r === undefined) throw new TheseusError("protocol", "the target's stream ended before its index did");
    if (r.t === "index_end") {
      this.indexEnded = true;
      cursor.endOfIndex();
      cursor.advance();
      this.drainLoad(cursor);
      return undefined;
    }
    return this.targetEntry(r);
  }

  /**
   * After its index, the target reports how busy it is applying. A busy target, not the link, is then what makes us
   * wait, and compression would only add to its work: adapt() uses this to tell a slow link from a slow target.
   */
  private drainLoad(cursor: UpCursor): void {
    void (async () => {
      try {
        for (let r = await cursor.peek(); r !== undefined; r = await cursor.peek()) {
          if (r.t === "load") this.targetBusy = r.busyPermille / 1000;
          cursor.advance();
        }
      } catch {
        // The stream failing is reported by the round itself.
      }
    })();
  }

  private targetEntry(r: SyncRecord): IndexEntry | undefined {
    if (r.t !== "entry" && r.t !== "entry_unhashed") throw new TheseusError("protocol", `unexpected ${r.t} record in the target's index`);
    const e = r.e;
    // The same record is peeked again until the walk passes it: validate it once.
    if (r === this.lastTargetRecord) return e;
    this.lastTargetRecord = r;
    if (r.t === "entry_unhashed") this.unhashed.add(e);
    validatePeerPath(e.path, true);
    if (this.lastTargetPath !== undefined && comparePaths(this.lastTargetPath, e.path) >= 0) {
      throw new TheseusError("protocol", `the target's index is out of order at ${JSON.stringify(e.path)}`);
    }
    this.lastTargetPath = e.path;
    return e;
  }

  private emit(rec: SyncRecord): void {
    encodeRecord(this.w, rec);
  }

  private chooseLevel(): void {
    if (this.compression === "off") this.encoder.setLevel(0);
    else if (typeof this.compression === "number") this.encoder.setLevel(this.compression);
    else {
      // "auto": with a limit, the link is the bottleneck below a few hundred MB/s and zstd pays; without one, start raw
      // (loopback and fast links are CPU-bound) and let adapt() switch on compression when the consumer is slow.
      const rate = this.bucket.bytesPerSecond;
      this.encoder.setLevel(rate === 0 ? 0 : rate < 40e6 ? 3 : rate < 300e6 ? 1 : 0);
    }
  }

  /**
   * In auto mode without a limit: compress when the link is the bottleneck, which shows as this
   * process idling (its event loop waits for the transport to drain) while the target is not busy either. Time spent
   * inside `yield` is no signal: it includes the transport's own CPU work (serialising, TLS). Stop compressing when we
   * become CPU-bound or the target does.
   */
  private frames = 0;
  private windowWire = 0;
  private windowStart = performance.now();
  private elu = performance.eventLoopUtilization();
  private adapt(): void {
    if (this.compression !== "auto") return;
    if (this.bucket.bytesPerSecond > 0) {
      this.chooseLevel();
      return;
    }
    // Decide every 32 frames or 8 MiB, whichever comes first: on a slow link, 32 large frames would take seconds.
    if (++this.frames < 32 && this.windowWire < 8 * 1024 * 1024) return;
    this.frames = 0;
    const now = performance.now();
    const elapsed = now - this.windowStart;
    const rate = (this.windowWire / Math.max(1, elapsed)) * 1000;
    const elu = performance.eventLoopUtilization();
    const busy = performance.eventLoopUtilization(elu, this.elu).utilization;
    this.elu = elu;
    const targetBound = this.targetBusy > 0.7;
    if (this.encoder.currentLevel === 0 && busy < 0.5 && !targetBound && rate < 80e6) this.encoder.setLevel(rate < 30e6 ? 3 : 1);
    else if (this.encoder.currentLevel > 0 && (busy > 0.85 || targetBound)) this.encoder.setLevel(0);
    this.windowStart = now;
    this.windowWire = 0;
  }

  private async *flush(): AsyncGenerator<Uint8Array> {
    if (this.w.length === 0) return;
    const { frame, rawBytes } = this.encoder.encode(this.w);
    this.stats.rawBytes += rawBytes;
    this.stats.wireBytes += frame.length;
    this.windowWire += frame.length;
    await this.bucket.take(frame.length, this.signal);
    yield frame;
    // A frame handed over is written only when the loop turns: do not sit on it through a large file's hashing.
    if (this.turns.due()) await this.turns.turn();
    this.adapt();
  }

  private meta(w: WalkEntry, start: Extract<SyncRecord, { t: "start" }>): Meta {
    const m = metaOf(w.st, w.type === "special" ? "file" : w.type);
    // The target drops set-id bits of files (a root agent would otherwise plant setuid-root programs): what we send
    // and digest is what it will hold.
    if (start.stripSetid && w.type === "file" && (m.mode & SETID_BITS) !== 0) {
      m.mode &= ~SETID_BITS;
      this.stats.setidStripped++;
    }
    if (!start.preserveOwner && (m.uid !== start.targetUid || m.gid !== start.targetGid)) this.stats.ownersNotPreserved++;
    return m;
  }

  private entry(
    w: WalkEntry,
    t: IndexEntry | undefined,
    start: Extract<SyncRecord, { t: "start" }>,
    cache: EntryFileReader,
    next: EntryFileWriter,
    digest: VolumeDigest,
    groups: Map<string, LinkGroup>,
    keepBlocks: Set<string>,
  ): PendingLarge | undefined {
    const st = w.st;
    if (w.type === "special") {
      // Sockets, fifos and devices are not data; they are counted and named in the statistics, never silently dropped.
      this.stats.specialFilesSkipped++;
      if (this.stats.firstSpecialFile === "") this.stats.firstSpecialFile = w.path;
      if (t !== undefined) {
        this.emit({ t: "delete", path: w.path });
        this.stats.entriesDeleted++;
      }
      return;
    }
    const meta = this.meta(w, start);
    const record = (e: IndexEntry): void => {
      digest.add(e);
      next.addWithStat(e, st.ino, st.mtimeMs, st.ctimeMs);
    };
    const ownersDiffer = (m: Meta): boolean => start.preserveOwner && (m.uid !== meta.uid || m.gid !== meta.gid);
    const metaDiffers = (m: Meta): boolean => m.mode !== meta.mode || m.mtimeUs !== meta.mtimeUs || ownersDiffer(m);

    if (w.type === "dir") {
      // Directory records are always sent (they are few): the target needs each one's mode and mtime to restore after
      // changing its children, and uses them to check the parents of everything it writes.
      this.emit({ t: "dir", path: w.path, meta });
      if (t === undefined || t.type !== "dir" || metaDiffers(t.meta)) this.stats.entriesChanged++;
      record({ path: w.path, type: "dir", meta, size: 0, hash: EMPTY, linkTarget: "", hardlinkTo: "" });
      return;
    }
    if (w.type === "symlink") {
      let target: string;
      try {
        this.beforeOpen?.(w.path);
        target = fs.readlinkSync(this.absOf(w.path));
      } catch (e) {
        if (isVanished(e)) return this.vanished(w.path, t);
        throw walkError(e, w.path);
      }
      if (t === undefined || t.type !== "symlink" || t.linkTarget !== target || ownersDiffer(t.meta)) {
        this.emit({ t: "symlink", path: w.path, meta, target });
        this.stats.entriesChanged++;
      }
      record({ path: w.path, type: "symlink", meta, size: 0, hash: EMPTY, linkTarget: target, hardlinkTo: "" });
      return;
    }

    // Regular file. A later path of a hard-link group is sent as a link to the group's first path.
    const key = st.nlink > 1 ? `${st.dev}:${st.ino}` : undefined;
    const group = key === undefined ? undefined : groups.get(key);
    if (group !== undefined) {
      const same =
        t !== undefined && t.type === "file" && t.hardlinkTo === group.path && !group.touched && equalBytes(t.hash, group.hash);
      if (!same) {
        this.emit({ t: "hardlink", path: w.path, to: group.path, hash: group.hash });
        this.stats.entriesChanged++;
      }
      record({ path: w.path, type: "file", meta, size: st.size, hash: group.hash, linkTarget: "", hardlinkTo: "" });
      return;
    }

    const cached = cache.seek(w.path);
    const tFile = t !== undefined && t.type === "file" && t.hardlinkTo === "" ? t : undefined;
    const targetHas = (h: Uint8Array, n: number): boolean =>
      tFile !== undefined && tFile.size === n && equalBytes(tFile.hash, h);
    const stats = this.stats;
    // The source's own stat-validated cache says what this file holds without reading it.
    let hash: Uint8Array | undefined =
      cached !== undefined && cached.type === "file" && statMatches(cached, st) ? cached.hash : undefined;
    // Whether `hash` is the target's, taken without reading the file (the quick check below); any read clears it.
    let vouched = false;
    if (tFile !== undefined && this.unhashed.has(tFile)) {
      // The target lost its cache and sent this small file unread. When ours has its size, mtime and mode, the
      // target takes our hash for its copy (file_vouch), so that at most one side reads; otherwise its content is
      // unknown (its hash is empty, so nothing below matches it) and the file is sent whole.
      if (sameStat(tFile, meta, st.size)) {
        let h = hash;
        let n = st.size;
        if (h !== undefined) vouched = cached?.vouched === true;
        else {
          const data = this.readSmallFile(this.absOf(w.path), w.path, st.size);
          if (data === undefined) return this.vanished(w.path, t);
          h = sha256(data);
          n = data.length;
        }
        if (n === tFile.size) {
          this.emit({ t: "file_vouch", path: w.path, meta, size: n, hash: h });
          finish(h, n, false);
          return undefined;
        }
        hash = undefined; // it changed while we read it: read again below, and sent
      }
    } else if (hash !== undefined && cached?.vouched === true) {
      // Vouched for in an earlier round and unchanged since: verify it when the round's budget allows (read and
      // hashed below like a changed file, so equal content only clears the flag and other content is sent).
      // A file the target no longer holds with the vouched hash is read anyway, and costs the budget nothing.
      if (targetHas(hash, st.size) && this.verify.take(st.size)) hash = undefined;
      else vouched = true;
    } else if (hash !== undefined && isLarge(st.size) && !this.blocks.stored(hash)) {
      hash = undefined; // list lost
    } else if (cached === undefined && tFile !== undefined && tFile.hash.length === 32 && sameStat(tFile, meta, st.size) && !this.torns.has(w.path)) {
      // No entry at all (the cache was lost, or this is a new source for a target that holds the volume): like
      // rsync's quick check, a file of the target's size, mtime and mode holds the target's content. Not so when
      // the cache has an entry whose stat differs: the file changed since the source last read it, and is read.
      // What this trusts, and how it is verified later, is in docs/architecture.md (the data path, step 2).
      hash = tFile.hash;
      vouched = true;
    }
    let size = st.size;
    let sent = false;

    if (hash !== undefined && targetHas(hash, size)) {
      sent = this.metaOnly(w.path, meta, size, hash, tFile as IndexEntry, metaDiffers);
    } else if (!isLarge(size)) {
      vouched = false;
      const data = this.readSmallFile(this.absOf(w.path), w.path, size);
      if (data === undefined) return this.vanished(w.path, t);
      hash = sha256(data);
      size = data.length;
      if (targetHas(hash, size)) {
        sent = this.metaOnly(w.path, meta, size, hash, tFile as IndexEntry, metaDiffers);
      } else if (tFile !== undefined && isAppend(tFile, data)) {
        // Logs and journals grow at the end: send what was appended, not the file again (issue 12).
        const tail = data.subarray(tFile.size);
        this.emit({ t: "file_append", path: w.path, meta, baseSize: tFile.size, baseHash: tFile.hash, hash, tail });
        this.stats.bytesChanged += tail.length;
        this.stats.entriesChanged++;
        sent = true;
      } else {
        this.emit({ t: "file_inline", path: w.path, meta, hash, data });
        this.stats.bytesChanged += data.length;
        this.stats.entriesChanged++;
        sent = true;
      }
    } else {
      vouched = false;
      // Large and changed (or unknown): diff its blocks against the list of the content the target holds, when this
      // source has that list (it sent or saw that content before). Without a list but with an equal size (a lost
      // cache), hash first: an unchanged file then costs a read, not a resend.
      // A torn copy is diffed against the base its journal names (the content it held before the cut patch).
      const torn = tFile !== undefined ? this.torns.get(w.path) : undefined;
      const baseHash = torn?.baseHash ?? tFile?.hash ?? EMPTY;
      const baseList = tFile !== undefined && (torn !== undefined || isLarge(tFile.size)) ? this.blocks.get(baseHash) : undefined;
      let known = false;
      if (hash === undefined && baseList === undefined && torn === undefined && tFile !== undefined && tFile.size === size) {
        const abs = this.absOf(w.path);
        const h = this.hashWhole(abs, w.path, size, allHoles(abs, st));
        if (h === undefined) return this.vanished(w.path, t);
        if (h.blocks !== undefined) this.blocks.put(h.hash, h.blocks);
        if (h.size === size && targetHas(h.hash, size)) {
          hash = h.hash;
          known = true;
          sent = this.metaOnly(w.path, meta, size, hash, tFile, metaDiffers);
        }
      }
      if (!known) {
        // Streaming is the one asynchronous step (it yields frames): the caller runs it, then calls finish.
        return {
          abs: this.absOf(w.path),
          rel: w.path,
          meta,
          size,
          baseList,
          baseHash,
          torn: baseList === undefined ? undefined : torn,
          finish: (h, n) => finish(h, n, true),
        };
      }
    }
    if (hash === undefined) throw new TheseusError("internal", `no content hash for ${w.path}`);
    finish(hash, size, sent);
    return undefined;

    function finish(h: Uint8Array, n: number, wasSent: boolean): void {
      if (isLarge(n)) keepBlocks.add(Buffer.from(h).toString("hex"));
      if (key !== undefined) groups.set(key, { path: w.path, hash: h, touched: wasSent || (t !== undefined && t.hardlinkTo !== "") });
      const entry: IndexEntry = { path: w.path, type: "file", meta, size: n, hash: h, linkTarget: "", hardlinkTo: "" };
      digest.add(entry);
      // The cache remembers the stat taken before reading: if the file changed while being read, the next round re-reads.
      next.addWithStat(entry, st.ino, st.size === n ? st.mtimeMs : -1, st.ctimeMs, vouched);
      if (vouched) {
        stats.vouchedUnverified++;
        stats.vouchedUnverifiedBytes += n;
      }
    }
  }

  /** The absolute path of the volume's entry at `p` (built only when the entry is read: most are not). */
  private absOf(p: string): string {
    return p === "" ? this.root : `${this.root}/${p}`;
  }

  /** The target holds this content: send the metadata if it differs. Returns whether a record was sent. */
  private metaOnly(p: string, meta: Meta, size: number, hash: Uint8Array, t: IndexEntry, metaDiffers: (m: Meta) => boolean): boolean {
    if (!metaDiffers(t.meta)) return false;
    this.emit({ t: "file_meta", path: p, meta, size, hash });
    this.stats.entriesChanged++;
    return true;
  }

  /**
   * A file the walk saw is gone when we open it: the live app deleted it (or its directory) in between. That is the
   * app's delete, not a failure: the target deletes its copy too, and the path is in neither side's digest.
   */
  private vanished(p: string, t: IndexEntry | undefined): undefined {
    this.vanishedCount++;
    if (t !== undefined) {
      this.emit({ t: "delete", path: p });
      this.stats.entriesDeleted++;
    }
    return undefined;
  }

  /** Opens a file the walk saw; undefined when it has vanished since (see vanished()). */
  private openFile(abs: string, rel: string): number | undefined {
    try {
      this.beforeOpen?.(rel);
      // O_NOFOLLOW: a file swapped for a symlink after the walk's lstat is refused, never followed out of the volume.
      return fs.openSync(abs, fs.constants.O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
    } catch (e) {
      if (isVanished(e)) return undefined;
      throw walkError(e, rel);
    }
  }

  private readSmallFile(abs: string, rel: string, size: number): Buffer | undefined {
    const fd = this.openFile(abs, rel);
    if (fd === undefined) return undefined;
    try {
      const data = readSmall(fd, size, this.readBuf);
      this.stats.bytesRead += data.length;
      // The read buffer is reused: copy what will sit in the frame until it is flushed.
      // May alias the reused read buffer: callers encode it into the frame before the next read.
      return data;
    } catch (e) {
      throw walkError(e, rel);
    } finally {
      fs.closeSync(fd);
    }
  }

  private hashWhole(abs: string, rel: string, size: number, holes: boolean): ReturnType<typeof hashFile> | undefined {
    const fd = this.openFile(abs, rel);
    if (fd === undefined) return undefined;
    try {
      const h = hashFile(fd, size, this.readBuf, holes, true);
      this.stats.bytesRead += h.bytesRead;
      return h;
    } catch (e) {
      throw walkError(e, rel);
    } finally {
      fs.closeSync(fd);
    }
  }

  /**
   * Streams a large file: every block when the target has no usable base ("whole"), else only blocks whose hash differs
   * from the base list ("patch"). All-zero blocks travel as zero records, which keeps sparse files sparse; a file that
   * is provably all holes is not read at all: its zero runs are one record, whatever its size.
   */
  private async *sendLarge(
    abs: string,
    rel: string,
    meta: Meta,
    baseList: BlockList | undefined,
    baseHash: Uint8Array,
    sizeAtWalk: number,
    torn: TornInfo | undefined,
  ): AsyncGenerator<Uint8Array, { hash: Buffer; size: number } | undefined> {
    const mode = baseList === undefined ? "whole" : "patch";
    const fd = this.openFile(abs, rel);
    if (fd === undefined) return undefined; // vanished before anything of it was sent
    let list = new BlockList();
    let pos = 0;
    let reader: ReadAhead | undefined;
    try {
      const holes = allHoles(abs, fs.fstatSync(fd));
      // Resume: when the target kept the first blocks of this file from a cut round and they still match what the
      // file holds now, read and hash them (for the file's hash) but send only the rest.
      // A torn copy's verified prefix is resumed the same way, and its unknown blocks are all sent.
      const partial = holes ? undefined : mode === "whole" ? this.partials.get(rel) : torn;
      const forceUntil = torn?.dirtyBlocks ?? 0;
      if (partial !== undefined && partial.blocks > 0) {
        const prefixBytes = partial.blocks * BLOCK_BYTES;
        while (pos < prefixBytes) {
          const n = readAt(fd, this.readBuf, Math.min(this.readBuf.length, prefixBytes - pos), pos, rel);
          if (n === 0 || n % BLOCK_BYTES !== 0) break;
          this.stats.bytesRead += n;
          list.appendData(this.readBuf.subarray(0, n), true);
          pos += n;
        }
        if (pos !== prefixBytes || !list.digest().equals(partial.prefixHash)) {
          pos = 0;
          list = new BlockList();
        }
      }
      this.emit({ t: "file_begin", path: rel, meta, mode, baseHash: mode === "patch" ? baseHash : EMPTY, resumeFrom: pos });
      this.stats.entriesChanged++;
      if (holes) {
        // Only the blocks the base held data in changed; past the base's end, everything did.
        const full = Math.floor(sizeAtWalk / BLOCK_BYTES);
        const zeros = (from: number, to: number): void => {
          this.emit({ t: "zero", offset: from * BLOCK_BYTES, length: (to - from) * BLOCK_BYTES });
          this.stats.bytesChanged += (to - from) * BLOCK_BYTES;
        };
        // A torn copy's unknown blocks are all sent.
        const forced = Math.min(full, forceUntil);
        if (forced > 0) zeros(0, forced);
        const baseBlocks = Math.max(forced, Math.min(full, baseList?.length ?? 0));
        baseList?.forEachRun(forced, baseBlocks, (from, to, zero) => {
          if (!zero) zeros(from, to);
        });
        if (full > baseBlocks) zeros(baseBlocks, full);
        list.appendZeros(full);
        pos = full * BLOCK_BYTES; // a short last block, if any, is read below
      }
      // The run of base blocks found unchanged and not yet copied into the new list: [keepFrom, b).
      let keepFrom = -1;
      const keepBase = (b: number): void => {
        if (keepFrom < 0 || baseList === undefined) return;
        list.copyFrom(baseList, keepFrom, b);
        keepFrom = -1;
      };
      // Read no further than the walk's stat: a log appended faster than the round reads it would otherwise keep
      // the round going for ever (and a pre-copy round never ends), while its tail belongs to the next round.
      this.largeBufs ??= Array.from({ length: READ_AHEAD_CHUNKS + 1 }, () => Buffer.allocUnsafe(LARGE_READ_BYTES));
      reader = new ReadAhead(fd, this.largeBufs, sizeAtWalk);
      for (;;) {
        throwIfAborted(this.signal);
        if (sizeAtWalk - pos <= 0) break;
        let chunk: Buffer;
        try {
          chunk = await reader.read(pos);
        } catch (e) {
          throw walkError(e, rel);
        }
        const n = chunk.length;
        if (n === 0) break;
        this.stats.bytesRead += n;
        const first = pos / BLOCK_BYTES;
        // Walk the blocks: runs of changed non-zero blocks become data records, runs of zero blocks zero records.
        let runStart = -1;
        let runZero = false;
        const endRun = (endOff: number): void => {
          if (runStart < 0) return;
          if (runZero) this.emit({ t: "zero", offset: pos + runStart, length: endOff - runStart });
          else {
            this.emit({ t: "data", offset: pos + runStart, data: chunk.subarray(runStart, endOff) });
          }
          this.stats.bytesChanged += endOff - runStart;
          runStart = -1;
        };
        // A block whose fingerprint is its base's is unchanged: its sha256 is the base's and is not taken again
        // (block-list.ts says what that trusts); runs of them are copied from the base list in bulk. Every other
        // block is hashed and compared as before.
        // Sent whole, every block needs its sha256: all of them are taken in the same native call. So they are when
        // the base has no fingerprints (a list the target offered, one from before them): its sha256s decide.
        const whole = baseList === undefined;
        const shas = whole || !baseList.hasFingerprints;
        const blocks = shas ? blockHashes(chunk, this.fpBuf, this.shaBuf) : fingerprints(chunk, this.fpBuf);
        for (let i = 0, off = 0, b = first; i < blocks; i++, off += BLOCK_BYTES, b++) {
          // Within a read too: a frame never grows past what the target accepts (MAX_FRAME_RAW_BYTES), whatever
          // mix of runs a 4 MiB read makes. The records written are whole; a run still open refers to the chunk,
          // which stays valid until the next read.
          if (this.w.length >= FRAME_TARGET_BYTES) yield* this.flush();
          const fo = i * FINGERPRINT_BYTES;
          // Runs of blocks matching the base by fingerprint are skipped over in one call (no zero block among them:
          // the base's data blocks are never all-zero, so a zero block's fingerprint matches none of theirs).
          if (!whole && b >= forceUntil && b < baseList.length) {
            const m = baseList.matchingRun(b, this.fpBuf, fo, Math.min(blocks - i, baseList.length - b));
            if (m > 0) {
              if (keepFrom < 0) keepFrom = b;
              endRun(off);
              i += m - 1;
              off += (m - 1) * BLOCK_BYTES;
              b += m - 1;
              continue;
            }
          }
          const end = Math.min(off + BLOCK_BYTES, n);
          const so = i * HASH_BYTES;
          const zero = end - off === BLOCK_BYTES && (shas
            ? this.shaBuf.compare(ZERO_BLOCK_HASH, 0, HASH_BYTES, so, so + HASH_BYTES) === 0
            : this.fpBuf.compare(ZERO_BLOCK_FINGERPRINT, 0, FINGERPRINT_BYTES, fo, fo + FINGERPRINT_BYTES) === 0 && ZERO_BLOCK.compare(chunk, off, end) === 0);
          const diffable = baseList !== undefined && b >= forceUntil && b < baseList.length;
          if (diffable && (zero ? baseList.isZeroAt(b) : baseList.fingerprintMatches(b, this.fpBuf, fo))) {
            if (keepFrom < 0) keepFrom = b;
            endRun(off);
            continue;
          }
          keepBase(b);
          const h = zero ? ZERO_BLOCK_HASH : shas ? this.shaBuf.subarray(so, so + HASH_BYTES) : sha256(chunk.subarray(off, end));
          list.append(h, zero ? undefined : this.fpBuf.subarray(fo, fo + FINGERPRINT_BYTES));
          // Without the base's fingerprints (a list from before they existed, or the target's), its hash decides: the
          // read's sha256s when they were all taken, else this block's (a zero block's matched above, or not at all).
          if (diffable && !zero && (shas ? baseList.hashMatches(b, this.shaBuf, so) : baseList.at(b).equals(h))) {
            endRun(off);
            continue;
          }
          if (runStart >= 0 && (zero !== runZero || (!zero && off - runStart >= DATA_RECORD_BYTES))) endRun(off);
          if (runStart < 0) {
            runStart = off;
            runZero = zero;
          }
        }
        endRun(n);
        pos += n;
        if (this.w.length >= FRAME_TARGET_BYTES) yield* this.flush();
        if (n < LARGE_READ_BYTES && n % BLOCK_BYTES !== 0) break;
      }
      keepBase(pos / BLOCK_BYTES);
    } finally {
      await reader?.settle();
      fs.closeSync(fd);
    }
    const hash = list.digest();
    this.blocks.put(hash, list);
    this.emit({ t: "file_end", size: pos, hash });
    return { hash, size: pos };
  }
}

const EMPTY = new Uint8Array(0);
const SETID_BITS = 0o6000;
const SKIP_AT_ROOT: ReadonlySet<string> = new Set([LOCK_NAME, CACHE_DIR]);

/** ENOENT: the file is gone; ENOTDIR: a directory above it was replaced by a file. Either way the app's doing. */
function isVanished(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException).code;
  return code === "ENOENT" || code === "ENOTDIR";
}

/**
 * rsync's quick check, with the mode too: the target's entry has the same size, mtime (to the microsecond, as the
 * index carries it) and permission bits as the source's file. (Its hash is checked by the caller: a torn entry has
 * none, and an unhashed one is answered apart.)
 */
function sameStat(t: IndexEntry, meta: Meta, size: number): boolean {
  return t.size === size && t.meta.mtimeUs === meta.mtimeUs && t.meta.mode === meta.mode;
}

/**
 * Whether `data` is the target's copy `t` with bytes appended, and worth sending as its tail: the tail is at most the
 * base's size (half the new file). An append costs the target a read and a hash of its copy, and fails the round when
 * that copy changed meanwhile (the retry then resends it whole), so it must save a real share of the file: at half it
 * saves at least as many bytes as it sends, while past half the whole file costs less than twice the tail (and
 * compresses with its old content as context). Only then is the prefix hashed: a rewritten file pays one extra sha256
 * over bytes just read, microseconds for a small file.
 */
function isAppend(t: IndexEntry, data: Buffer): boolean {
  const tail = data.length - t.size;
  return t.size > 0 && tail > 0 && tail <= t.size && t.hash.length === 32 && sha256(data.subarray(0, t.size)).equals(t.hash);
}

function readAt(fd: number, buf: Buffer, length: number, position: number, rel: string): number {
  try {
    return fs.readSync(fd, buf, 0, length, position);
  } catch (e) {
    throw walkError(e, rel);
  }
}

/** For hashes (32 bytes), once or twice per file: a loop, where a Buffer view and a native call cost more. */
function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
