// The load client: writes records at a chosen rate, appends every acknowledgement to an acks file, and measures the
// longest time without a successful ack, which is the downtime a user of the app observes during a cutover.
//
// It never gives up on the app going away: a connection error or a 503 is retried after a short delay, against the
// next address, after re-reading the urls file; so the demo points the client at the new cluster by rewriting that file.
// A retried record keeps its payload (same seed); if the lost attempt had reached the log it stays there unacknowledged,
// which is harmless: the verifier checks acknowledged records only.
import { randomBytes } from "node:crypto";
import { setMaxListeners } from "node:events";
import { Agent, request } from "node:http";
import { open, readFile } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { TheseusError, anySignal, isAbortError, silentLogger, sleep } from "../../common/index.js";
import type { Logger } from "../../common/index.js";
import { payloadFromSeed } from "./payload.js";
import { sha256 } from "./record-log.js";

export interface LoadOptions {
  /** Addresses of the demo server, tried in order; `urlsFile`, when given and readable, takes precedence. */
  readonly urls?: readonly string[];
  /** A file with one URL per line (# comments allowed), re-read before every retry. */
  readonly urlsFile?: string;
  readonly ratePerSecond: number;
  readonly recordBytes?: number;
  /** Stop after this long; without it, run until the signal fires. */
  readonly durationMs?: number;
  readonly acksFile: string;
  /** Requests in flight at most; defaults to enough for the rate at ~50 ms per request. */
  readonly concurrency?: number;
  readonly requestTimeoutMs?: number;
  readonly progressIntervalMs?: number;
  readonly onProgress?: (progress: LoadProgress) => void;
  readonly logger?: Logger;
}

export interface LoadProgress {
  readonly elapsedMs: number;
  readonly acked: number;
  readonly ackedBytes: number;
  /** Failed attempts (connection errors, timeouts, 5xx), each followed by a retry unless the run was ending. */
  readonly errors: number;
  readonly achievedRatePerSecond: number;
  /** The longest time between two successive acks: the observed downtime (at least 1/rate even without any). */
  readonly longestGapMs: number;
  readonly sinceLastAckMs: number;
  readonly lastSeq: number;
  readonly url: string | undefined;
}

export interface LoadSummary extends LoadProgress {
  readonly ratePerSecond: number;
  /** When the longest gap began and ended (epoch ms), if there were two acks. */
  readonly longestGap: { readonly fromMs: number; readonly toMs: number } | undefined;
  readonly stoppedBy: "duration" | "signal";
  readonly acksFile: string;
  readonly runId: string;
}

/** The line written to the acks file per acknowledgement: enough for the verifier to rebuild and find the record. */
export interface AckLine {
  readonly seq: number;
  readonly sha256: string;
  readonly length: number;
  readonly seed: string;
  readonly url: string;
  readonly ackedAtMs: number;
}

const RETRY_MIN_MS = 20;
const RETRY_MAX_MS = 100;
/** How far behind schedule the client may fall before it stops trying to catch up (no burst after a downtime). */
const CATCH_UP_MS = 1000;

