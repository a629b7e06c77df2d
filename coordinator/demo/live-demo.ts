// `theseus demo`: the whole story on one machine. Two local clusters (real API servers) with an agent each, the demo
// app in the first writing acknowledged records and page rewrites onto its volume, a live migration to the second
// under another namespace and storage class, the load client following the app to its new address, and the verifier
// proving on the target's volume that every acknowledged write arrived.
import { createWriteStream } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { availableParallelism, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { TheseusError, anySignal, describeError, createLogger, formatBytes, formatDuration, sleep } from "../../common/index.js";
import { runLoad, verifyVolume } from "../../local-clusters/demo-app/index.js";
import type { LoadProgress, LoadSummary, VerifyReport } from "../../local-clusters/demo-app/index.js";
import { STORAGE_CLASS_IMMEDIATE, STORAGE_CLASS_WAIT } from "../../local-clusters/index.js";
import { createLocalInstallation } from "../certs/index.js";
import { startMigration } from "../migration/index.js";
import type { MigrationHandle, MigrationOutcome } from "../migration/index.js";
import { demoClaimName, demoCluster, demoVolumeDir, deployDemoApp, seedVolume, waitForAppUrl } from "./app.js";
import type { DemoCluster } from "./app.js";
import { DEMO_VOLUME_ACCESS, downDemoClusters, ensureControlPlane, upDemoClusters } from "./clusters.js";
import { verdictOf } from "./report.js";
import type { DemoPrediction, DemoReport, DemoRound } from "./report.js";

export interface DemoOptions {
  /** The app's claim (default 1 GiB). */
  readonly sizeBytes?: number;
  /** Other files put on the volume before the migration, so that round 0 has a volume's worth to copy (default: half the claim). */
  readonly seedBytes?: number;
  /** The load client's acknowledged writes per second, in bytes (default 5 MB/s). */
  readonly writeBytesPerSecond?: number;
  readonly recordBytes?: number;
  readonly mode?: "move" | "copy";
  readonly maxDowntimeMs?: number;
  /** How long the app writes before the migration starts, and after its cutover before the load stops. */
  readonly settleMs?: number;
  /** Leave the clusters running and the working directory in place. */
  readonly keep?: boolean;
  readonly signal?: AbortSignal | undefined;
  /** Where the story is told, one line per step. */
  readonly say: (line: string) => void;
}

interface ResolvedDemoOptions {
  readonly sizeBytes: number;
  readonly seedBytes: number;
  readonly recordBytes: number;
  readonly ratePerSecond: number;
  readonly mode: "move" | "copy";
  readonly maxDowntimeMs: number;
  readonly settleMs: number;
  readonly keep: boolean;
  readonly signal: AbortSignal | undefined;
  readonly say: (line: string) => void;
}

const SOURCE = { cluster: "eu-1", namespace: "ledger", storageClass: STORAGE_CLASS_WAIT } as const;
const TARGET = { cluster: "us-2", namespace: "ledger-us", storageClass: STORAGE_CLASS_IMMEDIATE } as const;
const MIN_SIZE_BYTES = 64 * 1024 * 1024;
const LEASE_MS = 30_000;
const MIN_ROUNDS_BEFORE_CONVERGED_CUTOVER = 3;

export function resolveDemoOptions(options: DemoOptions): ResolvedDemoOptions {
  const sizeBytes = options.sizeBytes ?? 1024 ** 3;
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes < MIN_SIZE_BYTES) {
    throw new TheseusError("invalid_argument", `--size ${sizeBytes} is too small for the demo's volume`, { hint: `give at least ${formatBytes(MIN_SIZE_BYTES)}, e.g. --size 256MiB` });
  }
  const seedBytes = options.seedBytes ?? Math.floor(sizeBytes / 2);
  const recordBytes = options.recordBytes ?? 64 * 1024;
  const writeBytesPerSecond = options.writeBytesPerSecond ?? 5_000_000;
  if (writeBytesPerSecond <= 0 || recordBytes <= 0 || seedBytes < 0 || seedBytes > sizeBytes) {
    throw new TheseusError("invalid_argument", "the demo's write rate and record size must be positive, and its seed data fit its volume");
  }
  return {
    sizeBytes,
    seedBytes,
    recordBytes,
    ratePerSecond: writeBytesPerSecond / recordBytes,
    mode: options.mode ?? "move",
    maxDowntimeMs: options.maxDowntimeMs ?? 3000,
    settleMs: options.settleMs ?? 3000,
    keep: options.keep === true,
    signal: options.signal,
    say: options.say,
  };
}

