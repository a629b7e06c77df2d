// The demo app's storage engine: a write-ahead record log plus a page file updated in place, in one data directory.
//
//   append(payload) -> frame appended to records.log, fdatasync'd, then one page of pages.db rewritten -> {seq, sha256}
//
// Appends that arrive while a flush is running are committed together with one fdatasync (group commit), which keeps
// the fsync rate bounded under load without ever acknowledging a record that is not on disk.
//
// The log is written in segments, as databases write their WAL (PostgreSQL's are 16 MiB): records.log is the active
// one; once it holds segmentBytes, the next commit first renames it to records-<first seq>.log, which is never written
// again, and starts a new records.log. An incremental sync round then re-reads only the active segment and the page
// file instead of the whole history, so the final round of a cutover stays short however long the app has written.
//
// Recovery on open:
// - after a graceful close, clean-shutdown.json records the log's size and last frame; if the log still matches it,
//   opening costs one frame check, so a server started on a freshly migrated volume is ready at once;
// - otherwise (a crash, or a log that changed since) the whole log is scanned: a torn tail (a record whose append was
//   interrupted, hence never acknowledged) is truncated, damage anywhere else refuses the start with data_loss, and
//   every page is brought back to the state its last record gave it (redo), which repairs stale and torn pages.
import { mkdir, open, readFile, readdir, rename, unlink } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { TheseusError, systemErrorCode } from "../../common/index.js";
import type { Logger } from "../../common/index.js";
import { acquireDataDirLock } from "./lock.js";
import type { DataDirLock } from "./lock.js";
import { buildPage, checkPage, formatPageFile, geometryFor, pageForSeq, readGeometry } from "./page-file.js";
import type { PageGeometry } from "./page-file.js";
import { RECORD_HEADER_BYTES, decodeRecordHeader, encodeRecord, scanRecordLog, sha256 } from "./record-log.js";

export const RECORDS_FILE = "records.log";
export const PAGES_FILE = "pages.db";
export const CLEAN_SHUTDOWN_FILE = "clean-shutdown.json";
/** A closed segment of the log: records-<seq of its first record, 12 digits>.log. */
export const SEGMENT_FILE = /^records-(\d{12})\.log$/;

export function segmentFileName(firstSeq: number): string {
  return `records-${String(firstSeq).padStart(12, "0")}.log`;
}

/** The log's files in order: the closed segments by first seq, then the active records.log (whether or not it exists). */
export async function logFiles(dataDir: string): Promise<string[]> {
  const names = await readdir(dataDir).catch(() => [] as string[]);
  return [...names.filter((n) => SEGMENT_FILE.test(n)).sort(), RECORDS_FILE];
}

export interface RecordStoreOptions {
  readonly dataDir: string;
  /** Size of pages.db when it is created; an existing file keeps its own geometry. */
  readonly pageFileBytes?: number;
  readonly pageSizeBytes?: number;
  /** How often dirty pages are fsync'd (the log is fsync'd before every ack regardless). */
  readonly checkpointIntervalMs?: number;
  /** Most bytes of payload committed by one group commit. */
  readonly maxBatchBytes?: number;
  /** The active segment is closed once it holds this many bytes (default 16 MiB). */
  readonly segmentBytes?: number;
  readonly logger: Logger;
}

export interface RecoveryReport {
  /** fresh: a new volume; clean: opened after a graceful close; crash: full scan and redo. */
  readonly mode: "fresh" | "clean" | "crash";
  readonly records: number;
  readonly truncatedBytes: number;
  readonly pagesRepaired: number;
  readonly durationMs: number;
}

export interface StoreStats {
  readonly state: StoreState;
  readonly records: number;
  readonly lastSeq: number;
  readonly logBytes: number;
  readonly pageSizeBytes: number;
  readonly pageCount: number;
  readonly appended: number;
  readonly appendedBytes: number;
  readonly groupCommits: number;
  readonly pageWrites: number;
  readonly checkpoints: number;
  readonly recovery: RecoveryReport;
}

