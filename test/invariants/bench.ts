// The bench the invariant tests share: two local clusters (real API servers) in a private THESEUS_HOME, their agents
// owned by the test (so a failpoint can crash one and the test restarts it), the writer watch on both API servers, and
// one migration case at a time in a fresh namespace: the demo app under write load, a crash where the case says, the
// recovery, then the four invariants checked and the row of the report filled in.
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { sleep } from "../../common/index.js";
import { DEMO_APP_NAME, demoCluster, demoVolumeDir, deployDemoApp, waitForAppUrl } from "../../coordinator/demo/index.js";
import type { DemoCluster } from "../../coordinator/demo/index.js";
import { PAGES_FILE, RECORDS_FILE, runLoad, verifyVolume } from "../../local-clusters/demo-app/index.js";
import type { LoadSummary, VerifyReport } from "../../local-clusters/demo-app/index.js";
import { downCluster, getCluster } from "../../local-clusters/index.js";
import { takeOverAgent } from "./agents.js";
import type { OwnedAgent } from "./agents.js";
import type { MatrixCase, Outcome, Owner } from "./cases.js";
import { overlaps, watchWriters } from "./writers.js";
import type { WriterInterval, WriterWatch } from "./writers.js";

export const CLI = fileURLToPath(new URL("../../coordinator/main.js", import.meta.url));
const SOURCE_CLASS = "local-path";
const TARGET_CLASS = "local-path-immediate";

/** The source's lease in every case: short, so that an expiry costs seconds; the coordinator renews it every third. */
export const LEASE_MS = 8_000;
/**
 * Invariant 4's bound: from the crash (or the recovery's start) to a journaled end. The slowest honest path is a
 * lease expiry (LEASE_MS) plus an agent restart and an abort's undo (unquiesce, unstage: tens of seconds on a shared
 * 2-core machine), or a roll-forward waiting for the target's pods to start.
 */
export const LIVENESS_BOUND_MS = 180_000;

export interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** The real CLI in a child process, its output kept in files of the case's directory. */
export function theseus(home: string, args: readonly string[], options: { failpoints?: string; logPrefix?: string; timeoutMs?: number; onSpawn?: (pid: number | undefined) => void } = {}): Promise<Run> {
  const env = { ...process.env, THESEUS_HOME: home, THESEUS_FAILPOINTS: options.failpoints ?? "" };
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
    options.onSpawn?.(child.pid);
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 20 * 60_000);
    child.once("exit", (code) => {
      clearTimeout(timer);
      const done = { code, stdout, stderr };
      if (options.logPrefix === undefined) resolve(done);
      else void writeFile(`${options.logPrefix}.log`, `$ theseus ${args.join(" ")}\n# THESEUS_FAILPOINTS=${options.failpoints ?? ""}\n# exit ${String(code)}\n--- stdout\n${stdout}\n--- stderr\n${stderr}`).then(() => resolve(done), () => resolve(done));
    });
  });
}

function ok(run: Run, what: string): Run {
  if (run.code !== 0) throw new Error(`${what} exited ${String(run.code)}:\n${run.stderr.slice(-4000)}\n${run.stdout.slice(-2000)}`);
  return run;
}

export interface Bench {
  readonly name: string;
  readonly home: string;
  /** Logs and the report of this test file. */
  readonly dir: string;
  readonly source: DemoCluster;
  readonly target: DemoCluster;
  readonly agents: { readonly source: OwnedAgent; readonly target: OwnedAgent };
  readonly writers: WriterWatch;
  /** The failpoints each agent runs with now. */
  readonly agentFailpoints: Record<"source" | "target", string>;
}

