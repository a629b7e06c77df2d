// The transaction end to end on two local clusters (real API servers, real agents, the demo app writing all the
// while, its load client recording every acknowledgement): a move and a copy commit with every acknowledged write on
// the target; a coordinator crashed at each step before the commit point, then `theseus abort`, leaves the source as
// it was and the target as before staging; a coordinator crashed during pre-sync is picked up by `theseus resume`
// while the agents kept pre-syncing; an agent restarted during pre-sync resumes its rounds; a quiesced source whose
// coordinator died restores itself when its lease runs out; pre-sync that cannot converge is refused with the reason.
import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import anyTest from "ava";
import type { ExecutionContext, TestFn } from "ava";
import { FAILPOINT_CRASH_EXIT_CODE, silentLogger, sleep } from "../common/index.js";
import { waitForAppUrl } from "../coordinator/demo/index.js";
import { startMigration } from "../coordinator/migration/index.js";
import type { MigrationEvent, MigrationHandle, MigrationSummary } from "../coordinator/migration/index.js";
import { formatVerifyReport } from "../local-clusters/demo-app/index.js";
import type { LoadSummary } from "../local-clusters/demo-app/index.js";
import { downCluster } from "../local-clusters/index.js";
import { eventually, privateTheseusHome } from "./local-clusters-support.js";
import { TARGET_CLASS, appObjects, mappingArgs, namespaceObjects, ok, startApp, theseus, upClusters, verifyAcks } from "./migration-e2e-support.js";
import type { Clusters, RunningApp } from "./migration-e2e-support.js";

interface Context {
  home: string;
  clusters: Clusters;
}
const test = anyTest as TestFn<Context>;

const EU = "mig-eu";
const US = "mig-us";

test.before(async (t) => {
  t.timeout(10 * 60_000);
  t.context.home = privateTheseusHome();
  t.context.clusters = await upClusters(t.context.home, EU, US);
});

test.after.always(async (t) => {
  if (t.context.home === undefined) return;
  for (const name of [EU, US]) await downCluster(name).catch(() => undefined);
  await rm(t.context.home, { recursive: true, force: true });
});

/** An in-process migration of the app's namespace, with its events collected (the driver never waits on a reader). */
async function migrate(c: Clusters, app: RunningApp, id: string, options: { mode: "move" | "copy"; autoCutover: boolean }): Promise<{ handle: MigrationHandle; events: MigrationEvent[]; drained: Promise<void> }> {
  const handle = await startMigration({
    from: c.from,
    to: c.to,
    plan: { namespace: app.namespace, toNamespace: app.targetNamespace, storageClass: [`local-path=${TARGET_CLASS}`] },
    mode: options.mode,
    bandwidthBytesPerSecond: 0,
    autoCutover: options.autoCutover,
    // Cut over as soon as the prediction can say anything: the tests prove the transaction, the demo the downtime.
    maxDowntimeMs: 3_600_000,
    leaseMs: 30_000,
    migrationId: id,
    tls: c.tls,
    home: c.home,
    logger: silentLogger(),
  });
  const events: MigrationEvent[] = [];
  const drained = (async () => {
    for await (const event of handle.events) events.push(event);
  })();
  return { handle, events, drained };
}

async function deploymentReplicas(c: Clusters, where: "source" | "target", namespace: string): Promise<number | undefined> {
  const o = await c[where].objects.get({ apiVersion: "apps/v1", kind: "Deployment", namespace, name: "ledger" });
  return (o?.["spec"] as { replicas?: number } | undefined)?.replicas;
}

async function status(c: Clusters, id: string): Promise<MigrationSummary & { participants?: { target?: { status?: { volumes?: { rounds?: unknown[] }[] } } } }> {
  return JSON.parse(ok(await theseus(c.home, ["status", id, "-o", "json"]), `theseus status ${id}`).stdout) as MigrationSummary;
}