export type StoreState = "open" | "closing" | "closed" | "failed";

export interface AppendResult {
  readonly seq: number;
  readonly sha256: string;
  readonly length: number;
}

interface Pending {
  readonly payload: Buffer;
  readonly digest: Buffer;
  readonly resolve: (r: AppendResult) => void;
  readonly reject: (e: unknown) => void;
}

interface CleanShutdown {
  readonly lastSeq: number;
  readonly logBytes: number;
  readonly lastRecordOffset: number;
}

export class RecordStore {
  private state: StoreState = "open";
  private failure: TheseusError | undefined;
  private queue: Pending[] = [];
  private flushing: Promise<void> | undefined;
  private pagesDirty = false;
  private checkpointing: Promise<void> | undefined;
  private readonly timer: NodeJS.Timeout;
  private counters = { appended: 0, appendedBytes: 0, groupCommits: 0, pageWrites: 0, checkpoints: 0 };

  private constructor(
    private readonly dataDir: string,
    private log: FileHandle,
    private readonly pages: FileHandle,
    private readonly geometry: PageGeometry,
    private readonly lock: DataDirLock,
    private lastSeq: number,
    private logBytes: number,
    private lastRecordOffset: number,
    /** Seq of the active segment's first record (lastSeq + 1 while it is empty). */
    private activeFirstSeq: number,
    readonly recovery: RecoveryReport,
    private readonly maxBatchBytes: number,
    private readonly segmentBytes: number,
    checkpointIntervalMs: number,
    private readonly logger: Logger,
  ) {
    this.timer = setInterval(() => void this.checkpoint().catch((e: unknown) => this.fail(e)), checkpointIntervalMs);
    this.timer.unref();
  }

  static async open(options: RecordStoreOptions): Promise<RecordStore> {
    const started = performance.now();
    const { dataDir, logger } = options;
    await mkdir(dataDir, { recursive: true });
    const lock = await acquireDataDirLock(dataDir);
    if (lock.tookOver !== undefined) logger.warn({ previous: lock.tookOver }, "took over a stale lock: the previous server is gone");
    const handles: FileHandle[] = [];
    try {
      const log = await openOrCreate(join(dataDir, RECORDS_FILE));
      handles.push(log);
      const logSize = (await log.stat()).size;
      const wanted = geometryFor(options.pageFileBytes ?? 16 * 1024 * 1024, options.pageSizeBytes ?? 4096);
      const pagesPath = join(dataDir, PAGES_FILE);
      let pages = await openOrCreate(pagesPath);
      handles.push(pages);
      let geometry = await readGeometry(pages);
      let fresh = false;
      if (geometry === undefined) {
        if (logSize > 0 && (await pages.stat()).size > 0) {
          throw new TheseusError("data_loss", `${pagesPath} has no readable geometry while ${RECORDS_FILE} holds records`, {
            hint: "the page file is damaged beyond redo; run `verify` on this directory to see what survived",
          });
        }
        // A new volume, or one whose first start died while formatting: format now, before any record exists.
        await pages.close();
        handles.pop();
        await formatPageFile(pagesPath, wanted);
        pages = await open(pagesPath, "r+");
        handles.push(pages);
        geometry = wanted;
        fresh = logSize === 0;
      } else if (geometry.pageSizeBytes !== wanted.pageSizeBytes || geometry.pageCount !== wanted.pageCount) {
        logger.info({ existing: geometry, requested: wanted }, "pages.db exists: keeping its geometry");
      }
      await syncDir(dataDir);

      const clean = await readCleanShutdown(dataDir);
      let state: { lastSeq: number; logBytes: number; lastRecordOffset: number; activeFirstSeq: number; truncatedBytes: number; pagesRepaired: number };
      let mode: RecoveryReport["mode"];
      if (clean !== undefined && (await matchesLog(log, logSize, clean))) {
        state = { ...clean, activeFirstSeq: (await firstSeqOf(log, logSize)) ?? clean.lastSeq + 1, truncatedBytes: 0, pagesRepaired: 0 };
        mode = fresh ? "fresh" : "clean";
      } else {
        state = await crashRecovery(dataDir, log, pages, geometry, logger);
        mode = fresh && state.lastSeq === 0 ? "fresh" : "crash";
      }
      // From the first new write on, the marker would lie: remove it (durably) before accepting any.
      await unlink(join(dataDir, CLEAN_SHUTDOWN_FILE)).catch(ignoreNotFound);
      await syncDir(dataDir);
      const recovery: RecoveryReport = {
        mode,
        records: state.lastSeq,
        truncatedBytes: state.truncatedBytes,
        pagesRepaired: state.pagesRepaired,
        durationMs: Math.round(performance.now() - started),
      };
      logger.info({ recovery, geometry }, "data directory opened");
      return new RecordStore(
        dataDir, log, pages, geometry, lock, state.lastSeq, state.logBytes, state.lastRecordOffset, state.activeFirstSeq, recovery,
        options.maxBatchBytes ?? 8 * 1024 * 1024, options.segmentBytes ?? 16 * 1024 * 1024, options.checkpointIntervalMs ?? 1000, logger,
      );
    } catch (error) {
      for (const h of handles) await h.close().catch(() => undefined);
      await lock.release();
      throw TheseusError.from(error);
    }
  }