export async function runDemo(input: DemoOptions): Promise<DemoReport> {
  const o = resolveDemoOptions(input);
  const { say, signal } = o;
  const startedMs = Date.now();
  await ensureControlPlane(say, signal);
  const work = await mkdtemp(join(tmpdir(), "theseus-demo-"));
  // The local clusters find their state through THESEUS_HOME alone; the demo's live in its working directory, so that
  // it never touches the user's own clusters and its clean-up removes all of it.
  const previousHome = process.env["THESEUS_HOME"];
  const home = join(work, "home");
  process.env["THESEUS_HOME"] = home;
  const logFile = join(work, "demo.log");
  const logger = createLogger({ name: "theseus-demo", level: "info", destination: createWriteStream(logFile, { flags: "a" }) });
  const names = [SOURCE.cluster, TARGET.cluster];
  const loadStop = new AbortController();
  let load: Promise<LoadSummary> | undefined;
  try {
    say(`working in ${work} (coordinator log: ${logFile})`);
    const pki = join(work, "pki");
    const tls = await createLocalInstallation(pki, { installation: "demo", agentClusters: names, coordinator: "demo" });
    let stepMs = Date.now();
    const [eu, us] = await upDemoClusters(names, pki, logger, signal);
    if (eu?.agentAddress === undefined || us?.agentAddress === undefined) throw new TheseusError("internal", "a demo cluster came up without its agent");
    say(`1. two local clusters, ${eu.name} and ${us.name} (real kube-apiserver v1.20.2, emulated kubelets), each with its agent installed by the Helm chart (pods behind NodePorts ${eu.agentAddress} and ${us.agentAddress}, claims reached through ${DEMO_VOLUME_ACCESS} pods) and certificates from a fresh CA, in ${since(stepMs)}`);

    const source = demoCluster(eu);
    const target = demoCluster(us);
    stepMs = Date.now();
    const url = await deployDemoApp(source, { namespace: SOURCE.namespace, storageClass: SOURCE.storageClass, sizeBytes: o.sizeBytes, signal });
    const sourceDir = await demoVolumeDir(source, SOURCE.namespace, signal);
    const seedBytes = await seedVolume(join(sourceDir, "seed"), o.seedBytes, signal);
    say(`2. deployed the demo app in ${eu.name}/${SOURCE.namespace}: a Deployment serving at ${url}, its ${formatBytes(o.sizeBytes)} claim ${demoClaimName()} (${SOURCE.storageClass}) holding ${formatBytes(seedBytes)} of other files, in ${since(stepMs)}`);

    const urlsFile = join(work, "urls");
    const acksFile = join(work, "acks.jsonl");
    await writeFile(urlsFile, `${url}\n`);
    let lastProgress: LoadProgress | undefined;
    load = runLoad(
      { urlsFile, ratePerSecond: o.ratePerSecond, recordBytes: o.recordBytes, acksFile, progressIntervalMs: 200, onProgress: (p) => (lastProgress = p), logger },
      anySignal(signal, loadStop.signal),
    );
    say(`3. the load client writes ${formatBytes(o.recordBytes)} records at ${o.ratePerSecond.toFixed(0)}/s (${formatBytes(o.ratePerSecond * o.recordBytes)}/s, each acknowledged after fdatasync and rewriting a page), every ack recorded in ${acksFile}`);
    await sleep(o.settleMs, signal);

    const migration = await startMigration({
      from: { name: eu.name, address: eu.agentAddress, cluster: eu.name },
      to: { name: us.name, address: us.agentAddress, cluster: us.name },
      plan: { namespace: SOURCE.namespace, toNamespace: TARGET.namespace, storageClass: [`${SOURCE.storageClass}=${TARGET.storageClass}`] },
      mode: o.mode,
      bandwidthBytesPerSecond: 0,
      autoCutover: false,
      maxDowntimeMs: o.maxDowntimeMs,
      leaseMs: LEASE_MS,
      tls,
      home,
      logger,
      ...(signal === undefined ? {} : { signal }),
    });
    say(`4. migration ${migration.id} (${o.mode}) to ${us.name}/${TARGET.namespace} (${TARGET.storageClass}): pre-sync while the app writes, then cut over once the predicted downtime is within ${formatDuration(o.maxDowntimeMs)} or no longer shrinks`);

    // The load client follows the app once the target's pod is Ready, as a Service would route to it: the downtime it
    // measures is the one a user of the app sees, readiness included, and the one the prediction is about.
    const followStop = new AbortController();
    const followed = waitForAppUrl(target, TARGET.namespace, { ready: true, timeoutMs: 60 * 60_000, signal: anySignal(signal, followStop.signal) }).then(async (next) => {
      await writeFile(urlsFile, `${next}\n`);
      return next;
    });
    followed.catch(() => undefined);
    const { outcome, prediction } = await followMigration(migration, o.maxDowntimeMs, startedMs, say);
    let targetUrl: string | undefined;
    if (outcome.outcome === "committed") {
      targetUrl = await followed;
      const switched = lastProgress?.acked ?? 0;
      const resumedMs = Date.now();
      while ((lastProgress?.acked ?? 0) <= switched || Date.now() - resumedMs < o.settleMs) {
        if (Date.now() - resumedMs > 60_000) throw new TheseusError("unavailable", `the app in ${us.name} acknowledged no write within a minute of the cutover`, { hint: `read the pod's log under ${us.dataDir}/pods` });
        await sleep(200, signal);
      }
      say(`6. the load client follows the app to ${targetUrl}; ${(lastProgress?.acked ?? 0) - switched} more writes acknowledged there`);
    } else {
      followStop.abort();
      say(`6. the migration aborted${outcome.reason === undefined ? "" : `: ${outcome.reason}`}; the app runs on in ${eu.name}`);
    }
    loadStop.abort();
    const summary = await load;
    load = undefined;

    const verifiedCluster = outcome.outcome === "committed" ? target : source;
    const verifiedNamespace = outcome.outcome === "committed" ? TARGET.namespace : SOURCE.namespace;
    const dataDir = await demoVolumeDir(verifiedCluster, verifiedNamespace, signal);
    const verify = await verifyVolume({ dataDir, acksFile });
    say(`7. verified ${verifiedCluster.cluster.name}'s volume ${dataDir}: ${verify.acks.present} of ${verify.acks.acked} acknowledged writes present and intact, ${verify.pages.pageCount} pages consistent${verify.ok ? "" : ` — ${verify.problems.length} problems`}`);
    return demoReport({ o, outcome, prediction, summary, verify, seedBytes, startedMs, target: verifiedCluster });
  } finally {
    loadStop.abort();
    await load?.catch(() => undefined);
    if (o.keep) {
      say(`kept ${work}: see the clusters with THESEUS_HOME=${home} theseus local list; remove them with THESEUS_HOME=${home} theseus local down ${SOURCE.cluster} (and ${TARGET.cluster})`);
    } else {
      await downDemoClusters(names, logger);
      await rm(work, { recursive: true, force: true });
    }
    if (previousHome === undefined) delete process.env["THESEUS_HOME"];
    else process.env["THESEUS_HOME"] = previousHome;
  }
}

