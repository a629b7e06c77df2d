// Shared by the migration's end-to-end tests (migration-e2e*.test.ts, one pair of clusters per file so that the files
// run side by side): two local clusters brought up through the real CLI (each with its agent registered by name) in a
// private THESEUS_HOME, the demo app deployed per test in its own namespace with a load
// client that follows it, the CLI as a child process (so that a failpoint's crash kills a coordinator, not the test),
// and the checks every test makes: the source as it was, the target as before staging, every ack on a volume.
import { execFile } from "node:child_process";
import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { ExecutionContext, TestFn } from "ava";
import type { KubeObject } from "../app-model/index.js";
import { anySignal, silentLogger } from "../common/index.js";
import type { AgentTarget } from "../coordinator/agents/index.js";
import { loadTlsMaterial } from "../coordinator/certs/index.js";
import { startMigration } from "../coordinator/migration/index.js";
import type { MigrationEvent, MigrationHandle, MigrationSummary } from "../coordinator/migration/index.js";
import { DEMO_APP_NAME, demoCluster, demoVolumeDir, deployDemoApp, waitForAppUrl } from "../coordinator/demo/index.js";
import type { DemoCluster } from "../coordinator/demo/index.js";
import type { TlsMaterial } from "../rpc/index.js";
import { formatVerifyReport, runLoad, verifyVolume } from "../local-clusters/demo-app/index.js";
import type { AckLine, LoadSummary, VerifyReport } from "../local-clusters/demo-app/index.js";
import { downCluster, getCluster } from "../local-clusters/index.js";
import { eventually, privateTheseusHome } from "./local-clusters-support.js";

export const CLI = fileURLToPath(new URL("../coordinator/main.js", import.meta.url));
export const SOURCE_CLASS = "local-path";
export const TARGET_CLASS = "local-path-immediate";

export interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** The real CLI in a child process, with the test's THESEUS_HOME and, when given, THESEUS_FAILPOINTS. */
export function theseus(home: string, args: readonly string[], failpoints?: string): Promise<Run> {
  const env = { ...process.env, THESEUS_HOME: home, ...(failpoints === undefined ? {} : { THESEUS_FAILPOINTS: failpoints }) };
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env, maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : 1, stdout, stderr });
    });
  });
}

export function ok(run: Run, what: string): Run {
  if (run.code !== 0) throw new Error(`${what} exited ${run.code}:\n${run.stderr.slice(-6000)}\n${run.stdout.slice(-4000)}`);
  return run;
}

export interface Clusters {
  readonly home: string;
  readonly tls: TlsMaterial;
  readonly source: DemoCluster;
  readonly target: DemoCluster;
  readonly from: AgentTarget;
  readonly to: AgentTarget;
}

/** `theseus local up` for both (one after the other: two first starts at once only slow each other down). */
export async function upClusters(home: string, sourceName: string, targetName: string): Promise<Clusters> {
  ok(await theseus(home, ["local", "up", sourceName, "--agent", "process"]), `theseus local up ${sourceName}`);
  ok(await theseus(home, ["local", "up", targetName, "--agent", "process"]), `theseus local up ${targetName}`);
  const get = async (name: string): Promise<DemoCluster> => {
    const cluster = await getCluster(name);
    if (cluster?.agentAddress === undefined) throw new Error(`cluster ${name} has no agent`);
    return demoCluster(cluster);
  };
  const source = await get(sourceName);
  const target = await get(targetName);
  const agent = (c: DemoCluster): AgentTarget => ({ name: c.cluster.name, address: c.cluster.agentAddress ?? "", cluster: c.cluster.name });
  // `local up` issues the coordinator "local" when the PKI directory has none.
  const tls = await loadTlsMaterial(join(home, "pki"), { role: "coordinator", name: "local" });
  return { home, tls, source, target, from: agent(source), to: agent(target) };
}

/** The demo app writing in a namespace of the source, its load client following whatever the urls file names. */
export interface RunningApp {
  readonly namespace: string;
  readonly targetNamespace: string;
  readonly urlsFile: string;
  readonly acksFile: string;
  /** Points the load client at the app's pod in this cluster and namespace, as soon as it has an address. */
  follow(where: DemoCluster, namespace: string, signal?: AbortSignal): Promise<string>;
  /** Stops the load client; its summary. */
  stop(): Promise<LoadSummary>;
}