  get currentState(): StoreState {
    return this.state;
  }

  /** Appends one record; resolves only once it is fsync'd in the log and its page is rewritten. */
  append(payload: Buffer): Promise<AppendResult> {
    if (this.state !== "open") return Promise.reject(this.unavailable());
    return new Promise<AppendResult>((resolve, reject) => {
      this.queue.push({ payload, digest: sha256(payload), resolve, reject });
      this.kick();
    });
  }

  private kick(): void {
    if (this.flushing !== undefined) return;
    this.flushing = this.flushLoop().finally(() => {
      this.flushing = undefined;
      // An append may have slipped in between the loop's last look at the queue and this callback.
      if (this.queue.length > 0) this.kick();
    });
  }

  stats(): StoreStats {
    return {
      state: this.state,
      records: this.lastSeq,
      lastSeq: this.lastSeq,
      logBytes: this.logBytes,
      pageSizeBytes: this.geometry.pageSizeBytes,
      pageCount: this.geometry.pageCount,
      ...this.counters,
      recovery: this.recovery,
    };
  }

  /**
   * Graceful close: refuses new appends, lets the queued ones commit, fsyncs both files, writes the clean-shutdown
   * marker and releases the lock. Safe to call more than once.
   */
  async close(): Promise<void> {
    if (this.state === "closed" || this.state === "closing") {
      while (this.state === "closing") await new Promise((r) => setTimeout(r, 10));
      return;
    }
    const failed = this.state === "failed";
    this.state = "closing";
    clearInterval(this.timer);
    try {
      while (this.flushing !== undefined) await this.flushing;
      await this.checkpointing;
      if (!failed) {
        await this.pages.sync();
        await this.log.sync();
        await writeCleanShutdown(this.dataDir, { lastSeq: this.lastSeq, logBytes: this.logBytes, lastRecordOffset: this.lastRecordOffset });
      }
    } finally {
      await this.log.close().catch(() => undefined);
      await this.pages.close().catch(() => undefined);
      await this.lock.release();
      this.state = "closed";
      this.logger.info({ lastSeq: this.lastSeq, logBytes: this.logBytes, clean: !failed }, "data directory closed");
    }
  }

  private unavailable(): TheseusError {
    if (this.failure !== undefined) return this.failure;
    return new TheseusError("unavailable", "the server is shutting down", { hint: "retry against the server's new address" });
  }