export function reportDir(): string {
  const dir = process.env["THESEUS_REPORT_DIR"] ?? fileURLToPath(new URL("../../../test-results/invariants", import.meta.url));
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** Two clusters NAME-src and NAME-dst, their agents taken over, the writer watch started. */
export async function startBench(name: string): Promise<Bench> {
  const home = mkdtempSync(join(tmpdir(), `theseus-inv-${name}-`));
  process.env["THESEUS_HOME"] = home;
  const dir = join(reportDir(), name);
  mkdirSync(dir, { recursive: true });
  const names = { source: `${name}-src`, target: `${name}-dst` };
  try {
    ok(await theseus(home, ["local", "up", names.source, "--agent", "process"], { timeoutMs: 10 * 60_000 }), `local up ${names.source}`);
    ok(await theseus(home, ["local", "up", names.target, "--agent", "process"], { timeoutMs: 10 * 60_000 }), `local up ${names.target}`);
  } catch (error) {
    for (const n of [names.source, names.target]) await downCluster(n).catch(() => undefined);
    throw error;
  }
  const cluster = async (n: string): Promise<DemoCluster> => {
    const c = await getCluster(n);
    if (c === undefined) throw new Error(`cluster ${n} vanished`);
    return demoCluster(c);
  };
  const source = await cluster(names.source);
  const target = await cluster(names.target);
  const agents = { source: await takeOverAgent(names.source, dir), target: await takeOverAgent(names.target, dir) };
  try {
    await agents.source.start("");
    await agents.target.start("");
    const writers = watchWriters([
      { name: names.source, kubeconfigPath: source.cluster.kubeconfigPath },
      { name: names.target, kubeconfigPath: target.cluster.kubeconfigPath },
    ]);
    await writers.ready;
    return { name, home, dir, source, target, agents, writers, agentFailpoints: { source: "", target: "" } };
  } catch (error) {
    // Nothing of a half-made bench may outlive the test file: its agents, its clusters.
    await agents.source.kill();
    await agents.target.kill();
    for (const n of [names.source, names.target]) await downCluster(n).catch(() => undefined);
    throw error;
  }
}

export async function stopBench(bench: Bench | undefined): Promise<void> {
  if (bench === undefined) return;
  bench.writers.stop();
  await bench.agents.source.kill();
  await bench.agents.target.kill();
  for (const c of [bench.source, bench.target]) await downCluster(c.cluster.name).catch(() => undefined);
}

export interface InvariantResult {
  readonly held: boolean;
  readonly detail: string;
}

export interface CaseResult {
  readonly failpoint: string;
  readonly owner: Owner | "partition" | "disk";
  readonly recovery: string;
  readonly migrationId: string;
  /** The crash happened where the case said (the process exited 137 at the failpoint). */
  readonly reached: boolean;
  readonly outcome: Outcome | "unresolved";
  readonly expected: Outcome | undefined;
  readonly singleWriter: InvariantResult;
  readonly noDataLoss: InvariantResult;
  readonly atomicity: InvariantResult;
  readonly liveness: InvariantResult;
  readonly resolutionMs: number | undefined;
  readonly reason: string;
  readonly notes: readonly string[];
}

export function allHeld(r: CaseResult): boolean {
  return r.reached && r.singleWriter.held && r.noDataLoss.held && r.atomicity.held && r.liveness.held && (r.expected === undefined || r.outcome === r.expected);
}

interface StatusJson {
  readonly phase: string;
  readonly reason?: string;
  readonly participants: { readonly source: { readonly status?: { readonly phase?: string }; readonly unreachable?: string }; readonly target: { readonly status?: { readonly phase?: string }; readonly unreachable?: string } };
}

export async function status(bench: Bench, id: string): Promise<StatusJson | undefined> {
  const run = await theseus(bench.home, ["status", id, "-o", "json"], { timeoutMs: 60_000 });
  if (run.code !== 0) return undefined;
  try {
    return JSON.parse(run.stdout) as StatusJson;
  } catch {
    return undefined;
  }
}

const ENDED = new Set(["committed", "finished", "aborted"]);

/** The demo app in a fresh namespace of the source, under write load, and what the case learns about it. */
export interface CaseApp {
  readonly namespace: string;
  readonly targetNamespace: string;
  readonly urlsFile: string;
  readonly acksFile: string;
  readonly load: Promise<LoadSummary>;
  stopLoad(): Promise<LoadSummary>;
  /** The source volume's data files as they were once the source's writer was gone (the cutover's quiesce). */
  quiesceSnapshot: { readonly atMs: number; readonly files: Record<string, string>; readonly sourceRunning: boolean } | undefined;
  readonly startedMs: number;
}

export async function startCaseApp(bench: Bench, namespace: string): Promise<CaseApp> {
  const url = await deployDemoApp(bench.source, { namespace, storageClass: SOURCE_CLASS, sizeBytes: 64 * 1024 * 1024 });
  const urlsFile = join(bench.dir, `${namespace}.urls`);
  const acksFile = join(bench.dir, `${namespace}.acks.jsonl`);
  await writeFile(urlsFile, `${url}\n`);
  await writeFile(acksFile, "");
  const stopping = new AbortController();
  // 4 KiB records at 40/s: a steady writer whose every ack the verifier can prove, light on a shared machine.
  const load = runLoad({ urlsFile, acksFile, recordBytes: 4096, ratePerSecond: 40 }, stopping.signal);
  load.catch(() => undefined);
  const sourceDir = await demoVolumeDir(bench.source, namespace);
  const app: CaseApp = {
    namespace,
    targetNamespace: `${namespace}-t`,
    urlsFile,
    acksFile,
    load,
    startedMs: Date.now(),
    quiesceSnapshot: undefined,
    async stopLoad() {
      stopping.abort();
      return load;
    },
  };
  // The source's writer going away means a quiesce: stop the load client (so that a restored source is not written
  // before it is compared) and fingerprint the data files, which from now on only the migration may touch.
  const off = bench.writers.onChange((interval: WriterInterval) => {
    if (interval.cluster !== bench.source.cluster.name || interval.namespace !== namespace || interval.toMs === undefined || app.quiesceSnapshot !== undefined) return;
    off();
    void (async () => {
      await writeFile(urlsFile, "# paused: the source was quiesced\n");
      const files = await fingerprint(sourceDir);
      app.quiesceSnapshot = { atMs: Date.now(), files, sourceRunning: bench.writers.running(bench.source.cluster.name, namespace) };
    })();
  });
  return app;
}

async function fingerprint(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of [RECORDS_FILE, PAGES_FILE]) {
    const bytes = await readFile(join(dir, name)).catch(() => undefined);
    out[name] = bytes === undefined ? "(absent)" : createHash("sha256").update(bytes).digest("hex");
  }
  return out;
}