/**
 * Tells the migration's events as they come (phases, rounds, the prediction), cuts over when the prediction says so,
 * and returns the outcome.
 *
 * The demo decides the cutover itself rather than with autoCutover: once pre-sync has converged above the target it
 * still cuts over (saying so), because the story is about the transaction, and a busy laptop should show a longer
 * downtime, measured and predicted side by side, rather than end with nothing moved. Pre-sync that cannot converge
 * (the app writes faster than a round moves) is refused by the coordinator itself, reason and all.
 */
async function followMigration(
  migration: MigrationHandle,
  maxDowntimeMs: number,
  startedMs: number,
  say: (line: string) => void,
): Promise<{ outcome: MigrationOutcome; prediction: DemoPrediction | undefined }> {
  const at = (ms: number): string => `+${((ms - startedMs) / 1000).toFixed(1)}s`;
  // Not awaited in the loop: the events must keep flowing while the cutover runs.
  let cutover: Promise<void> | undefined;
  // The last prediction before the cutover began: the one the driver decided on, with its terms.
  let atCutover: DemoPrediction | undefined;
  let cuttingOver = false;
  // Two rounds (the full copy and one incremental) fit the round model poorly: a negative intercept falls back to the
  // whole incremental round as "fixed cost" and the prediction calls itself converged far above the truth. A third
  // round gives the fit a small round to anchor the fixed cost.
  let rounds = 0;
  for await (const event of migration.events) {
    switch (event.type) {
      case "phase":
        if (event.phase === "preparing") cuttingOver = true;
        say(`   ${at(event.atMs)} phase ${event.phase}`);
        break;
      case "round": {
        rounds++;
        const r = event.round;
        say(`   ${at(Date.now())} ${event.volume} round ${r.round}: ${formatBytes(Number(r.bytesChanged))} changed, ${formatBytes(Number(r.wireBytes))} on the wire, in ${formatDuration(Number(r.durationMs))} (app dirtied ${formatBytes(r.dirtyBytesPerSecond)}/s)`);
        break;
      }
      case "prediction": {
        const { prediction, decision, costs } = event;
        if (!cuttingOver) {
          atCutover = {
            downtimeMs: prediction.downtimeMs,
            quiesceMs: prediction.quiesceMs,
            quiesceBasis: `${costs.quiesce.source}: ${costs.quiesce.basis}`,
            finalRoundMs: prediction.finalRoundMs,
            finalRoundBytes: prediction.finalRoundBytes,
            startupMs: prediction.startupMs,
            startupBasis: `${costs.startup.source}: ${costs.startup.basis}`,
            fixedMs: prediction.fixedMs,
            throughputBytesPerSecond: Number.isFinite(prediction.throughputBytesPerSecond) ? prediction.throughputBytesPerSecond : null,
            dirtyBytesPerSecond: prediction.dirtyBytesPerSecond,
          };
        }
        say(`   ${at(Date.now())} predicted downtime ${formatDuration(prediction.downtimeMs)} (final round ${formatBytes(prediction.finalRoundBytes)} in ${formatDuration(prediction.finalRoundMs)}): ${decision.why}`);
        const kind = prediction.convergence.kind;
        const fits = kind !== "unknown" && kind !== "diverging" && prediction.downtimeMs <= maxDowntimeMs;
        if (cutover === undefined && (fits || (kind === "converged" && rounds >= MIN_ROUNDS_BEFORE_CONVERGED_CUTOVER))) {
          say(`   ${at(Date.now())} cutting over: ${fits ? `the predicted downtime is within ${formatDuration(maxDowntimeMs)}` : `pre-sync has converged above the ${formatDuration(maxDowntimeMs)} target on this machine (load average ${loadavg()[0]?.toFixed(1) ?? "?"} on ${availableParallelism()} cores); more rounds would not shorten it`}`);
          cutover = migration.cutover().catch((error: unknown) => say(`   the cutover request failed: ${describeError(error)}`));
        }
        break;
      }
      case "message":
        // The driver tells an operator to run `theseus cutover` once pre-sync has converged; the demo has asked for
        // the cutover itself by then, and the advice would only confuse its story.
        if (cutover !== undefined && event.text.includes("theseus cutover")) break;
        say(`   ${at(Date.now())} ${event.text}`);
        break;
      case "progress":
        break;
    }
  }
  await cutover;
  const result = await migration.outcome;
  say(`5. migration ${result.outcome}${result.reason === undefined ? "" : ` (${result.reason})`}: downtime ${result.measuredDowntimeMs === undefined ? "-" : formatDuration(result.measuredDowntimeMs)} from quiesce to the target ready, ${result.predictedDowntimeMs === undefined ? "no prediction" : `${formatDuration(result.predictedDowntimeMs)} predicted`}`);
  return { outcome: result, prediction: atCutover };
}