  private async flushLoop(): Promise<void> {
    while (this.queue.length > 0 && this.failure === undefined) {
      let bytes = 0;
      let n = 0;
      while (n < this.queue.length && (n === 0 || bytes + (this.queue[n]?.payload.length ?? 0) <= this.maxBatchBytes)) {
        bytes += this.queue[n]?.payload.length ?? 0;
        n++;
      }
      const batch = this.queue.splice(0, n);
      try {
        const results = await this.commit(batch);
        batch.forEach((p, i) => p.resolve(results[i] as AppendResult));
      } catch (error) {
        this.fail(error);
        for (const p of batch) p.reject(this.unavailable());
      }
    }
    // After a failure nothing more is written: whatever is queued is refused.
    for (const p of this.queue.splice(0)) p.reject(this.unavailable());
  }

  /**
   * Closes the full active segment under its first record's seq and opens an empty records.log. The rename comes
   * first and is made durable before anything is written to the new file, so a crash in between leaves every record
   * in exactly one segment (an empty or missing records.log is a valid active segment).
   */
  private async rotate(): Promise<void> {
    await this.log.sync();
    await this.log.close();
    await rename(join(this.dataDir, RECORDS_FILE), join(this.dataDir, segmentFileName(this.activeFirstSeq)));
    await syncDir(this.dataDir);
    this.log = await open(join(this.dataDir, RECORDS_FILE), "w+");
    await syncDir(this.dataDir);
    this.logBytes = 0;
    this.lastRecordOffset = 0;
    this.activeFirstSeq = this.lastSeq + 1;
  }

  private async commit(batch: readonly Pending[]): Promise<AppendResult[]> {
    if (this.logBytes >= this.segmentBytes) await this.rotate();
    const frames: Buffer[] = [];
    const results: AppendResult[] = [];
    let offset = this.logBytes;
    let lastOffset = this.lastRecordOffset;
    for (const [i, p] of batch.entries()) {
      const seq = this.lastSeq + 1 + i;
      const frame = encodeRecord(seq, p.payload, p.digest);
      frames.push(frame);
      results.push({ seq, sha256: p.digest.toString("hex"), length: p.payload.length });
      lastOffset = offset;
      offset += frame.length;
    }
    await writevAll(this.log, frames, this.logBytes);
    await this.log.datasync();
    this.lastSeq += batch.length;
    this.logBytes = offset;
    this.lastRecordOffset = lastOffset;
    // The log is durable now; the pages follow it (a crash from here on is repaired by redo at the next start).
    for (const r of results) {
      const pageNo = pageForSeq(r.seq, this.geometry.pageCount);
      await this.pages.write(buildPage(pageNo, r.seq, this.geometry), 0, this.geometry.pageSizeBytes, pageNo * this.geometry.pageSizeBytes);
    }
    this.pagesDirty = true;
    this.counters.appended += batch.length;
    this.counters.appendedBytes += batch.reduce((s, p) => s + p.payload.length, 0);
    this.counters.groupCommits++;
    this.counters.pageWrites += results.length;
    return results;
  }

  private async checkpoint(): Promise<void> {
    if (!this.pagesDirty || this.checkpointing !== undefined || this.state !== "open") return;
    this.pagesDirty = false;
    this.checkpointing = this.pages.sync().finally(() => {
      this.checkpointing = undefined;
    });
    await this.checkpointing;
    this.counters.checkpoints++;
  }

  private fail(error: unknown): void {
    if (this.failure !== undefined) return;
    this.failure = new TheseusError("unavailable", `the data directory failed: ${TheseusError.from(error).message}`, {
      cause: error,
      hint: "the server stopped writing; restart it so that it recovers the directory",
    });
    if (this.state === "open") this.state = "failed";
    this.logger.error({ err: error }, "write failed: refusing further writes");
  }
}