function assertAllAcked(t: ExecutionContext<Context>, report: Awaited<ReturnType<typeof verifyAcks>>, summary?: LoadSummary): void {
  t.true(report.ok, formatVerifyReport(report));
  t.is(report.acks.missing + report.acks.corrupt, 0);
  if (summary !== undefined) t.is(report.acks.acked, summary.acked, "the verifier read every ack the load client saw");
  t.true(report.acks.acked > 0, "the app acknowledged writes during the test");
}

test.serial("move: the app and every acknowledged write arrive in the target under its namespace and storage class; the source is scaled to zero", async (t) => {
  t.timeout(10 * 60_000);
  const c = t.context.clusters;
  const app = await startApp(c, c.home, "mv", { sizeBytes: 128 * 1024 * 1024, writeBytesPerSecond: 2_000_000 });
  await sleep(2000);
  const { handle, events, drained } = await migrate(c, app, "e2e-move", { mode: "move", autoCutover: true });
  const followed = app.follow(c.target, app.targetNamespace);
  const outcome = await handle.outcome;
  await drained;
  t.is(outcome.outcome, "committed", outcome.reason);
  const targetUrl = await followed;
  // A few acks from the target prove that the load client followed the app there.
  const acked = async (): Promise<number> => (await readFile(app.acksFile, "utf8")).split("\n").filter((l) => l.includes(targetUrl)).length;
  await eventually("acks from the target", async () => ((await acked()) >= 5 ? true : undefined), 120_000);
  const summary = await app.stop();
  assertAllAcked(t, await verifyAcks(c.target, app.targetNamespace, app), summary);

  t.is(await deploymentReplicas(c, "source", app.namespace), 0, "the source is retired (scaled to zero, kept)");
  t.is(await deploymentReplicas(c, "target", app.targetNamespace), 1);
  const claim = await c.target.objects.get({ apiVersion: "v1", kind: "PersistentVolumeClaim", namespace: app.targetNamespace, name: "ledger-data" });
  t.is((claim?.["spec"] as { storageClassName?: string } | undefined)?.storageClassName, TARGET_CLASS);
  t.true(outcome.rounds.length >= 2, "pre-sync ran rounds before the final one");
  t.not(outcome.measuredDowntimeMs, undefined);
  t.not(outcome.predictedDowntimeMs, undefined);
  const phases = events.flatMap((e) => (e.type === "phase" ? [e.phase] : []));
  t.true(phases.indexOf("quiescing") < phases.indexOf("committed"), phases.join(" -> "));
  t.log(`move: ${summary.acked} acks, client gap ${summary.longestGapMs} ms, coordinator ${outcome.measuredDowntimeMs ?? "-"} ms, predicted ${outcome.predictedDowntimeMs ?? "-"} ms`);
});

test.serial("copy: the target runs a clone with every write acknowledged before the quiesce; the source runs on with all of its own", async (t) => {
  t.timeout(10 * 60_000);
  const c = t.context.clusters;
  const app = await startApp(c, c.home, "cp");
  await sleep(2000);
  const { handle, drained } = await migrate(c, app, "e2e-copy", { mode: "copy", autoCutover: true });
  const outcome = await handle.outcome;
  await drained;
  t.is(outcome.outcome, "committed", outcome.reason);
  // The source was quiesced and unquiesced: its pod is a new one, perhaps at a new address.
  await app.follow(c.source, app.namespace);
  await waitForAppUrl(c.source, app.namespace, { ready: true, timeoutMs: 120_000 });
  await waitForAppUrl(c.target, app.targetNamespace, { ready: true, timeoutMs: 120_000 });
  await sleep(2000);
  const summary = await app.stop();
  t.is(await deploymentReplicas(c, "source", app.namespace), 1, "the source runs on");
  t.is(await deploymentReplicas(c, "target", app.targetNamespace), 1);
  assertAllAcked(t, await verifyAcks(c.source, app.namespace, app), summary);
  const quiesced = outcome.timeline.find((p) => p.phase === "quiescing")?.startedAtMs;
  t.not(quiesced, undefined, "the timeline has the quiesce");
  assertAllAcked(t, await verifyAcks(c.target, app.targetNamespace, app, quiesced));
});

