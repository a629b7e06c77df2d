// The demo app as the local clusters and the migration tests use it: real HTTP on 127.0.0.1, real files, real processes
// (the server is also run as the `main.js serve` child the emulated kubelet starts, so that it can be killed -9).
import test from "ava";
import { spawn, spawnSync } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { appendFile, cp, mkdtemp, open, readFile, readdir, rm, stat, truncate, unlink, writeFile } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { TheseusError } from "../common/index.js";
import {
  CLEAN_SHUTDOWN_FILE,
  LOCK_FILE,
  PAGES_FILE,
  RECORD_HEADER_BYTES,
  RECORDS_FILE,
  SEGMENT_FILE,
  encodeRecord,
  payloadFromSeed,
  runLoad,
  startDemoServer,
  verifyVolume,
} from "../local-clusters/demo-app/index.js";
import type { AckLine, DemoServer, DemoServerStats } from "../local-clusters/demo-app/index.js";
import { buildPage, pageForSeq } from "../local-clusters/demo-app/page-file.js";

const MAIN = join(dirname(fileURLToPath(import.meta.url)), "..", "local-clusters", "demo-app", "main.js");
// Small pages file: the tests are about behaviour, not size.
const PAGE_FILE_BYTES = 256 * 1024;
const RECORD_BYTES = 300;
const FRAME_BYTES = RECORD_HEADER_BYTES + RECORD_BYTES;

let root = "";
const children = new Set<ChildProcess>();
const servers = new Set<DemoServer>();

test.before(async () => {
  root = await mkdtemp(join(tmpdir(), "theseus-demo-app-"));
});

test.after.always(async () => {
  for (const s of servers) await s.close().catch(() => undefined);
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  await rm(root, { recursive: true, force: true });
});

let dirs = 0;
function freshDir(): string {
  return join(root, `case-${++dirs}`);
}

async function server(dataDir: string): Promise<DemoServer> {
  const s = await startDemoServer({ dataDir, pageFileBytes: PAGE_FILE_BYTES, checkpointIntervalMs: 100 });
  servers.add(s);
  return s;
}

interface Child {
  readonly proc: ChildProcess;
  readonly url: string;
  readonly exited: Promise<number | null>;
  readonly stdout: () => string;
  readonly stderr: () => string;
}