interface Deployment {
  readonly replicas: number;
  readonly ready: number;
}

async function deployment(where: DemoCluster, namespace: string): Promise<Deployment | undefined> {
  const d = await where.objects.get({ apiVersion: "apps/v1", kind: "Deployment", namespace, name: DEMO_APP_NAME });
  if (d === undefined) return undefined;
  return { replicas: (d["spec"] as { replicas?: number }).replicas ?? 1, ready: (d["status"] as { readyReplicas?: number } | undefined)?.readyReplicas ?? 0 };
}

async function namespaceGone(where: DemoCluster, namespace: string): Promise<boolean> {
  return (await where.objects.get({ apiVersion: "v1", kind: "Namespace", namespace: "", name: namespace })) === undefined;
}

async function within<T>(timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) return undefined;
    await sleep(500);
  }
}

/** Polls `theseus status` until the journal says committed or aborted, within the liveness bound from `fromMs`. */
export async function awaitEnd(bench: Bench, id: string, fromMs: number): Promise<{ status: StatusJson | undefined; endedAtMs: number | undefined }> {
  let last: StatusJson | undefined;
  const found = await within(Math.max(0, fromMs + LIVENESS_BOUND_MS - Date.now()), async () => {
    last = (await status(bench, id)) ?? last;
    return last !== undefined && ENDED.has(last.phase) ? last : undefined;
  });
  return { status: found ?? last, endedAtMs: found === undefined ? undefined : Date.now() };
}