// Each step boundary before the commit decision: the coordinator dies there (as kill -9), then `theseus abort`.
const BEFORE_COMMIT = [
  "coordinator.before-stage",
  "coordinator.before-begin",
  "coordinator.presync.after-round",
  "coordinator.before-prepare",
  "coordinator.before-quiesce",
  "coordinator.before-final-round",
  "coordinator.before-commit-decision",
] as const;

for (const [i, failpoint] of BEFORE_COMMIT.entries()) {
  test.serial(`abort after the coordinator crashed at ${failpoint}: the source as it was, the target as before staging`, async (t) => {
    t.timeout(8 * 60_000);
    const c = t.context.clusters;
    const app = await startApp(c, c.home, `ab${i}`);
    const before = { source: await appObjects(c.source, app.namespace), target: await namespaceObjects(c.target, app.targetNamespace) };
    const id = `e2e-abort-${i}`;
    const run = await theseus(c.home, ["migrate", ...mappingArgs(c, app), "--migration-id", id, "--auto-cutover", "--max-downtime", "1h", "-o", "json"], `${failpoint}=crash`);
    t.is(run.code, FAILPOINT_CRASH_EXIT_CODE, `migrate should have died at ${failpoint}:\n${run.stderr.slice(-3000)}`);
    ok(await theseus(c.home, ["abort", id, "--reason", `test: crashed at ${failpoint}`]), `theseus abort ${id}`);
    await eventually(`migration ${id} aborted`, async () => ((await status(c, id)).phase === "aborted" ? true : undefined), 120_000);

    await app.follow(c.source, app.namespace);
    await waitForAppUrl(c.source, app.namespace, { ready: true, timeoutMs: 120_000 });
    t.deepEqual(await appObjects(c.source, app.namespace), before.source, "the source's objects are as they were");
    await eventually("the target as before staging", async () => (JSON.stringify(await namespaceObjects(c.target, app.targetNamespace)) === JSON.stringify(before.target) ? true : undefined), 120_000);
    await sleep(1000);
    const summary = await app.stop();
    assertAllAcked(t, await verifyAcks(c.source, app.namespace, app), summary);
  });
}

test.serial("a coordinator killed during pre-sync: the agents pre-sync on, and `theseus resume` carries the migration to its commit", async (t) => {
  t.timeout(10 * 60_000);
  const c = t.context.clusters;
  const app = await startApp(c, c.home, "rs");
  const id = "e2e-resume";
  const run = await theseus(c.home, ["migrate", ...mappingArgs(c, app), "--migration-id", id, "--auto-cutover", "--max-downtime", "1h", "-o", "json"], "coordinator.presync.after-round=crash");
  t.is(run.code, FAILPOINT_CRASH_EXIT_CODE, run.stderr.slice(-3000));
  const rounds = async (): Promise<number> => (await status(c, id)).participants?.target?.status?.volumes?.[0]?.rounds?.length ?? 0;
  const first = await rounds();
  await eventually("a round run by the target with no coordinator", async () => ((await rounds()) > first ? true : undefined), 180_000);
  const followed = app.follow(c.target, app.targetNamespace);
  const resumed = ok(await theseus(c.home, ["resume", id, "-o", "json"]), `theseus resume ${id}`);
  t.regex(resumed.stdout, /"outcome":\s*"committed"/);
  t.is((await status(c, id)).phase, "committed");
  await followed;
  await sleep(2000);
  const summary = await app.stop();
  assertAllAcked(t, await verifyAcks(c.target, app.targetNamespace, app), summary);
});

