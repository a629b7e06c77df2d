// The verifier: proves that every record the load client saw acknowledged is in a volume's log (its closed segments
// and records.log) with the same seq, length and checksum, and with the very bytes its seed rebuilds; and that pages.db
// is a consistent database file.
// The migration's end-to-end tests run it on the target volume after commit (invariant 2: no acknowledged write lost).
//
// It reads, never writes, so it may run on a copy, on a stopped app's volume, or (with care) beside a live server:
// pages are read before the log, so a page can never legitimately be ahead of the log the verifier saw.
import { createReadStream } from "node:fs";
import { open, stat } from "node:fs/promises";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { TheseusError, systemErrorCode } from "../../common/index.js";
import { checkPage, pageForSeq, readGeometry } from "./page-file.js";
import type { PageGeometry } from "./page-file.js";
import { payloadFromSeed } from "./payload.js";
import { scanRecordLog, sha256 } from "./record-log.js";
import { CLEAN_SHUTDOWN_FILE, PAGES_FILE, RECORDS_FILE, logFiles } from "./record-store.js";

export interface VerifyOptions {
  readonly dataDir: string;
  readonly acksFile: string;
  /** How many problems are listed in full (all are counted). */
  readonly maxProblems?: number;
}

export type ProblemKind = "missing" | "corrupt" | "bad-ack" | "log" | "page";

export interface Problem {
  readonly kind: ProblemKind;
  readonly seq?: number;
  readonly page?: number;
  readonly detail: string;
}

export interface VerifyReport {
  readonly ok: boolean;
  readonly dataDir: string;
  readonly acksFile: string;
  readonly log: {
    readonly bytes: number;
    readonly records: number;
    readonly lastSeq: number;
    readonly damagedRecords: number;
    readonly unreadableBytes: number;
    readonly tornTailBytes: number;
  };
  readonly acks: {
    readonly acked: number;
    readonly present: number;
    readonly missing: number;
    readonly corrupt: number;
    readonly badLines: number;
  };
  readonly pages: {
    readonly pageCount: number;
    readonly pageSizeBytes: number;
    readonly corrupt: number;
    /** Pages older than the last record that wrote them: normal after a crash (recovery replays them), lost after a clean stop. */
    readonly behindLog: number;
  };
  /** Whether the directory was left by a graceful stop (then even a page behind the log is a lost write). */
  readonly cleanShutdown: boolean;
  /** The lowest acknowledged seq that is missing or corrupt: what to look at first. */
  readonly firstBadSeq: number | undefined;
  readonly problems: readonly Problem[];
  readonly problemCount: number;
}

interface LoggedRecord {
  readonly length: number;
  readonly sha256: Buffer;
  readonly intact: boolean;
}