/** Invariants 1-3 for an ended (or not) migration of the case's app; stops the load client. */
export async function checkInvariants(
  bench: Bench,
  app: CaseApp,
  st: StatusJson | undefined,
): Promise<{ outcome: Outcome | "unresolved"; singleWriter: InvariantResult; noDataLoss: InvariantResult; atomicity: InvariantResult; notes: string[] }> {
  const notes: string[] = [];
  const phase = st?.phase ?? "(no status)";
  const outcome: Outcome | "unresolved" = phase === "committed" || phase === "finished" ? "committed" : phase === "aborted" ? "aborted" : "unresolved";
  const srcName = bench.source.cluster.name;
  const dstName = bench.target.cluster.name;

  // 3. Atomicity: the journal's word, both participants agreeing, and the clusters as that word says.
  const atomicProblems: string[] = [];
  let dataVerify: VerifyReport | undefined;
  let snapshotProblem: string | undefined;
  if (outcome === "unresolved") atomicProblems.push(`the journal says ${phase}`);
  const srcPhase = st?.participants.source.status?.phase ?? `unreachable/none (${st?.participants.source.unreachable ?? "?"})`;
  const dstPhase = st?.participants.target.status?.phase ?? `unreachable/none (${st?.participants.target.unreachable ?? "?"})`;
  notes.push(`participants: source ${srcPhase}, target ${dstPhase}`);
  const serving = outcome === "aborted" ? bench.source : bench.target;
  const servingNs = outcome === "aborted" ? app.namespace : app.targetNamespace;
  if (outcome === "committed") {
    if (!["committed", "finished"].includes(srcPhase)) atomicProblems.push(`committed, but the source participant is ${srcPhase}`);
    if (!["committed", "finished"].includes(dstPhase)) atomicProblems.push(`committed, but the target participant is ${dstPhase}`);
    const up = await within(90_000, async () => ((await deployment(bench.target, app.targetNamespace))?.ready ?? 0) >= 1 || undefined);
    if (up === undefined) atomicProblems.push("committed, but the app is not ready in the target");
    const retired = await within(30_000, async () => ((await deployment(bench.source, app.namespace))?.replicas === 0 && !bench.writers.running(srcName, app.namespace)) || undefined);
    if (retired === undefined) atomicProblems.push(`committed (move), but the source is not retired: ${JSON.stringify(await deployment(bench.source, app.namespace))}`);
  } else if (outcome === "aborted") {
    if (st?.participants.source.status !== undefined && !["aborted", "finished"].includes(srcPhase)) atomicProblems.push(`aborted, but the source participant is ${srcPhase}`);
    if (st?.participants.target.status !== undefined && !["aborted", "finished"].includes(dstPhase)) atomicProblems.push(`aborted, but the target participant is ${dstPhase}`);
    const up = await within(90_000, async () => {
      const d = await deployment(bench.source, app.namespace);
      return d !== undefined && d.replicas === 1 && d.ready >= 1 ? d : undefined;
    });
    if (up === undefined) atomicProblems.push(`aborted, but the app is not back in the source: ${JSON.stringify(await deployment(bench.source, app.namespace))}`);
    const gone = await within(90_000, async () => (await namespaceGone(bench.target, app.targetNamespace)) || undefined);
    if (gone === undefined) atomicProblems.push(`aborted, but the target's staging (namespace ${app.targetNamespace}) is still there`);
    // 2b. After an abort the source's data is as it was at quiesce (the load client was paused then, so only the
    // migration could have changed it).
    if (app.quiesceSnapshot !== undefined) {
      const now = await fingerprint(await demoVolumeDir(bench.source, app.namespace));
      if (JSON.stringify(now) !== JSON.stringify(app.quiesceSnapshot.files)) snapshotProblem = `the source's data changed since quiesce: ${JSON.stringify(app.quiesceSnapshot.files)} -> ${JSON.stringify(now)}`;
      else notes.push("source data identical to its state at quiesce");
      if (app.quiesceSnapshot.sourceRunning) snapshotProblem = "the quiesce snapshot was taken while a source pod ran";
    } else {
      notes.push("the source was never quiesced");
    }
  }

  // 2. No data loss: the load client resumes against whichever cluster serves, and every ack it ever saw (before the
  // migration, during pre-sync, after) must be in that cluster's volume.
  let lossProblem: string | undefined;
  if (outcome !== "unresolved") {
    try {
      const url = await waitForAppUrl(serving, servingNs, { ready: true, timeoutMs: 60_000 });
      await writeFile(app.urlsFile, `${url}\n`);
      const before = (await readFile(app.acksFile, "utf8")).split("\n").length;
      const more = await within(30_000, async () => ((await readFile(app.acksFile, "utf8")).split("\n").length >= before + 5 ? true : undefined));
      if (more === undefined) lossProblem = `the app in ${serving.cluster.name}/${servingNs} acknowledges no writes`;
    } catch (error) {
      lossProblem = `the app in ${serving.cluster.name}/${servingNs} has no ready pod: ${String(error)}`;
    }
  }
  const summary = await app.stopLoad().catch(() => undefined);
  if (outcome !== "unresolved") {
    dataVerify = await verifyVolume({ dataDir: await demoVolumeDir(serving, servingNs), acksFile: app.acksFile });
    if (!dataVerify.ok) lossProblem = `${dataVerify.problemCount} problems on ${serving.cluster.name}/${servingNs}, first bad seq ${String(dataVerify.firstBadSeq)}: ${JSON.stringify(dataVerify.problems.slice(0, 3))}`;
  }
  if (snapshotProblem !== undefined) lossProblem = lossProblem === undefined ? snapshotProblem : `${lossProblem}; ${snapshotProblem}`;
  const acked = dataVerify?.acks.acked ?? summary?.acked ?? 0;

  // 1. Single writer: no two intervals of the app, one per cluster, overlap.
  const mine = bench.writers
    .intervals()
    .filter((i) => (i.cluster === srcName && i.namespace === app.namespace) || (i.cluster === dstName && i.namespace === app.targetNamespace));
  const found = overlaps(mine, Date.now());
  const sources = mine.filter((i) => i.cluster === srcName).length;
  const targets = mine.filter((i) => i.cluster === dstName).length;
  const singleWriter: InvariantResult =
    found.length === 0
      ? { held: true, detail: `${sources} source and ${targets} target pod intervals, none overlapping` }
      : { held: false, detail: found.map((o) => `${o.a.cluster}/${o.a.pod} and ${o.b.cluster}/${o.b.pod} both ran for ${o.overlapMs} ms`).join("; ") };

  return {
    outcome,
    singleWriter,
    noDataLoss: lossProblem === undefined ? { held: true, detail: `${acked} acked writes all present in ${serving.cluster.name}/${servingNs}` } : { held: false, detail: lossProblem },
    atomicity: atomicProblems.length === 0 ? { held: true, detail: `${outcome}; status and both participants agree` } : { held: false, detail: atomicProblems.join("; ") },
    notes,
  };
}

