#!/usr/bin/env node
// The demo app's command line, the program the emulated kubelet runs for the demo image:
//   main.js serve  [--data DIR] [--port N] [--host IP] [--page-file-bytes N] [--page-bytes N] [--segment-bytes N]
//   main.js load   --url URL [--url URL2 ...] [--urls-file F] --rate N [--record-bytes N] [--duration S] --acks FILE
//   main.js verify --data DIR --acks FILE [--json]
// Exit codes: 0 success, 1 verification failed (or a server/load failure), 2 bad usage.
import { parseArgs } from "node:util";
import type { ParseArgsConfig } from "node:util";

type ParseArgsOptionsConfig = NonNullable<ParseArgsConfig["options"]>;
import { createLogger, describeError, formatBytes, formatDuration, parseBytes, TheseusError } from "../../common/index.js";
import type { LogLevel } from "../../common/index.js";
import { runLoad } from "./load.js";
import type { LoadProgress } from "./load.js";
import { startDemoServer } from "./server.js";
import { formatVerifyReport, verifyVolume } from "./verify.js";

const USAGE = `usage:
  main.js serve  [--data DIR] [--port N] [--host IP] [--page-file-bytes SIZE] [--page-bytes SIZE] [--segment-bytes SIZE]
                 (env: DATA_DIR, PORT (8080), HOST or POD_IP (127.0.0.1), LOG_LEVEL)
  main.js load   --url URL [--url URL2 ...] [--urls-file FILE] --rate RECORDS_PER_S [--record-bytes SIZE]
                 [--duration SECONDS] [--concurrency N] --acks FILE [--quiet]
  main.js verify --data DIR --acks FILE [--json]`;

async function main(argv: readonly string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case "serve":
      return await serve(rest);
    case "load":
      return await load(rest);
    case "verify":
      return await verify(rest);
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(`${USAGE}\n`);
      return 0;
    default:
      throw usage(command === undefined ? "no command given" : `unknown command "${command}"`);
  }
}

function usage(message: string): TheseusError {
  return new TheseusError("invalid_argument", message, { hint: USAGE });
}

function parse<const T extends ParseArgsOptionsConfig>(args: readonly string[], options: T) {
  try {
    return parseArgs({ args: [...args], options, strict: true, allowPositionals: false }).values;
  } catch (error) {
    throw usage(error instanceof Error ? error.message : String(error));
  }
}

function logLevel(): LogLevel {
  const level = process.env.LOG_LEVEL;
  return level === "debug" || level === "warn" || level === "error" || level === "silent" || level === "trace" ? level : "info";
}

async function serve(args: readonly string[]): Promise<number> {
  const v = parse(args, {
    data: { type: "string" },
    port: { type: "string" },
    host: { type: "string" },
    "page-file-bytes": { type: "string" },
    "page-bytes": { type: "string" },
    "segment-bytes": { type: "string" },
  });
  const dataDir = v.data ?? process.env.DATA_DIR;
  if (dataDir === undefined || dataDir === "") throw usage("serve needs a data directory: --data DIR or DATA_DIR");
  const portText = v.port ?? process.env.PORT ?? "8080";
  const port = Number(portText);
  if (!Number.isInteger(port)) throw usage(`port "${portText}" is not a number`);
  const host = v.host ?? process.env.HOST ?? process.env.POD_IP ?? "127.0.0.1";
  const logger = createLogger({ level: logLevel(), name: "demo-app" });
  // Listen for SIGTERM before recovery starts: a pod deleted while it recovers still exits 0 after a clean close.
  const stopRequested = new Promise<string>((resolve) => {
    process.once("SIGTERM", () => resolve("SIGTERM"));
    process.once("SIGINT", () => resolve("SIGINT"));
  });
  const server = await startDemoServer({
    dataDir,
    port,
    host,
    logger,
    ...(v["page-file-bytes"] === undefined ? {} : { pageFileBytes: parseBytes(v["page-file-bytes"], "--page-file-bytes") }),
    ...(v["page-bytes"] === undefined ? {} : { pageSizeBytes: parseBytes(v["page-bytes"], "--page-bytes") }),
    ...(v["segment-bytes"] === undefined ? {} : { segmentBytes: parseBytes(v["segment-bytes"], "--segment-bytes") }),
  });
  const recovery = server.stats().store?.recovery;
  process.stdout.write(
    `demo-app serving ${server.url} data=${dataDir} records=${recovery?.records ?? 0} recovery=${recovery?.mode ?? "?"} in ${formatDuration(recovery?.durationMs ?? 0)}\n`,
  );
  const signalName = await stopRequested;
  logger.info({ signal: signalName }, "stopping");
  try {
    await server.close();
    return 0;
  } catch (error) {
    process.stderr.write(`${describeError(error)}\n`);
    return 1;
  }
}