export interface AppOptions {
  readonly sizeBytes?: number;
  readonly writeBytesPerSecond?: number;
  readonly recordBytes?: number;
}

/** Load clients still running (a test that failed before stopping its app): stopped after the file, so it can exit. */
const runningLoads = new Set<AbortController>();

export async function startApp(c: Clusters, dir: string, namespace: string, options: AppOptions = {}): Promise<RunningApp> {
  const url = await deployDemoApp(c.source, { namespace, storageClass: SOURCE_CLASS, sizeBytes: options.sizeBytes ?? 64 * 1024 * 1024 });
  const urlsFile = join(dir, `${namespace}.urls`);
  const acksFile = join(dir, `${namespace}.acks.jsonl`);
  await writeFile(urlsFile, `${url}\n`);
  const recordBytes = options.recordBytes ?? 16 * 1024;
  const stopping = new AbortController();
  runningLoads.add(stopping);
  const load = runLoad({ urlsFile, acksFile, recordBytes, ratePerSecond: (options.writeBytesPerSecond ?? 1_000_000) / recordBytes }, stopping.signal);
  load.catch(() => undefined);
  return {
    namespace,
    targetNamespace: `${namespace}-us`,
    urlsFile,
    acksFile,
    async follow(where, ns, signal) {
      const next = await waitForAppUrl(where, ns, { ready: false, timeoutMs: 180_000, signal: anySignal(signal, stopping.signal) });
      await writeFile(urlsFile, `${next}\n`);
      return next;
    },
    async stop() {
      stopping.abort();
      return load;
    },
  };
}

/** The plan flags of a test's migration: its own namespace, mapped to NAMESPACE-us and the other storage class. */
export function mappingArgs(c: Clusters, app: RunningApp): string[] {
  return ["--from", c.from.name, "--to", c.to.name, "-n", app.namespace, "--to-namespace", app.targetNamespace, "--storage-class", `${SOURCE_CLASS}=${TARGET_CLASS}`];
}

/** Every acknowledged write (or only those acked before a time) checked on the app's volume in a cluster. */
export async function verifyAcks(where: DemoCluster, namespace: string, app: RunningApp, ackedBeforeMs?: number): Promise<VerifyReport> {
  let acksFile = app.acksFile;
  if (ackedBeforeMs !== undefined) {
    const lines = (await readFile(app.acksFile, "utf8")).split("\n").filter((l) => l.trim() !== "");
    const before = lines.filter((l) => (JSON.parse(l) as AckLine).ackedAtMs < ackedBeforeMs);
    acksFile = `${app.acksFile}.before-${ackedBeforeMs}`;
    await writeFile(acksFile, before.map((l) => `${l}\n`).join(""));
  }
  return verifyVolume({ dataDir: await demoVolumeDir(where, namespace), acksFile });
}

/** What "as it was" means for the source: the app's objects' specs, labels and annotations, and its pods ready. */
export async function appObjects(where: DemoCluster, namespace: string): Promise<Record<string, unknown>> {
  const view: Record<string, unknown> = {};
  for (const [apiVersion, kind] of [["apps/v1", "Deployment"], ["v1", "Service"], ["v1", "PersistentVolumeClaim"]] as const) {
    const name = kind === "PersistentVolumeClaim" ? `${DEMO_APP_NAME}-data` : DEMO_APP_NAME;
    const o = await where.objects.get({ apiVersion, kind, namespace, name });
    view[kind] = o === undefined ? null : { labels: o.metadata.labels ?? {}, annotations: stripChurn(o.metadata.annotations ?? {}), spec: o["spec"] };
  }
  return view;
}

function stripChurn(annotations: Readonly<Record<string, string>>): Record<string, string> {
  // The Deployment controller counts revisions; a scale down and up is not a new revision, but be explicit.
  return Object.fromEntries(Object.entries(annotations).filter(([k]) => k !== "deployment.kubernetes.io/revision"));
}