export async function verifyVolume(options: VerifyOptions): Promise<VerifyReport> {
  const maxProblems = options.maxProblems ?? 20;
  const problems: Problem[] = [];
  let problemCount = 0;
  const problem = (p: Problem): void => {
    problemCount++;
    if (problems.length < maxProblems) problems.push(p);
  };
  await mustExist(options.dataDir, "data directory", "give --data the directory the server wrote (its volume)");
  await mustExist(options.acksFile, "acks file", "give --acks the file the load client wrote");
  const cleanShutdown = await exists(join(options.dataDir, CLEAN_SHUTDOWN_FILE));

  // 1. Pages first (see the header comment): identity, checksum and body of each.
  const pagesPath = join(options.dataDir, PAGES_FILE);
  let geometry: PageGeometry | undefined;
  let pageSeqs = new Float64Array(0);
  let corruptPages = 0;
  const pagesFile = await open(pagesPath, "r").catch((error: unknown) => {
    problem({ kind: "page", detail: `cannot open ${PAGES_FILE}: ${TheseusError.from(error).message}` });
    return undefined;
  });
  if (pagesFile !== undefined) {
    try {
      geometry = await readGeometry(pagesFile);
      if (geometry === undefined) {
        problem({ kind: "page", page: 0, detail: `${PAGES_FILE} has no readable geometry (first page damaged or size wrong)` });
      } else {
        pageSeqs = new Float64Array(geometry.pageCount).fill(-1);
        const perRead = Math.max(1, Math.floor((1024 * 1024) / geometry.pageSizeBytes));
        const chunk = Buffer.alloc(perRead * geometry.pageSizeBytes);
        for (let first = 0; first < geometry.pageCount; first += perRead) {
          const count = Math.min(perRead, geometry.pageCount - first);
          const { bytesRead } = await pagesFile.read(chunk, 0, count * geometry.pageSizeBytes, first * geometry.pageSizeBytes);
          for (let i = 0; i < count; i++) {
            const pageNo = first + i;
            const at = i * geometry.pageSizeBytes;
            const check = checkPage(chunk.subarray(at, Math.min(at + geometry.pageSizeBytes, bytesRead)), pageNo, geometry);
            if (!check.ok) {
              corruptPages++;
              problem({ kind: "page", page: pageNo, detail: `page ${pageNo}: ${check.reason}` });
            } else if (check.seq !== 0 && pageForSeq(check.seq, geometry.pageCount) !== pageNo) {
              corruptPages++;
              problem({ kind: "page", page: pageNo, detail: `page ${pageNo} claims record ${check.seq}, which writes another page` });
            } else {
              pageSeqs[pageNo] = check.seq;
            }
          }
        }
      }
    } finally {
      await pagesFile.close();
    }
  }

  // 2. The log: every frame, by seq.
  const logged = new Map<number, LoggedRecord>();
  const lastSeqOfPage = new Float64Array(geometry?.pageCount ?? 0);
  const logStats = { bytes: 0, records: 0, lastSeq: 0, damagedRecords: 0, unreadableBytes: 0, tornTailBytes: 0 };
  // The closed segments, then the active records.log; only the active one may end in a torn append.
  const files = await logFiles(options.dataDir);
  for (const name of files) {
    const active = name === RECORDS_FILE;
    const log = await open(join(options.dataDir, name), "r").catch((error: unknown) => {
      // A crash between closing a segment and creating the next leaves no records.log: an empty active segment.
      if (!(active && files.length > 1 && TheseusError.from(error).code === "not_found")) {
        problem({ kind: "log", detail: `cannot open ${name}: ${TheseusError.from(error).message}` });
      }
      return undefined;
    });
    if (log === undefined) continue;
    try {
      for await (const item of scanRecordLog(log)) {
        if (item.kind === "end") {
          logStats.bytes += item.offset + item.tornBytes;
          if (active) logStats.tornTailBytes = item.tornBytes;
          else if (item.tornBytes > 0) {
            logStats.unreadableBytes += item.tornBytes;
            problem({ kind: "log", detail: `${item.tornBytes} unreadable bytes at the end of the closed segment ${name}` });
          }
        } else if (item.kind === "gap") {
          logStats.unreadableBytes += item.bytes;
          problem({ kind: "log", detail: `${item.bytes} unreadable bytes at offset ${item.offset} of ${name}` });
        } else {
          const { seq, length, payloadSha256 } = item.header;
          logStats.records++;
          if (!item.intact) logStats.damagedRecords++;
          if (logged.has(seq)) {
            problem({ kind: "log", seq, detail: `seq ${seq} appears twice in the log (offset ${item.offset} of ${name})` });
            continue;
          }
          logged.set(seq, { length, sha256: payloadSha256, intact: item.intact });
          logStats.lastSeq = Math.max(logStats.lastSeq, seq);
          if (geometry !== undefined) {
            const p = pageForSeq(seq, geometry.pageCount);
            lastSeqOfPage[p] = Math.max(lastSeqOfPage[p] ?? 0, seq);
          }
        }
      }
    } finally {
      await log.close();
    }
  }

  // 3. Every ack against the log, and against its seed.
  const acks = { acked: 0, present: 0, missing: 0, corrupt: 0, badLines: 0 };
  let firstBadSeq: number | undefined;
  const bad = (seq: number): void => {
    firstBadSeq = firstBadSeq === undefined ? seq : Math.min(firstBadSeq, seq);
  };
  let lineNo = 0;
  let pendingBadLine: string | undefined;
  const lines = createInterface({ input: createReadStream(options.acksFile, "utf8"), crlfDelay: Infinity });
  for await (const line of lines) {
    lineNo++;
    if (line.trim() === "") continue;
    // A bad line is forgiven only as the file's last (the load client died mid-write, before that ack was durable).
    if (pendingBadLine !== undefined) {
      acks.badLines++;
      problem({ kind: "bad-ack", detail: pendingBadLine });
      pendingBadLine = undefined;
    }
    const ack = parseAck(line);
    if (ack === undefined) {
      pendingBadLine = `${options.acksFile} line ${lineNo} is not an ack: ${line.slice(0, 80)}`;
      continue;
    }
    acks.acked++;
    const expected = sha256(payloadFromSeed(ack.seed, ack.length)).toString("hex");
    if (expected !== ack.sha256) {
      acks.badLines++;
      problem({ kind: "bad-ack", seq: ack.seq, detail: `ack of seq ${ack.seq} (line ${lineNo}) does not match its own seed: the acks file is damaged` });
      continue;
    }
    const record = logged.get(ack.seq);
    if (record === undefined) {
      acks.missing++;
      bad(ack.seq);
      problem({ kind: "missing", seq: ack.seq, detail: `acknowledged record ${ack.seq} is missing from the log` });
    } else if (!record.intact || record.length !== ack.length || record.sha256.toString("hex") !== ack.sha256) {
      acks.corrupt++;
      bad(ack.seq);
      const why = !record.intact
        ? "its payload fails its checksum"
        : record.length !== ack.length
          ? `length ${record.length}, acknowledged ${ack.length}`
          : "its checksum differs from the acknowledged one";
      problem({ kind: "corrupt", seq: ack.seq, detail: `acknowledged record ${ack.seq} is corrupt: ${why}` });
    } else {
      acks.present++;
    }
  }

  // 4. Pages against the log: ahead is always a lost log write; behind only counts after a clean stop.
  let behindLog = 0;
  if (geometry !== undefined) {
    for (let p = 0; p < geometry.pageCount; p++) {
      const onPage = pageSeqs[p] ?? -1;
      if (onPage < 0) continue; // already reported corrupt
      const expected = lastSeqOfPage[p] ?? 0;
      if (onPage > logStats.lastSeq || (onPage > 0 && !logged.has(onPage))) {
        corruptPages++;
        problem({ kind: "page", page: p, detail: `page ${p} was written by record ${onPage}, which the log does not hold` });
      } else if (onPage < expected) {
        behindLog++;
        if (cleanShutdown) {
          problem({ kind: "page", page: p, detail: `page ${p} shows record ${onPage} but record ${expected} rewrote it before a clean stop: a write to ${PAGES_FILE} was lost` });
        }
      }
    }
  }

  return {
    ok: problemCount === 0,
    dataDir: options.dataDir,
    acksFile: options.acksFile,
    log: logStats,
    acks,
    pages: { pageCount: geometry?.pageCount ?? 0, pageSizeBytes: geometry?.pageSizeBytes ?? 0, corrupt: corruptPages, behindLog },
    cleanShutdown,
    firstBadSeq,
    problems,
    problemCount,
  };
}