async function load(args: readonly string[]): Promise<number> {
  const v = parse(args, {
    url: { type: "string", multiple: true },
    "urls-file": { type: "string" },
    rate: { type: "string" },
    "record-bytes": { type: "string" },
    duration: { type: "string" },
    concurrency: { type: "string" },
    acks: { type: "string" },
    quiet: { type: "boolean" },
  });
  if (v.rate === undefined) throw usage("load needs --rate RECORDS_PER_S");
  if (v.acks === undefined) throw usage("load needs --acks FILE");
  const rate = Number(v.rate);
  const duration = v.duration === undefined ? undefined : Number(v.duration);
  if (duration !== undefined && !(duration > 0)) throw usage(`--duration ${v.duration} is not a positive number of seconds`);
  const concurrency = v.concurrency === undefined ? undefined : Number(v.concurrency);
  if (concurrency !== undefined && !(Number.isInteger(concurrency) && concurrency > 0)) throw usage(`--concurrency ${v.concurrency} is not a positive integer`);
  const controller = new AbortController();
  process.once("SIGINT", () => controller.abort());
  process.once("SIGTERM", () => controller.abort());
  const show = (p: LoadProgress): void => {
    if (v.quiet === true) return;
    process.stderr.write(
      `[${(p.elapsedMs / 1000).toFixed(1)}s] acked ${p.acked} (${formatBytes(p.ackedBytes)}) at ${p.achievedRatePerSecond.toFixed(1)}/s, ` +
        `errors ${p.errors}, longest gap ${formatDuration(p.longestGapMs)}, last ack ${formatDuration(p.sinceLastAckMs)} ago, url ${p.url ?? "-"}\n`,
    );
  };
  const summary = await runLoad(
    {
      urls: v.url ?? [],
      ratePerSecond: rate,
      acksFile: v.acks,
      onProgress: show,
      ...(v["urls-file"] === undefined ? {} : { urlsFile: v["urls-file"] }),
      ...(v["record-bytes"] === undefined ? {} : { recordBytes: parseBytes(v["record-bytes"], "--record-bytes") }),
      ...(duration === undefined ? {} : { durationMs: duration * 1000 }),
      ...(concurrency === undefined ? {} : { concurrency }),
    },
    controller.signal,
  );
  const gap = summary.longestGap;
  process.stdout.write(
    `load: ${summary.acked} records acknowledged (${formatBytes(summary.ackedBytes)}) in ${formatDuration(summary.elapsedMs)}: ` +
      `${summary.achievedRatePerSecond.toFixed(1)} records/s of ${summary.ratePerSecond} asked, ${summary.errors} failed attempts\n` +
      `load: longest gap without an ack (observed downtime): ${formatDuration(summary.longestGapMs)}` +
      (gap === undefined ? "" : ` from ${new Date(gap.fromMs).toISOString()} to ${new Date(gap.toMs).toISOString()}`) +
      ` (the interval between records is ${formatDuration(1000 / summary.ratePerSecond)})\n` +
      `load: acks in ${summary.acksFile} (run ${summary.runId}), stopped by ${summary.stoppedBy}\n`,
  );
  return 0;
}

async function verify(args: readonly string[]): Promise<number> {
  const v = parse(args, { data: { type: "string" }, acks: { type: "string" }, json: { type: "boolean" } });
  const dataDir = v.data ?? process.env.DATA_DIR;
  if (dataDir === undefined || dataDir === "") throw usage("verify needs --data DIR");
  if (v.acks === undefined) throw usage("verify needs --acks FILE");
  const report = await verifyVolume({ dataDir, acksFile: v.acks });
  process.stdout.write(v.json === true ? `${JSON.stringify(report, null, 2)}\n` : `${formatVerifyReport(report)}\n`);
  return report.ok ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`${describeError(error)}\n`);
    process.exitCode = TheseusError.from(error).code === "invalid_argument" ? 2 : 1;
  },
);