async function crashRecovery(
  dataDir: string,
  log: FileHandle,
  pages: FileHandle,
  geometry: PageGeometry,
  logger: Logger,
): Promise<{ lastSeq: number; logBytes: number; lastRecordOffset: number; activeFirstSeq: number; truncatedBytes: number; pagesRepaired: number }> {
  const lastSeqOfPage = new Float64Array(geometry.pageCount);
  let lastSeq = 0;
  // The closed segments first: each must be whole (they were fsync'd before the rename), and continue the seqs.
  for (const name of (await logFiles(dataDir)).filter((n) => n !== RECORDS_FILE)) {
    const segment = await open(join(dataDir, name), "r");
    try {
      for await (const item of scanRecordLog(segment)) {
        if (item.kind === "end") {
          if (item.tornBytes > 0) throw logDamage(`${item.tornBytes} unreadable bytes at the end of the closed segment ${name}`);
          break;
        }
        if (item.kind === "gap") throw logDamage(`${item.bytes} unreadable bytes at offset ${item.offset} of ${name}`);
        if (item.header.seq !== lastSeq + 1) throw logDamage(`record at offset ${item.offset} of ${name} has seq ${item.header.seq}, expected ${lastSeq + 1}`);
        if (!item.intact) throw logDamage(`record ${item.header.seq} at offset ${item.offset} of ${name} fails its checksum`);
        lastSeq = item.header.seq;
        lastSeqOfPage[pageForSeq(lastSeq, geometry.pageCount)] = lastSeq;
      }
    } finally {
      await segment.close();
    }
  }
  const activeFirstSeq = lastSeq + 1;
  let lastRecordOffset = 0;
  let damaged: { offset: number; seq: number } | undefined;
  let end: { offset: number; tornBytes: number } | undefined;
  for await (const item of scanRecordLog(log)) {
    if (damaged !== undefined && item.kind !== "end") {
      throw logDamage(`record ${damaged.seq} at offset ${damaged.offset} fails its checksum`);
    }
    if (item.kind === "gap") throw logDamage(`${item.bytes} unreadable bytes at offset ${item.offset} (after record ${lastSeq})`);
    if (item.kind === "end") {
      end = damaged === undefined ? item : { offset: damaged.offset, tornBytes: item.offset + item.tornBytes - damaged.offset };
      break;
    }
    if (item.header.seq !== lastSeq + 1) {
      throw logDamage(`record at offset ${item.offset} has seq ${item.header.seq}, expected ${lastSeq + 1}`);
    }
    if (!item.intact) {
      // Only acceptable as the very last frame: an append whose data did not all reach the disk.
      damaged = { offset: item.offset, seq: item.header.seq };
      continue;
    }
    lastSeq = item.header.seq;
    lastRecordOffset = item.offset;
    lastSeqOfPage[pageForSeq(lastSeq, geometry.pageCount)] = lastSeq;
  }
  if (end === undefined) throw new TheseusError("internal", "the log scan ended without an end");
  if (end.tornBytes > 0) {
    logger.warn({ offset: end.offset, bytes: end.tornBytes }, "truncating a torn tail (an unacknowledged append)");
    await log.truncate(end.offset);
    await log.sync();
  }
  // Redo: every page must show the record that last wrote it (or seq 0 if none did).
  let pagesRepaired = 0;
  const perRead = Math.max(1, Math.floor((1024 * 1024) / geometry.pageSizeBytes));
  const chunk = Buffer.alloc(perRead * geometry.pageSizeBytes);
  for (let first = 0; first < geometry.pageCount; first += perRead) {
    const count = Math.min(perRead, geometry.pageCount - first);
    const { bytesRead } = await pages.read(chunk, 0, count * geometry.pageSizeBytes, first * geometry.pageSizeBytes);
    for (let i = 0; i < count; i++) {
      const pageNo = first + i;
      const at = i * geometry.pageSizeBytes;
      const page = chunk.subarray(at, Math.min(at + geometry.pageSizeBytes, bytesRead));
      const expected = lastSeqOfPage[pageNo] ?? 0;
      const check = checkPage(page, pageNo, geometry);
      if (!check.ok || check.seq !== expected) {
        await pages.write(buildPage(pageNo, expected, geometry), 0, geometry.pageSizeBytes, pageNo * geometry.pageSizeBytes);
        pagesRepaired++;
      }
    }
  }
  if (pagesRepaired > 0) {
    await pages.sync();
    logger.info({ pagesRepaired }, "pages replayed from the log");
  }
  return { lastSeq, logBytes: end.offset, lastRecordOffset, activeFirstSeq, truncatedBytes: end.tornBytes, pagesRepaired };
}

