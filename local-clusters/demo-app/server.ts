// The demo app's HTTP service: the workload that the local clusters run and that the migration moves.
//
//   GET  /healthz  200 once the data directory is recovered; 503 while recovering or shutting down (readiness probe)
//   POST /records  body = payload bytes -> appended, fsync'd, page rewritten -> 201 {"seq","sha256","length"}
//   GET  /stats    counters as JSON
//
// It listens before recovering so that a readiness probe sees 503 (not a refused connection) while a large log is
// scanned; writes are refused with 503 + Retry-After until then, which the load client treats like downtime.
import { createServer } from "node:http";
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { TheseusError, silentLogger } from "../../common/index.js";
import type { Logger } from "../../common/index.js";
import { RecordStore } from "./record-store.js";
import type { StoreStats } from "./record-store.js";

export interface DemoServerOptions {
  readonly dataDir: string;
  /** 127.0.0.1 unless told otherwise (the emulated kubelet passes the pod's IP, also a loopback address here). */
  readonly host?: string;
  /** 0 picks a free port. */
  readonly port?: number;
  readonly pageFileBytes?: number;
  readonly pageSizeBytes?: number;
  readonly maxRecordBytes?: number;
  readonly checkpointIntervalMs?: number;
  /** Size at which the log's active segment is closed (default 16 MiB). */
  readonly segmentBytes?: number;
  readonly logger?: Logger;
}

export type DemoServerState = "recovering" | "ready" | "stopping" | "stopped";

export interface DemoServer {
  readonly url: string;
  readonly port: number;
  readonly state: DemoServerState;
  stats(): DemoServerStats;
  /** Graceful stop: refuse new requests, finish the in-flight ones, fsync, release the data directory. Idempotent. */
  close(): Promise<void>;
}

export interface DemoServerStats {
  readonly state: DemoServerState;
  readonly url: string;
  readonly inFlight: number;
  readonly store: StoreStats | undefined;
}

export async function startDemoServer(options: DemoServerOptions): Promise<DemoServer> {
  const opts = {
    host: options.host ?? "127.0.0.1",
    port: options.port ?? 0,
    maxRecordBytes: options.maxRecordBytes ?? 16 * 1024 * 1024,
    logger: (options.logger ?? silentLogger()).child({ component: "demo-app" }),
  };
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
    throw new TheseusError("invalid_argument", `port ${opts.port} is not a TCP port`, { hint: "give a port from 0 to 65535" });
  }
  let state: DemoServerState = "recovering";
  let store: RecordStore | undefined;
  const inFlight = new Set<Promise<void>>();

  const server = createServer((req, res) => {
    const work = handle(req, res).catch((error: unknown) => {
      opts.logger.error({ err: error }, "request failed");
      if (!res.headersSent) reply(res, 500, { error: TheseusError.from(error).message });
      else res.destroy();
    });
    inFlight.add(work);
    void work.finally(() => inFlight.delete(work));
  });

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    if (state === "stopping" || state === "stopped") res.setHeader("connection", "close");
    const path = (req.url ?? "/").split("?")[0];
    if (path === "/healthz" && req.method === "GET") {
      reply(res, state === "ready" ? 200 : 503, { status: state });
      return;
    }
    if (path === "/stats" && req.method === "GET") {
      reply(res, 200, stats());
      return;
    }
    if (path === "/records" && req.method === "POST") {
      if (state !== "ready" || store === undefined) {
        req.resume();
        res.setHeader("retry-after", "1");
        reply(res, 503, { error: `server is ${state}` });
        return;
      }
      const body = await readBody(req, opts.maxRecordBytes);
      if (body === undefined) {
        reply(res, 413, { error: `a record is at most ${opts.maxRecordBytes} bytes` });
        return;
      }
      try {
        const result = await store.append(body);
        reply(res, 201, result);
      } catch (error) {
        const e = TheseusError.from(error);
        if (e.code === "unavailable") res.setHeader("retry-after", "1");
        reply(res, e.code === "unavailable" ? 503 : 500, { error: e.message });
      }
      return;
    }
    req.resume();
    reply(res, path === "/records" || path === "/healthz" || path === "/stats" ? 405 : 404, { error: `no route ${req.method} ${path}` });
  };

  const stats = (): DemoServerStats => ({ state, url, inFlight: inFlight.size, store: store?.stats() });

  await new Promise<void>((resolve, reject) => {
    server.once("error", (error) => reject(TheseusError.from(error)));
    server.listen(opts.port, opts.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const url = `http://${opts.host.includes(":") ? `[${opts.host}]` : opts.host}:${port}`;
  opts.logger.info({ url, dataDir: options.dataDir }, "listening; recovering the data directory");

  try {
    store = await RecordStore.open({
      dataDir: options.dataDir,
      logger: opts.logger,
      ...(options.pageFileBytes === undefined ? {} : { pageFileBytes: options.pageFileBytes }),
      ...(options.pageSizeBytes === undefined ? {} : { pageSizeBytes: options.pageSizeBytes }),
      ...(options.checkpointIntervalMs === undefined ? {} : { checkpointIntervalMs: options.checkpointIntervalMs }),
      ...(options.segmentBytes === undefined ? {} : { segmentBytes: options.segmentBytes }),
    });
  } catch (error) {
    state = "stopped";
    await closeServer(server);
    throw error;
  }
  state = "ready";
  opts.logger.info({ url, recovery: store.recovery }, "ready");

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      state = "stopping";
      const closed = closeServer(server);
      // In-flight requests finish (a record being written is acknowledged), then the store fsyncs and unlocks.
      while (inFlight.size > 0) await Promise.allSettled([...inFlight]);
      await store?.close();
      server.closeAllConnections();
      await closed;
      state = "stopped";
      opts.logger.info({ url }, "stopped");
    })();
    return closing;
  };

  return {
    url,
    port,
    get state() {
      return state;
    },
    stats,
    close,
  };
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeIdleConnections();
  });
}

function reply(res: ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

/** The whole body, or undefined when it exceeds the limit (the rest is drained so the connection stays usable). */
async function readBody(req: IncomingMessage, limitBytes: number): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let total = 0;
  let tooBig = false;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > limitBytes) tooBig = true;
    if (!tooBig) chunks.push(chunk);
  }
  return tooBig ? undefined : Buffer.concat(chunks, total);
}