/** Removes the case's namespaces from both clusters without waiting (the next case uses fresh ones). */
export async function cleanupCase(bench: Bench, app: CaseApp): Promise<void> {
  for (const [where, ns] of [
    [bench.source, app.namespace],
    [bench.target, app.targetNamespace],
  ] as const) {
    await where.objects.delete({ apiVersion: "v1", kind: "Namespace", namespace: "", name: ns }).catch(() => undefined);
  }
}

/** Makes both agents run with exactly these failpoints (restarting only those that differ or died). */
export async function agentsWith(bench: Bench, failpoints: Partial<Record<"source" | "target", string>>): Promise<void> {
  for (const who of ["source", "target"] as const) {
    const wanted = failpoints[who] ?? "";
    if (!bench.agents[who].alive() || bench.agentFailpoints[who] !== wanted) {
      await bench.agents[who].start(wanted);
      bench.agentFailpoints[who] = wanted;
    }
  }
}

/** One crash-matrix case, start to end. */
export async function runMatrixCase(bench: Bench, c: MatrixCase, index: number): Promise<CaseResult> {
  const id = `${bench.name}-${index}`;
  const namespace = `inv-${bench.name}-${index}`;
  const logPrefix = join(bench.dir, id);
  const notes: string[] = [];
  const crash = `${c.failpoint}=crash`;
  const coordinatorFailpoints = [c.owner === "coordinator" ? crash : "", c.trigger].filter((x) => x !== "").join(",");
  await agentsWith(bench, c.owner === "coordinator" ? {} : { [c.owner]: crash });
  const app = await startCaseApp(bench, namespace);
  try {
    const migrate = theseus(
      bench.home,
      [
        "migrate",
        "--from", bench.source.cluster.name,
        "--to", bench.target.cluster.name,
        "-n", namespace,
        "--to-namespace", app.targetNamespace,
        "--storage-class", `${SOURCE_CLASS}=${TARGET_CLASS}`,
        "--auto-cutover",
        "--max-downtime", "120s",
        "--lease", `${LEASE_MS / 1000}s`,
        "--migration-id", id,
        "-o", "json",
      ],
      { failpoints: coordinatorFailpoints, logPrefix: `${logPrefix}.migrate` },
    );
    let coordinatorCrashed = false;
    let reached = false;
    let crashAtMs: number | undefined;
    if (c.owner === "coordinator") {
      const run = await migrate;
      coordinatorCrashed = run.code === 137;
      reached = coordinatorCrashed;
      crashAtMs = Date.now();
      if (!reached) notes.push(`the coordinator exited ${String(run.code)} without reaching the failpoint`);
    } else {
      const agent = bench.agents[c.owner];
      const migrateEnd = migrate.then((run) => ({ kind: "migrate" as const, run }));
      let first = await Promise.race([agent.exited().then((exit) => ({ kind: "agent" as const, exit })), migrateEnd]);
      if (first.kind === "migrate") {
        coordinatorCrashed = first.run.code === 137;
        // A trigger may kill the coordinator first (leaving the source's lease to run out): wait for the agent then.
        const exit = await Promise.race([agent.exited(), sleep(LEASE_MS + 60_000).then(() => undefined)]);
        if (exit !== undefined) first = { kind: "agent", exit };
      }
      if (first.kind === "agent") {
        reached = first.exit.code === 137;
        crashAtMs = first.exit.atMs;
        if (!reached) notes.push(`the ${c.owner} agent exited ${String(first.exit.code)}/${String(first.exit.signal)}, not at the failpoint`);
      } else {
        notes.push(`the migration ended (coordinator exit ${String(first.run.code)}) before the ${c.owner} agent reached the failpoint`);
      }
      if (c.recovery === "lease") await sleep(LEASE_MS + 2_000);
      await agentsWith(bench, {});
    }
    const recoveryFrom = crashAtMs ?? Date.now();
    if (coordinatorCrashed) {
      if (c.recovery === "lease") await sleep(LEASE_MS + 2_000);
      const resumed = await theseus(bench.home, ["resume", id, "-o", "json"], { logPrefix: `${logPrefix}.resume` });
      notes.push(`resume exited ${String(resumed.code)}`);
    }
    const run = await migrate;
    if (!coordinatorCrashed && run.code !== 0) notes.push(`the coordinator (not crashed) exited ${String(run.code)}: ${lastError(run.stderr)}`);
    const { status: st, endedAtMs } = await awaitEnd(bench, id, recoveryFrom);
    const checked = await checkInvariants(bench, app, st);
    const resolutionMs = endedAtMs === undefined ? undefined : endedAtMs - recoveryFrom;
    return {
      failpoint: c.failpoint,
      owner: c.owner,
      recovery: c.recovery,
      migrationId: id,
      reached,
      outcome: checked.outcome,
      expected: c.expect,
      singleWriter: checked.singleWriter,
      noDataLoss: checked.noDataLoss,
      atomicity: checked.atomicity,
      liveness:
        resolutionMs === undefined
          ? { held: false, detail: `not ended within ${LIVENESS_BOUND_MS / 1000} s of the crash (phase ${st?.phase ?? "?"})` }
          : { held: true, detail: `ended ${Math.round(resolutionMs / 100) / 10} s after the crash` },
      resolutionMs,
      reason: st?.reason ?? "",
      notes: [...notes, ...checked.notes],
    };
  } finally {
    await app.stopLoad().catch(() => undefined);
    await cleanupCase(bench, app);
  }
}

function lastError(stderr: string): string {
  const lines = stderr.trim().split("\n").filter((l) => l.startsWith("error"));
  return (lines.at(-1) ?? stderr.trim().split("\n").at(-1) ?? "").slice(0, 300);
}