/** The seq of the first record of a log file, if it has one. */
async function firstSeqOf(log: FileHandle, size: number): Promise<number | undefined> {
  if (size < RECORD_HEADER_BYTES) return undefined;
  const head = Buffer.alloc(RECORD_HEADER_BYTES);
  await log.read(head, 0, RECORD_HEADER_BYTES, 0);
  return decodeRecordHeader(head)?.seq;
}

function logDamage(what: string): TheseusError {
  return new TheseusError("data_loss", `the record log is damaged: ${what}`, {
    hint: "the server will not write on a damaged log; run `main.js verify --data DIR --acks FILE` to see which acknowledged records survived",
  });
}

async function matchesLog(log: FileHandle, logSize: number, clean: CleanShutdown): Promise<boolean> {
  if (logSize !== clean.logBytes) return false;
  if (clean.lastSeq === 0) return logSize === 0;
  const head = Buffer.alloc(RECORD_HEADER_BYTES);
  await log.read(head, 0, RECORD_HEADER_BYTES, clean.lastRecordOffset);
  const header = decodeRecordHeader(head);
  if (header?.seq !== clean.lastSeq || clean.lastRecordOffset + RECORD_HEADER_BYTES + header.length !== logSize) return false;
  const payload = Buffer.alloc(header.length);
  await log.read(payload, 0, header.length, clean.lastRecordOffset + RECORD_HEADER_BYTES);
  return sha256(payload).equals(header.payloadSha256);
}

async function readCleanShutdown(dataDir: string): Promise<CleanShutdown | undefined> {
  try {
    const parsed: unknown = JSON.parse(await readFile(join(dataDir, CLEAN_SHUTDOWN_FILE), "utf8"));
    const { lastSeq, logBytes, lastRecordOffset } = (parsed ?? {}) as Record<string, unknown>;
    if (typeof lastSeq !== "number" || typeof logBytes !== "number" || typeof lastRecordOffset !== "number") return undefined;
    return { lastSeq, logBytes, lastRecordOffset };
  } catch {
    return undefined;
  }
}

async function writeCleanShutdown(dataDir: string, content: CleanShutdown): Promise<void> {
  const tmp = join(dataDir, `${CLEAN_SHUTDOWN_FILE}.tmp`);
  const file = await open(tmp, "w");
  try {
    await file.writeFile(`${JSON.stringify(content)}\n`);
    await file.sync();
  } finally {
    await file.close();
  }
  await rename(tmp, join(dataDir, CLEAN_SHUTDOWN_FILE));
  await syncDir(dataDir);
}

async function openOrCreate(path: string): Promise<FileHandle> {
  try {
    return await open(path, "r+");
  } catch (error) {
    if (systemErrorCode(error) !== "ENOENT") throw error;
    return await open(path, "w+");
  }
}

async function writevAll(file: FileHandle, buffers: Buffer[], position: number): Promise<void> {
  let pending = buffers;
  let at = position;
  while (pending.length > 0) {
    const { bytesWritten } = await file.writev(pending, at);
    at += bytesWritten;
    let skip = bytesWritten;
    const rest: Buffer[] = [];
    for (const b of pending) {
      if (skip >= b.length) skip -= b.length;
      else {
        rest.push(skip > 0 ? b.subarray(skip) : b);
        skip = 0;
      }
    }
    pending = rest;
  }
}

export async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

function ignoreNotFound(error: unknown): void {
  if (systemErrorCode(error) !== "ENOENT") throw error;
}