export async function runLoad(options: LoadOptions, signal?: AbortSignal): Promise<LoadSummary> {
  const opts = validate(options);
  const logger = (options.logger ?? silentLogger()).child({ component: "demo-load" });
  const runId = randomBytes(6).toString("hex");
  const acks = await AcksWriter.open(opts.acksFile);
  const agent = new Agent({ keepAlive: true, maxSockets: opts.concurrency });
  const startMs = Date.now();
  const endMs = opts.durationMs === undefined ? Number.POSITIVE_INFINITY : startMs + opts.durationMs;
  const intervalMs = 1000 / opts.ratePerSecond;
  const stopping = new AbortController(); // ends the run: no new records, no more retries
  const stop = anySignal(signal, stopping.signal);
  // Every worker waits on it (pacing, retry back-off), and every request listens to the caller's signal.
  setMaxListeners(opts.concurrency + 10, stop, ...(signal === undefined ? [] : [signal]));

  let nextIndex = 0;
  let nextDueMs = startMs;
  let acked = 0;
  let ackedBytes = 0;
  let errors = 0;
  let lastSeq = 0;
  let lastAckMs: number | undefined;
  let longestGap: { fromMs: number; toMs: number } | undefined;
  const urls = new UrlSource(opts.urls, opts.urlsFile);
  let fatal: unknown;

  const progress = (): LoadProgress => {
    const now = Date.now();
    const elapsedMs = now - startMs;
    return {
      elapsedMs,
      acked,
      ackedBytes,
      errors,
      achievedRatePerSecond: elapsedMs > 0 ? (acked * 1000) / elapsedMs : 0,
      longestGapMs: longestGap === undefined ? 0 : longestGap.toMs - longestGap.fromMs,
      sinceLastAckMs: lastAckMs === undefined ? elapsedMs : now - lastAckMs,
      lastSeq,
      url: urls.current,
    };
  };

  const sendOne = async (seed: string): Promise<void> => {
    const payload = payloadFromSeed(seed, opts.recordBytes);
    const digest = sha256(payload).toString("hex");
    let delayMs = RETRY_MIN_MS;
    for (;;) {
      const url = await urls.pick();
      try {
        if (url === undefined) throw new TheseusError("unavailable", "no server address (the urls file is empty or missing)");
        const answer = await postRecord(url, payload, agent, opts.requestTimeoutMs, signal);
        if (answer.sha256 !== digest || answer.length !== payload.length) {
          throw new TheseusError("data_loss", `server ${url} acknowledged seq ${answer.seq} with checksum ${answer.sha256}, expected ${digest}`);
        }
        const now = Date.now();
        if (lastAckMs !== undefined && (longestGap === undefined || now - lastAckMs > longestGap.toMs - longestGap.fromMs)) {
          longestGap = { fromMs: lastAckMs, toMs: now };
        }
        lastAckMs = now;
        acked++;
        ackedBytes += payload.length;
        lastSeq = Math.max(lastSeq, answer.seq);
        acks.add({ seq: answer.seq, sha256: digest, length: payload.length, seed, url, ackedAtMs: now });
        return;
      } catch (error) {
        const e = TheseusError.from(error);
        if (signal?.aborted === true) return;
        if (e.code === "invalid_argument" || e.code === "data_loss") throw e;
        errors++;
        logger.debug({ url, err: e.message }, "attempt failed; retrying");
        urls.failed(url);
        if (stop.aborted || Date.now() >= endMs) return;
        try {
          await sleep(delayMs, stop);
        } catch {
          return;
        }
        delayMs = Math.min(RETRY_MAX_MS, delayMs * 2);
      }
    }
  };

  const worker = async (): Promise<void> => {
    while (!stop.aborted) {
      const now = Date.now();
      const dueMs = Math.max(nextDueMs, now - CATCH_UP_MS);
      nextDueMs = dueMs + intervalMs;
      if (dueMs >= endMs) break;
      const index = nextIndex++;
      if (dueMs > now) {
        try {
          await sleep(dueMs - now, stop);
        } catch {
          break;
        }
      }
      await sendOne(`${runId}:${index}`);
    }
  };

  const timer = setInterval(() => opts.onProgress?.(progress()), opts.progressIntervalMs);
  const flusher = setInterval(() => {
    acks.flush().catch((error: unknown) => {
      fatal ??= error;
      stopping.abort();
    });
  }, 200);
  const untilEnd = Number.isFinite(endMs) ? setTimeout(() => stopping.abort(), endMs - startMs) : undefined;
  try {
    // A fatal error in one worker (a refused record, a wrong checksum) ends the whole run at once.
    const guarded = async (): Promise<void> => {
      try {
        await worker();
      } catch (error) {
        if (!isAbortError(error)) fatal ??= error;
        stopping.abort();
      }
    };
    await Promise.all(Array.from({ length: opts.concurrency }, () => guarded()));
  } finally {
    clearInterval(timer);
    clearInterval(flusher);
    clearTimeout(untilEnd);
    agent.destroy();
    await acks.close();
  }
  if (fatal !== undefined) throw TheseusError.from(fatal);
  const summary: LoadSummary = {
    ...progress(),
    ratePerSecond: opts.ratePerSecond,
    longestGap,
    stoppedBy: signal?.aborted === true ? "signal" : "duration",
    acksFile: opts.acksFile,
    runId,
  };
  opts.onProgress?.(summary);
  logger.info({ acked, errors, longestGapMs: summary.longestGapMs }, "load finished");
  return summary;
}

function validate(options: LoadOptions) {
  const rate = options.ratePerSecond;
  if (!(rate > 0) || !Number.isFinite(rate)) {
    throw new TheseusError("invalid_argument", `rate ${rate} is not a positive number of records per second`, { hint: "e.g. --rate 100" });
  }
  const recordBytes = options.recordBytes ?? 4096;
  if (!Number.isInteger(recordBytes) || recordBytes < 1) {
    throw new TheseusError("invalid_argument", `record size ${recordBytes} must be a positive whole number of bytes`, { hint: "e.g. --record-bytes 4096" });
  }
  if ((options.urls ?? []).length === 0 && options.urlsFile === undefined) {
    throw new TheseusError("invalid_argument", "no server address", { hint: "give --url http://HOST:PORT or --urls-file FILE" });
  }
  for (const u of options.urls ?? []) checkUrl(u);
  if (options.durationMs !== undefined && !(options.durationMs > 0)) {
    throw new TheseusError("invalid_argument", `duration ${options.durationMs} ms must be positive`, { hint: "e.g. --duration 60" });
  }
  return {
    urls: options.urls ?? [],
    urlsFile: options.urlsFile,
    ratePerSecond: rate,
    recordBytes,
    durationMs: options.durationMs,
    acksFile: options.acksFile,
    concurrency: options.concurrency ?? Math.max(1, Math.min(64, Math.ceil(rate / 20))),
    requestTimeoutMs: options.requestTimeoutMs ?? 5000,
    progressIntervalMs: options.progressIntervalMs ?? 1000,
    onProgress: options.onProgress,
  };
}