function demoReport(x: {
  o: ResolvedDemoOptions;
  outcome: MigrationOutcome;
  prediction: DemoPrediction | undefined;
  summary: LoadSummary;
  verify: VerifyReport;
  seedBytes: number;
  startedMs: number;
  target: DemoCluster;
}): DemoReport {
  const { o, outcome, summary, verify } = x;
  const rounds: DemoRound[] = outcome.rounds.map(({ volume, round }) => ({
    volume,
    round: round.round,
    bytesChanged: Number(round.bytesChanged),
    wireBytes: Number(round.wireBytes),
    durationMs: Number(round.durationMs),
    dirtyBytesPerSecond: round.dirtyBytesPerSecond,
  }));
  const body = {
    migrationId: outcome.id,
    outcome: outcome.outcome,
    ...(outcome.reason === undefined ? {} : { reason: outcome.reason }),
    source: SOURCE,
    target: TARGET,
    volume: { sizeBytes: o.sizeBytes, seedBytes: x.seedBytes, usedBytesAtEnd: x.seedBytes + verify.log.bytes + verify.pages.pageCount * verify.pages.pageSizeBytes },
    load: {
      recordBytes: o.recordBytes,
      ratePerSecond: o.ratePerSecond,
      writeBytesPerSecond: summary.elapsedMs > 0 ? Math.round((summary.ackedBytes * 1000) / summary.elapsedMs) : 0,
      errors: summary.errors,
    },
    ackedWrites: summary.acked,
    ackedBytes: summary.ackedBytes,
    lostWrites: verify.acks.missing + verify.acks.corrupt,
    downtimeMs: { measured: summary.longestGapMs, predicted: outcome.predictedDowntimeMs ?? null, coordinator: outcome.measuredDowntimeMs ?? null },
    ...(x.prediction === undefined ? {} : { prediction: x.prediction }),
    timeline: outcome.timeline,
    rounds,
    problems: verify.problems.map((p) => `${p.kind}${p.seq === undefined ? "" : ` seq ${p.seq}`}: ${p.detail}`),
    durationMs: Date.now() - x.startedMs,
  };
  return { ...verdictOf(body), ...body };
}

function since(startMs: number): string {
  return formatDuration(Date.now() - startMs);
}