/** The human summary the CLI prints. */
export function formatVerifyReport(r: VerifyReport): string {
  const lines = [
    `${r.ok ? "OK" : "FAILED"}: ${r.acks.present} of ${r.acks.acked} acknowledged records present and intact in ${r.dataDir}`,
    `  log: ${r.log.records} records up to seq ${r.log.lastSeq}, ${r.log.bytes} bytes` +
      (r.log.tornTailBytes > 0 ? `, torn tail of ${r.log.tornTailBytes} bytes (an unacknowledged append)` : "") +
      (r.log.damagedRecords > 0 ? `, ${r.log.damagedRecords} damaged` : ""),
    `  pages: ${r.pages.pageCount} x ${r.pages.pageSizeBytes} bytes, ${r.pages.corrupt} corrupt, ${r.pages.behindLog} behind the log` +
      (r.cleanShutdown ? " (clean stop)" : r.pages.behindLog > 0 ? " (no clean stop: the server replays them at start)" : ""),
  ];
  if (r.acks.missing + r.acks.corrupt > 0) lines.push(`  missing: ${r.acks.missing}, corrupt: ${r.acks.corrupt}, first bad seq: ${r.firstBadSeq}`);
  for (const p of r.problems) lines.push(`  - ${p.detail}`);
  if (r.problemCount > r.problems.length) lines.push(`  ... and ${r.problemCount - r.problems.length} more problems`);
  return lines.join("\n");
}

interface ParsedAck {
  readonly seq: number;
  readonly sha256: string;
  readonly length: number;
  readonly seed: string;
}

function parseAck(line: string): ParsedAck | undefined {
  try {
    const v = JSON.parse(line) as Record<string, unknown>;
    if (typeof v.seq === "number" && typeof v.sha256 === "string" && typeof v.length === "number" && typeof v.seed === "string") {
      return { seq: v.seq, sha256: v.sha256, length: v.length, seed: v.seed };
    }
  } catch {
    // not JSON
  }
  return undefined;
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

async function mustExist(path: string, what: string, hint: string): Promise<void> {
  try {
    await stat(path);
  } catch (error) {
    throw new TheseusError(systemErrorCode(error) === "ENOENT" ? "not_found" : "invalid_argument", `${what} ${path} cannot be read`, { cause: error, hint });
  }
}