/** Every object in a namespace of a cluster (refs), minus what churns on its own; [] when the namespace is absent. */
export async function namespaceObjects(where: DemoCluster, namespace: string): Promise<string[]> {
  const discovery = await where.objects.discovery();
  const churn = new Set(["Event", "Lease", "EndpointSlice", "Endpoints"]);
  const refs: string[] = [];
  const ns = await where.objects.get({ apiVersion: "v1", kind: "Namespace", namespace: "", name: namespace });
  if (ns !== undefined && (ns["status"] as { phase?: string } | undefined)?.phase !== "Terminating") refs.push(`Namespace/${namespace}`);
  for (const r of discovery.resources.filter((x) => x.namespaced && x.preferred && x.verbs.includes("list") && !churn.has(x.kind))) {
    for (const o of await where.objects.list(r, { namespace })) refs.push(ref(o));
  }
  return refs.sort();
}

const ref = (o: KubeObject): string => `${o.apiVersion}/${o.kind}/${o.metadata.name ?? ""}`;

/** An in-process migration of the app's namespace, with its events collected (the driver never waits on a reader). */
/** The migrations the file's tests started, detached when the file ends. */
const runningMigrations = new Set<AbortController>();

export async function migrate(
  c: Clusters,
  app: RunningApp,
  id: string,
  options: { mode: "move" | "copy"; autoCutover: boolean },
): Promise<{ handle: MigrationHandle; events: MigrationEvent[]; drained: Promise<void> }> {
  const detach = new AbortController();
  runningMigrations.add(detach);
  const handle = await startMigration({
    signal: detach.signal,
    from: c.from,
    to: c.to,
    plan: { namespace: app.namespace, toNamespace: app.targetNamespace, storageClass: [`${SOURCE_CLASS}=${TARGET_CLASS}`] },
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

export async function deploymentReplicas(c: Clusters, where: "source" | "target", namespace: string): Promise<number | undefined> {
  const o = await c[where].objects.get({ apiVersion: "apps/v1", kind: "Deployment", namespace, name: DEMO_APP_NAME });
  return (o?.["spec"] as { replicas?: number } | undefined)?.replicas;
}

export type StatusJson = MigrationSummary & { participants?: { target?: { status?: { volumes?: { rounds?: { round?: number }[] }[] } } } };

export async function migrationStatusOf(c: Clusters, id: string): Promise<StatusJson> {
  return JSON.parse(ok(await theseus(c.home, ["status", id, "-o", "json"]), `theseus status ${id}`).stdout) as StatusJson;
}

export function assertAllAcked(t: ExecutionContext, report: VerifyReport, summary?: LoadSummary): void {
  t.true(report.ok, formatVerifyReport(report));
  t.is(report.acks.missing + report.acks.corrupt, 0);
  if (summary !== undefined) t.is(report.acks.acked, summary.acked, "the verifier read every ack the load client saw");
  t.true(report.acks.acked > 0, "the app acknowledged writes during the test");
}

/** The source's objects as they were and the target's namespace as before staging (it may take a moment to go). */
export async function assertUndone(t: ExecutionContext, c: Clusters, app: RunningApp, before: { source: Record<string, unknown>; target: string[] }): Promise<void> {
  t.deepEqual(await appObjects(c.source, app.namespace), before.source, "the source's objects are as they were");
  await eventually(
    "the target as before staging",
    async () => (JSON.stringify(await namespaceObjects(c.target, app.targetNamespace)) === JSON.stringify(before.target) ? true : undefined),
    120_000,
  );
}

/** Two clusters for a test file: up before its tests, down (and the private home removed) after them. */
export function withClusters(test: TestFn<{ clusters: Clusters }>, sourceName: string, targetName: string): void {
  test.before(async (t) => {
    // Generous: on a machine shared by many clusters a first `local up` alone has taken minutes.
    t.timeout(15 * 60_000);
    const home = privateTheseusHome();
    try {
      t.context.clusters = await upClusters(home, sourceName, targetName);
    } catch (error) {
      for (const name of [sourceName, targetName]) await downCluster(name).catch(() => undefined);
      throw error;
    }
  });
  test.after.always(async (t) => {
    for (const load of runningLoads) load.abort();
    // A test that failed mid-migration leaves its driver retrying agents that are about to go: detached, it lets the
    // worker exit (it kept one alive, idle, long after the file's tests had ended).
    for (const migration of runningMigrations) migration.abort();
    for (const name of [sourceName, targetName]) await downCluster(name).catch(() => undefined);
    const home = (t.context as { clusters?: Clusters }).clusters?.home;
    if (home !== undefined) await rm(home, { recursive: true, force: true });
  });
}