test.serial("an agent restarted during pre-sync resumes its rounds from its persisted record, and the migration commits", async (t) => {
  t.timeout(10 * 60_000);
  const c = t.context.clusters;
  const app = await startApp(c, c.home, "ar");
  const { handle, events, drained } = await migrate(c, app, "e2e-agent-restart", { mode: "move", autoCutover: false });
  const roundsSeen = (): number[] => events.flatMap((e) => (e.type === "round" ? [e.round.round] : []));
  await eventually("the first round", async () => (roundsSeen().length > 0 ? true : undefined), 180_000);
  const statePath = join(c.home, "clusters", US, "state.json");
  const pid = (JSON.parse(await readFile(statePath, "utf8")) as { agent: { process: { pid: number } } }).agent.process.pid;
  process.kill(pid, "SIGKILL");
  const lastBefore = Math.max(...roundsSeen());
  ok(await theseus(c.home, ["local", "up", US]), `theseus local up ${US} (restarts its agent)`);
  await eventually("a round after the agent's restart", async () => (Math.max(...roundsSeen()) > lastBefore ? true : undefined), 180_000);
  const followed = app.follow(c.target, app.targetNamespace);
  await handle.cutover();
  const outcome = await handle.outcome;
  await drained;
  t.is(outcome.outcome, "committed", outcome.reason);
  await followed;
  await sleep(2000);
  const summary = await app.stop();
  assertAllAcked(t, await verifyAcks(c.target, app.targetNamespace, app), summary);
});

test.serial("a quiesced source whose coordinator died restores itself when its lease runs out; resume then reports the abort", async (t) => {
  t.timeout(8 * 60_000);
  const c = t.context.clusters;
  const app = await startApp(c, c.home, "ls");
  const before = { source: await appObjects(c.source, app.namespace), target: await namespaceObjects(c.target, app.targetNamespace) };
  const id = "e2e-lease";
  const run = await theseus(c.home, ["migrate", ...mappingArgs(c, app), "--migration-id", id, "--auto-cutover", "--max-downtime", "1h", "--lease", "5s", "-o", "json"], "coordinator.before-final-round=crash");
  t.is(run.code, FAILPOINT_CRASH_EXIT_CODE, run.stderr.slice(-3000));
  t.is(await deploymentReplicas(c, "source", app.namespace), 0, "the source was quiesced when the coordinator died");
  await eventually("the source to restore itself", async () => ((await deploymentReplicas(c, "source", app.namespace)) === 1 ? true : undefined), 120_000);
  await app.follow(c.source, app.namespace);
  await waitForAppUrl(c.source, app.namespace, { ready: true, timeoutMs: 120_000 });
  const resumed = await theseus(c.home, ["resume", id, "-o", "json"]);
  t.regex(resumed.stdout, /"outcome":\s*"aborted"/, resumed.stderr.slice(-2000));
  t.is((await status(c, id)).phase, "aborted");
  t.deepEqual(await appObjects(c.source, app.namespace), before.source);
  await eventually("the target as before staging", async () => (JSON.stringify(await namespaceObjects(c.target, app.targetNamespace)) === JSON.stringify(before.target) ? true : undefined), 120_000);
  const summary = await app.stop();
  assertAllAcked(t, await verifyAcks(c.source, app.namespace, app), summary);
});

test.serial("a cutover that cannot converge (the app writes faster than the bandwidth allows) is refused with the reason, and the source runs on", async (t) => {
  t.timeout(8 * 60_000);
  const c = t.context.clusters;
  const app = await startApp(c, c.home, "nc", { writeBytesPerSecond: 3_000_000, recordBytes: 64 * 1024 });
  const before = { source: await appObjects(c.source, app.namespace), target: await namespaceObjects(c.target, app.targetNamespace) };
  const id = "e2e-diverging";
  const run = await theseus(c.home, ["migrate", ...mappingArgs(c, app), "--migration-id", id, "--auto-cutover", "--bandwidth", "1MiB/s"]);
  t.is(run.code, 1, run.stderr.slice(-3000));
  t.regex(`${run.stdout}\n${run.stderr}`, /cannot converge/);
  t.regex(`${run.stdout}\n${run.stderr}`, /bandwidth/, "it says what would help");
  t.is((await status(c, id)).phase, "aborted");
  t.deepEqual(await appObjects(c.source, app.namespace), before.source);
  await eventually("the target as before staging", async () => (JSON.stringify(await namespaceObjects(c.target, app.targetNamespace)) === JSON.stringify(before.target) ? true : undefined), 120_000);
  const summary = await app.stop();
  assertAllAcked(t, await verifyAcks(c.source, app.namespace, app), summary);
});