function checkUrl(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new TheseusError("invalid_argument", `"${text}" is not a URL`, { hint: "write it as http://127.0.0.1:8080" });
  }
  if (url.protocol !== "http:") throw new TheseusError("invalid_argument", `"${text}" is not an http:// URL`, { hint: "the demo app speaks plain HTTP" });
  return url.origin;
}

/** The current list of addresses, and which one to try next. */
class UrlSource {
  private list: readonly string[];
  private index = 0;
  private fileText: string | undefined;

  constructor(
    private readonly fixed: readonly string[],
    private readonly file: string | undefined,
  ) {
    this.list = fixed.map(checkUrl);
  }

  get current(): string | undefined {
    return this.list[this.index % Math.max(1, this.list.length)];
  }

  async pick(): Promise<string | undefined> {
    if (this.file !== undefined) {
      const text = await readFile(this.file, "utf8").catch(() => undefined);
      if (text !== this.fileText) {
        this.fileText = text;
        const fromFile = (text ?? "")
          .split("\n")
          .map((l) => l.replace(/#.*/, "").trim())
          .filter((l) => l !== "")
          .flatMap((l) => {
            try {
              return [checkUrl(l)];
            } catch {
              return [];
            }
          });
        this.list = fromFile.length > 0 ? fromFile : this.fixed.map(checkUrl);
        this.index = 0;
      }
    }
    return this.current;
  }

  failed(url: string | undefined): void {
    if (url !== undefined && url === this.current) this.index = (this.index + 1) % Math.max(1, this.list.length);
  }
}

interface RecordAnswer {
  readonly seq: number;
  readonly sha256: string;
  readonly length: number;
}

function postRecord(base: string, payload: Buffer, agent: Agent, timeoutMs: number, signal: AbortSignal | undefined): Promise<RecordAnswer> {
  // One abort listener per request, removed when it settles: AbortSignal.any() per request would pile listeners up on
  // the run's signal for as long as the run lasts.
  const controller = new AbortController();
  const onAbort = (): void => controller.abort(signal?.reason);
  signal?.addEventListener("abort", onAbort, { once: true });
  if (signal?.aborted === true) controller.abort(signal.reason);
  const timer = setTimeout(() => controller.abort(new TheseusError("deadline_exceeded", `no answer from ${base} within ${timeoutMs} ms`)), timeoutMs);
  return new Promise<RecordAnswer>((resolve, reject) => {
    const req = request(
      `${base}/records`,
      {
        method: "POST",
        agent,
        signal: controller.signal,
        headers: { "content-type": "application/octet-stream", "content-length": payload.length },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", reject);
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          const status = res.statusCode ?? 0;
          if (status === 201) {
            try {
              const parsed = JSON.parse(text) as Partial<RecordAnswer>;
              if (typeof parsed.seq === "number" && typeof parsed.sha256 === "string" && typeof parsed.length === "number") {
                resolve({ seq: parsed.seq, sha256: parsed.sha256, length: parsed.length });
                return;
              }
            } catch {
              // fall through
            }
            reject(new TheseusError("protocol", `server ${base} answered 201 without {seq, sha256, length}: ${text.slice(0, 200)}`));
          } else if (status >= 500 || status === 429) {
            reject(new TheseusError("unavailable", `server ${base} answered ${status}: ${text.trim().slice(0, 200)}`));
          } else {
            reject(new TheseusError("invalid_argument", `server ${base} refused the record with ${status}: ${text.trim().slice(0, 200)}`, {
              hint: "check --record-bytes against the server's limit and that the URL is the demo app's",
            }));
          }
        });
      },
    );
    req.on("error", reject);
    req.end(payload);
  }).finally(() => {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
  });
}

/** Appends ack lines, written out on flush() and fsync'd at most once a second, and at close. */
class AcksWriter {
  private lines: string[] = [];
  private lastSyncMs = Date.now();
  private chain: Promise<void> = Promise.resolve();

  private constructor(private readonly file: FileHandle) {}

  static async open(path: string): Promise<AcksWriter> {
    try {
      return new AcksWriter(await open(path, "a"));
    } catch (error) {
      throw new TheseusError("invalid_argument", `cannot open the acks file ${path}: ${TheseusError.from(error).message}`, {
        cause: error,
        hint: "give --acks a path in a writable directory",
      });
    }
  }

  add(ack: AckLine): void {
    this.lines.push(JSON.stringify(ack));
  }

  flush(forceSync = false): Promise<void> {
    this.chain = this.chain.then(async () => {
      if (this.lines.length > 0) {
        const text = `${this.lines.join("\n")}\n`;
        this.lines = [];
        await this.file.write(text);
      }
      if (forceSync || Date.now() - this.lastSyncMs >= 1000) {
        await this.file.sync();
        this.lastSyncMs = Date.now();
      }
    });
    return this.chain;
  }

  async close(): Promise<void> {
    try {
      await this.flush(true);
    } finally {
      await this.file.close();
    }
  }
}