/** Starts `main.js serve` as the kubelet would (env, no flags) and waits for its "serving" line. */
async function spawnServe(dataDir: string): Promise<Child> {
  const proc = spawn(process.execPath, [MAIN, "serve", "--page-file-bytes", String(PAGE_FILE_BYTES)], {
    env: { ...process.env, DATA_DIR: dataDir, PORT: "0", POD_IP: "127.0.0.1", LOG_LEVEL: "warn" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.add(proc);
  let out = "";
  let err = "";
  proc.stderr?.on("data", (c: Buffer) => (err += c.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once("exit", (code) => resolve(code)));
  const url = await new Promise<string>((resolve, reject) => {
    proc.stdout?.on("data", (c: Buffer) => {
      out += c.toString();
      const m = /serving (http:\/\/\S+)/.exec(out);
      if (m?.[1] !== undefined) resolve(m[1]);
    });
    void exited.then((code) => reject(new Error(`serve exited with ${code}: ${err}`)));
  });
  return { proc, url, exited, stdout: () => out, stderr: () => err };
}

async function getJson<T>(url: string): Promise<{ status: number; body: T }> {
  const res = await fetch(url);
  return { status: res.status, body: (await res.json()) as T };
}

async function postRecord(url: string, payload: Buffer): Promise<{ seq: number; sha256: string }> {
  const res = await fetch(`${url}/records`, { method: "POST", body: payload });
  if (res.status !== 201) throw new Error(`POST answered ${res.status}`);
  return (await res.json()) as { seq: number; sha256: string };
}

async function readAcks(path: string): Promise<AckLine[]> {
  const text = await readFile(path, "utf8");
  return text
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => JSON.parse(l) as AckLine);
}

/** Writes at `rate` until `until` says stop (checked on each progress tick); returns the summary. */
function loadUntil(urls: { url?: string; urlsFile?: string }, acksFile: string, rate: number, until: (acked: number) => boolean) {
  const controller = new AbortController();
  const done = runLoad(
    {
      ...(urls.url === undefined ? {} : { urls: [urls.url] }),
      ...(urls.urlsFile === undefined ? {} : { urlsFile: urls.urlsFile }),
      ratePerSecond: rate,
      recordBytes: RECORD_BYTES,
      acksFile,
      progressIntervalMs: 20,
      onProgress: (p) => {
        if (until(p.acked)) controller.abort();
      },
    },
    controller.signal,
  );
  return { done, controller };
}

function waitFor(predicate: () => boolean): Promise<void> {
  return new Promise((resolve) => {
    const timer = setInterval(() => {
      if (predicate()) {
        clearInterval(timer);
        resolve();
      }
    }, 10);
  });
}

test("acknowledged records survive a kill -9; the torn tail is cut, a torn page replayed, numbering continues", async (t) => {
  const dataDir = freshDir();
  const acksFile = join(root, "crash.acks");
  const first = await spawnServe(dataDir);
  const { done } = loadUntil({ url: first.url }, acksFile, 200, (n) => n >= 40);
  const summary = await done;
  t.true(summary.acked >= 40);
  const before = await getJson<DemoServerStats>(`${first.url}/stats`);
  const lastSeq = before.body.store?.lastSeq ?? 0;
  first.proc.kill("SIGKILL");
  await first.exited;

  // What a crash mid-append leaves: a frame's header and half its payload.
  const torn = encodeRecord(lastSeq + 1, payloadFromSeed("torn", RECORD_BYTES)).subarray(0, RECORD_HEADER_BYTES + 100);
  await appendFile(join(dataDir, RECORDS_FILE), torn);
  // And a page torn in place: the last record's page half overwritten.
  const pageNo = pageForSeq(lastSeq, PAGE_FILE_BYTES / 4096);
  const pages = await open(join(dataDir, PAGES_FILE), "r+");
  await pages.write(Buffer.alloc(2048, 0xee), 0, 2048, pageNo * 4096 + 1024);
  await pages.close();
  const crashed = await verifyVolume({ dataDir, acksFile });
  t.is(crashed.log.tornTailBytes, torn.length);
  t.is(crashed.acks.present, summary.acked, "the crash image still holds every ack");
  t.is(crashed.pages.corrupt, 1, "the verifier sees the torn page");

  const second = await spawnServe(dataDir);
  t.regex(second.stdout(), /recovery=crash/);
  const after = await getJson<DemoServerStats>(`${second.url}/stats`);
  t.is(after.body.store?.lastSeq, lastSeq);
  t.is(after.body.store?.recovery.truncatedBytes, torn.length);
  t.true((after.body.store?.recovery.pagesRepaired ?? 0) >= 1);
  t.is((await stat(join(dataDir, RECORDS_FILE))).size, before.body.store?.logBytes ?? -1);
  const next = await postRecord(second.url, Buffer.from("after the crash"));
  t.is(next.seq, lastSeq + 1);

  second.proc.kill("SIGTERM");
  t.is(await second.exited, 0, "SIGTERM is a clean exit");
  await stat(join(dataDir, CLEAN_SHUTDOWN_FILE));
  const report = await verifyVolume({ dataDir, acksFile });
  t.true(report.ok, report.problems.map((p) => p.detail).join("; "));
  t.is(report.acks.present, summary.acked);
  t.is(report.pages.corrupt, 0);
  t.is(report.pages.behindLog, 0);

  // A graceful restart takes the fast path and keeps everything.
  const third = await server(dataDir);
  t.is(third.stats().store?.recovery.mode, "clean");
  t.is(third.stats().store?.lastSeq, lastSeq + 1);
  await third.close();
});

test("the log rolls into closed segments; restarts and the verifier read across them, and a damaged closed segment refuses the start", async (t) => {
  const dataDir = freshDir();
  const acksFile = join(root, "segments.acks");
  // Ten frames per segment: an incremental sync round then re-reads only the active one.
  const segmentBytes = 10 * FRAME_BYTES;
  const first = await startDemoServer({ dataDir, pageFileBytes: PAGE_FILE_BYTES, checkpointIntervalMs: 100, segmentBytes });
  servers.add(first);
  const { done } = loadUntil({ url: first.url }, acksFile, 300, (n) => n >= 45);
  const summary = await done;
  await first.close();
  const segments = (await readdir(dataDir)).filter((n) => SEGMENT_FILE.test(n)).sort();
  t.true(segments.length >= 3, `closed segments: ${segments.join(", ")}`);
  for (const name of segments) t.true((await stat(join(dataDir, name))).size >= segmentBytes, `${name} was closed full`);
  t.true((await stat(join(dataDir, RECORDS_FILE))).size <= segmentBytes + 8 * 1024 * 1024, "the active segment is the tail only");
  const report = await verifyVolume({ dataDir, acksFile });
  t.true(report.ok, report.problems.map((p) => p.detail).join("; "));
  t.is(report.acks.present, summary.acked);

  // A clean restart continues the numbering; a start without the clean marker scans every segment (and redoes the pages).
  const second = await startDemoServer({ dataDir, pageFileBytes: PAGE_FILE_BYTES, segmentBytes });
  t.is(second.stats().store?.recovery.mode, "clean");
  const lastSeq = second.stats().store?.lastSeq ?? 0;
  t.true(lastSeq >= summary.acked);
  await second.close();
  await unlink(join(dataDir, CLEAN_SHUTDOWN_FILE));
  const third = await startDemoServer({ dataDir, pageFileBytes: PAGE_FILE_BYTES, segmentBytes });
  t.is(third.stats().store?.recovery.mode, "crash");
  t.is(third.stats().store?.lastSeq, lastSeq);
  const next = await postRecord(third.url, Buffer.from("after a full scan"));
  t.is(next.seq, lastSeq + 1);
  await third.close();
  t.true((await verifyVolume({ dataDir, acksFile })).ok);

  // A closed segment never ends torn: damage there is refused, not truncated away, and the verifier names it.
  const damagedDir = `${dataDir}-damaged`;
  await cp(dataDir, damagedDir, { recursive: true });
  await unlink(join(damagedDir, CLEAN_SHUTDOWN_FILE));
  const victim = segments[1] ?? "";
  await truncate(join(damagedDir, victim), (await stat(join(damagedDir, victim))).size - 100);
  const refused = await startDemoServer({ dataDir: damagedDir, pageFileBytes: PAGE_FILE_BYTES, segmentBytes }).then(
    () => undefined,
    (error: unknown) => error,
  );
  t.true(refused instanceof TheseusError && refused.code === "data_loss", String(refused));
  t.regex(refused instanceof Error ? refused.message : "", new RegExp(victim.replace(/\./g, "\\.")));
  const damaged = await verifyVolume({ dataDir: damagedDir, acksFile });
  t.false(damaged.ok);
  t.true(damaged.acks.corrupt + damaged.acks.missing >= 1);
  t.true(damaged.problems.some((p) => p.kind === "log" && p.detail.includes(victim)));
});

test("the verifier names a missing record, a corrupt record and a corrupt or stale page", async (t) => {
  const dataDir = freshDir();
  const acksFile = join(root, "tamper.acks");
  const s = await server(dataDir);
  const { done } = loadUntil({ url: s.url }, acksFile, 300, (n) => n >= 30);
  const summary = await done;
  await s.close();
  const acks = await readAcks(acksFile);
  t.is(acks.length, summary.acked);
  t.true((await verifyVolume({ dataDir, acksFile })).ok);
  const seqs = acks.map((a) => a.seq).sort((a, b) => a - b);
  t.is(new Set(seqs).size, seqs.length, "concurrent appends (group commit) never share a seq");
  const lastSeq = seqs[seqs.length - 1] ?? 0;

  // Corrupt: one byte of one acknowledged record's payload.
  const corruptDir = `${dataDir}-corrupt`;
  await cp(dataDir, corruptDir, { recursive: true });
  const victim = seqs[10] ?? 0;
  const log = await open(join(corruptDir, RECORDS_FILE), "r+");
  await log.write(Buffer.from([0x55]), 0, 1, (victim - 1) * FRAME_BYTES + RECORD_HEADER_BYTES + 7);
  await log.close();
  const corrupt = await verifyVolume({ dataDir: corruptDir, acksFile });
  t.false(corrupt.ok);
  t.is(corrupt.firstBadSeq, victim);
  t.is(corrupt.acks.corrupt, 1);
  t.is(corrupt.acks.present, acks.length - 1);
  t.true(corrupt.problems.some((p) => p.kind === "corrupt" && p.seq === victim));
  // The CLI exits 1 and names it.
  const cli = spawnSync(process.execPath, [MAIN, "verify", "--data", corruptDir, "--acks", acksFile], { encoding: "utf8" });
  t.is(cli.status, 1);
  t.regex(cli.stdout, new RegExp(`first bad seq: ${victim}\\b`));

  // Missing: the last three records cut off the log (as a migration that lost the final round would).
  const missingDir = `${dataDir}-missing`;
  await cp(dataDir, missingDir, { recursive: true });
  await truncate(join(missingDir, RECORDS_FILE), (lastSeq - 3) * FRAME_BYTES);
  const missing = await verifyVolume({ dataDir: missingDir, acksFile });
  t.false(missing.ok);
  t.is(missing.acks.missing, 3);
  t.is(missing.firstBadSeq, lastSeq - 2);

  // Pages: one overwritten with garbage, and one that lost its last write after a clean stop.
  const pagesDir = `${dataDir}-pages`;
  await cp(dataDir, pagesDir, { recursive: true });
  const geometry = { pageSizeBytes: 4096, pageCount: PAGE_FILE_BYTES / 4096 };
  const stalePage = pageForSeq(lastSeq, geometry.pageCount);
  const garbagePage = (stalePage + 1) % geometry.pageCount;
  const pages = await open(join(pagesDir, PAGES_FILE), "r+");
  await pages.write(buildPage(stalePage, 0, geometry), 0, 4096, stalePage * 4096);
  await pages.write(Buffer.alloc(100, 1), 0, 100, garbagePage * 4096 + 500);
  await pages.close();
  const badPages = await verifyVolume({ dataDir: pagesDir, acksFile });
  t.false(badPages.ok);
  t.is(badPages.acks.present, acks.length, "records are fine; only pages are not");
  t.is(badPages.pages.corrupt, 1);
  t.is(badPages.pages.behindLog, 1);
  t.true(badPages.problems.some((p) => p.page === stalePage && /lost/.test(p.detail)));
  t.true(badPages.problems.some((p) => p.page === garbagePage && /checksum/.test(p.detail)));
});

test("the load client follows the urls file to a server restarted on another port and measures the gap", async (t) => {
  const dataDir = freshDir();
  const acksFile = join(root, "move.acks");
  const urlsFile = join(root, "move.urls");
  const a = await server(dataDir);
  await writeFile(urlsFile, `# the demo rewrites this at cutover\n${a.url}\n`);
  let acked = 0;
  const { done, controller } = loadUntil({ urlsFile }, acksFile, 100, (n) => {
    acked = n;
    return false;
  });
  await waitFor(() => acked >= 20);
  await a.close();
  const downMs = 400;
  await new Promise((r) => setTimeout(r, downMs));
  const b = await server(dataDir);
  t.not(b.url, a.url);
  await writeFile(urlsFile, `${b.url}\n`);
  const resumedFrom = acked;
  await waitFor(() => acked >= resumedFrom + 20);
  controller.abort();
  const summary = await done;
  await b.close();

  t.is(summary.stoppedBy, "signal");
  t.true(summary.errors > 0, "the client saw the server go away");
  // No server existed for downMs, so no ack can have come in that window: the gap is at least that long.
  t.true(summary.longestGapMs >= downMs, `longest gap ${summary.longestGapMs} ms`);
  const acks = await readAcks(acksFile);
  t.is(acks.length, summary.acked);
  t.true(acks.some((x) => x.url === a.url));
  t.true(acks.some((x) => x.url === b.url));
  const report = await verifyVolume({ dataDir, acksFile });
  t.true(report.ok, report.problems.map((p) => p.detail).join("; "));
  t.is(report.acks.present, summary.acked);
});

test("two servers cannot open the same data directory; a dead owner's lock is taken over", async (t) => {
  const dataDir = freshDir();
  const a = await server(dataDir);
  const error = await t.throwsAsync(server(dataDir));
  t.true(error instanceof TheseusError && error.code === "failed_precondition", String(error));
  t.regex(error?.message ?? "", new RegExp(`in use by process ${process.pid}`));
  // Nor can a server in another process.
  const child = spawnSync(process.execPath, [MAIN, "serve", "--data", dataDir, "--port", "0"], { encoding: "utf8", timeout: 20_000 });
  t.is(child.status, 1);
  t.regex(child.stderr, /in use by process/);
  t.is(a.state, "ready");
  t.truthy(await postRecord(a.url, Buffer.from("still the only writer")));
  await a.close();
  await t.throwsAsync(stat(join(dataDir, LOCK_FILE)), undefined, "a clean stop releases the lock");

  // A lock left by a process that no longer exists does not block the volume forever.
  const dead = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], { encoding: "utf8" });
  await writeFile(join(dataDir, LOCK_FILE), JSON.stringify({ pid: Number(dead.stdout), host: hostname(), startedAt: "earlier" }));
  const b = await server(dataDir);
  const lock = JSON.parse(await readFile(join(dataDir, LOCK_FILE), "utf8")) as { pid: number };
  t.is(lock.pid, process.pid);
  t.is((await postRecord(b.url, Buffer.from("next"))).seq, 2);
  await b.close();
});

test("the CLI as the kubelet and the demo run it: serve from env, load for a duration, SIGTERM, verify", async (t) => {
  const dataDir = freshDir();
  const acksFile = join(root, "cli.acks");
  const serve = await spawnServe(dataDir);
  const health = await getJson<{ status: string }>(`${serve.url}/healthz`);
  t.is(health.status, 200);
  const load = spawnSync(
    process.execPath,
    [MAIN, "load", "--url", serve.url, "--rate", "50", "--duration", "1", "--record-bytes", "1KiB", "--acks", acksFile, "--quiet"],
    { encoding: "utf8", timeout: 30_000 },
  );
  t.is(load.status, 0, load.stderr);
  t.regex(load.stdout, /longest gap without an ack \(observed downtime\): \d+ ms/);
  t.regex(load.stdout, /stopped by duration/);
  const acks = await readAcks(acksFile);
  t.true(acks.length > 0);
  t.true(acks.every((a) => a.length === 1024));
  serve.proc.kill("SIGTERM");
  t.is(await serve.exited, 0);
  const verify = spawnSync(process.execPath, [MAIN, "verify", "--data", dataDir, "--acks", acksFile, "--json"], { encoding: "utf8" });
  t.is(verify.status, 0, verify.stdout);
  const report = JSON.parse(verify.stdout) as { ok: boolean; acks: { present: number } };
  t.true(report.ok);
  t.is(report.acks.present, acks.length);
  const bad = spawnSync(process.execPath, [MAIN, "load", "--rate", "10", "--acks", acksFile], { encoding: "utf8" });
  t.is(bad.status, 2, "usage errors exit 2");
  t.regex(bad.stderr, /hint: give --url/);
});
