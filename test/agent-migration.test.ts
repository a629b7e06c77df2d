// The agent's side of the transaction on two real local clusters with real agents (in-process, as `--kubeconfig`
// starts them), through MigrationService only: each test runs the demo app in a namespace of its own in the source
// cluster (so that nothing an earlier test left, a quiesce record say, can decide a later one), stages it into the
// target under another namespace, and drives one migration of it at the RPC level.
import { mkdtemp, rm } from "node:fs/promises";
import { join } from "node:path";
import anyTest from "ava";
import type { TestFn } from "ava";
import { resolveAgentOptions, startAgent } from "../agent/index.js";
import type { Agent } from "../agent/index.js";
import { pullRound } from "../agent/migration/index.js";
import { silentLogger } from "../common/index.js";
import type { KubeObject } from "../app-model/index.js";
import { createThrowawayPki } from "../coordinator/index.js";
import type { ThrowawayPki } from "../coordinator/index.js";
import { createPlan, resolvePlanInput, stagePlan } from "../coordinator/plan/index.js";
import { createKubeObjects, createKubeRest, loadKubeConfig } from "../kube/index.js";
import type { KubeObjects } from "../kube/index.js";
import type { LocalCluster } from "../local-clusters/index.js";
import { STORAGE_CLASS_IMMEDIATE, downCluster, upCluster } from "../local-clusters/index.js";
import { Mode, MigrationService, Role } from "../proto/gen/theseus/v1/migration_pb.js";
import type { ParticipantStatus, VolumePair } from "../proto/gen/theseus/v1/migration_pb.js";
import { createRpcClient } from "../rpc/index.js";
import type { RpcClient, TlsMaterial } from "../rpc/index.js";
import { eventually, privateTheseusHome, withHint } from "./local-clusters-support.js";

type Client = RpcClient<typeof MigrationService.method>;
interface Side {
  cluster: LocalCluster;
  agent: Agent;
  client: Client;
  kube: KubeObjects;
  stateDir: string;
}
interface Context {
  home: string;
  pki: ThrowawayPki;
  coordinatorTls: TlsMaterial;
  source: Side;
  target: Side;
}
const test = anyTest.serial as TestFn<Context>;
const hooks = anyTest as TestFn<Context>;

const SOURCE = "agent-mig-src";
const TARGET = "agent-mig-dst";

hooks.before(async (t) => {
  t.timeout(600_000);
  t.context.home = privateTheseusHome();
  let clusters: LocalCluster[];
  try {
    clusters = await Promise.all([upCluster(SOURCE), upCluster(TARGET)]);
  } catch (error) {
    throw withHint(error);
  }
  const [source, target] = clusters as [LocalCluster, LocalCluster];
  t.context.pki = await createThrowawayPki();
  t.context.coordinatorTls = await t.context.pki.material({ role: "coordinator", name: "tester" });
  t.context.source = await side(t.context, source);
  t.context.target = await side(t.context, target);
});

/** The demo app in its own namespace of the source cluster, ready. */
async function deployApp(context: Context, namespace: string): Promise<void> {
  for (const object of demoApp(namespace)) await context.source.kube.create(object);
  await eventually(`the demo app to be ready in ${namespace}`, async () => ((await readyReplicas(context.source.kube, namespace)) === 1 ? true : undefined), 180_000);
}

hooks.after.always(async (t) => {
  for (const s of [t.context.source, t.context.target]) {
    if (s === undefined) continue;
    s.client.close();
    await s.agent.close(1000);
  }
  await Promise.all([downCluster(SOURCE).catch(() => undefined), downCluster(TARGET).catch(() => undefined)]);
  if (t.context.home !== undefined) await rm(t.context.home, { recursive: true, force: true });
});

async function side(context: Context, cluster: LocalCluster, stateDir = join(context.home, "agent-state", cluster.name)): Promise<Side> {
  const agent = await startMigrationAgent(context, cluster, stateDir);
  const client = createRpcClient(MigrationService, agent.address, { tls: context.coordinatorTls, expectedPeer: { role: "agent", name: cluster.name } });
  return { cluster, agent, client, kube: createKubeObjects(createKubeRest(loadKubeConfig(cluster.kubeconfigPath))), stateDir };
}

async function startMigrationAgent(context: Context, cluster: LocalCluster, stateDir: string): Promise<Agent> {
  const options = resolveAgentOptions({ clusterName: cluster.name, listen: "127.0.0.1:0", tlsCa: "unused", tlsCert: "unused", tlsKey: "unused", stateDir, kubeconfig: cluster.kubeconfigPath });
  return startAgent(options, { tls: await context.pki.material({ role: "agent", name: cluster.name }) });
}

function demoApp(NS: string): KubeObject[] {
  const labels = { app: "ledger" };
  return [
    { apiVersion: "v1", kind: "Namespace", metadata: { name: NS } },
    {
      apiVersion: "v1",
      kind: "PersistentVolumeClaim",
      metadata: { name: "ledger-data", namespace: NS, labels },
      spec: { accessModes: ["ReadWriteOnce"], storageClassName: STORAGE_CLASS_IMMEDIATE, resources: { requests: { storage: "256Mi" } } },
    },
    {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name: "ledger", namespace: NS, labels },
      spec: {
        replicas: 1,
        strategy: { type: "Recreate" },
        selector: { matchLabels: labels },
        template: {
          metadata: { labels },
          spec: {
            terminationGracePeriodSeconds: 5,
            containers: [
              {
                name: "server",
                image: "theseus.local/demo-app:dev",
                args: ["serve", "--port", "8080", "--page-file-bytes", "4194304"],
                env: [{ name: "DATA_DIR", value: "/data" }],
                readinessProbe: { httpGet: { path: "/healthz", port: 8080 }, periodSeconds: 1 },
                volumeMounts: [{ name: "data", mountPath: "/data" }],
              },
            ],
            volumes: [{ name: "data", persistentVolumeClaim: { claimName: "ledger-data" } }],
          },
        },
      },
    },
  ];
}

async function readyReplicas(kube: KubeObjects, namespace: string): Promise<number | undefined> {
  const d = await kube.get({ apiVersion: "apps/v1", kind: "Deployment", namespace, name: "ledger" });
  if (d === undefined) return undefined;
  return (d["status"] as { readyReplicas?: number } | undefined)?.readyReplicas ?? 0;
}

async function specReplicas(kube: KubeObjects, namespace: string): Promise<number | undefined> {
  const d = await kube.get({ apiVersion: "apps/v1", kind: "Deployment", namespace, name: "ledger" });
  return (d?.["spec"] as { replicas?: number } | undefined)?.replicas;
}

/** Stages the demo app into the target under its own namespace, and returns the volume pairs to Begin with. */
async function stage(context: Context, id: string, NS: string, targetNamespace: string): Promise<VolumePair[]> {
  const from = { name: SOURCE, address: context.source.agent.address, cluster: SOURCE };
  const to = { name: TARGET, address: context.target.agent.address, cluster: TARGET };
  const input = await resolvePlanInput({ namespace: NS, toNamespace: targetNamespace, migrationId: id });
  const { plan } = await createPlan({ from, to, app: input.app, options: input.options, tls: context.coordinatorTls });
  const staged = await stagePlan({ to, plan, migrationId: id, onConflict: "fail", tls: context.coordinatorTls });
  const claim = staged.claims[0];
  if (claim === undefined) throw new Error("staging made no claim");
  return [{ sourceVolume: `${NS}/ledger-data`, targetVolume: claim.volume, sessionId: "", token: "", usedBytes: 0n } as VolumePair];
}

async function begin(context: Context, id: string, NS: string, targetNamespace: string, leaseSeconds = 60): Promise<VolumePair[]> {
  await deployApp(context, NS);
  const pairs = await stage(context, id, NS, targetNamespace);
  const source = await context.source.client.begin({ migrationId: id, role: Role.SOURCE, mode: Mode.MOVE, app: { namespace: NS }, peerCluster: TARGET, volumes: pairs, leaseSeconds });
  await context.target.client.begin({
    migrationId: id,
    role: Role.TARGET,
    mode: Mode.MOVE,
    app: { namespace: targetNamespace },
    peerCluster: SOURCE,
    peerAddress: context.source.agent.address,
    volumes: source.volumes,
  });
  return source.volumes;
}

/** Follows the participant's Watch stream until `until` holds. */
async function watchUntil(client: Client, id: string, until: (s: ParticipantStatus) => boolean): Promise<ParticipantStatus> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), 240_000);
  try {
    for await (const status of client.watch({ migrationId: id }, { signal: controller.signal })) if (until(status)) return status;
    throw new Error(`the watch of ${id} ended before the condition held`);
  } finally {
    clearTimeout(timer);
    controller.abort();
  }
}

const roundsOf = (s: ParticipantStatus): number => s.volumes[0]?.rounds.length ?? 0;

test("Begin on both sides pre-syncs on its own; SetRate, Prepare, Quiesce, FinalRound, Commit and Finish end to end, every retry answered as the first", async (t) => {
  t.timeout(480_000);
  const { source, target } = t.context;
  const id = "m-agent-commit";
  const NS = "ledger-a";
  const pairs = await begin(t.context, id, NS, "ledger-b");
  // A retried Prepare, like every call, answers as the first did (checked below once pre-sync has a round).
  // A retried Begin returns the first answer: the same session and token.
  const again = await source.client.begin({ migrationId: id, role: Role.SOURCE, mode: Mode.MOVE, app: { namespace: NS }, peerCluster: TARGET, volumes: pairs });
  t.is(again.volumes[0]?.sessionId, pairs[0]?.sessionId);
  t.is(again.volumes[0]?.token, pairs[0]?.token);

  // Nobody drives the rounds: the target pulls them one after another while we only watch.
  const presynced = await watchUntil(target.client, id, (s) => roundsOf(s) >= 2);
  t.is(presynced.phase, "presyncing");
  t.deepEqual(presynced.volumes[0]?.rounds.map((r) => r.round).slice(0, 2), [0, 1]);

  await target.client.setRate({ migrationId: id, bytesPerSecond: 2_000_000n });
  const record = await target.kube.get({ apiVersion: "v1", kind: "ConfigMap", namespace: "theseus-system", name: `theseus-migration-${id}` });
  t.is((JSON.parse((record?.["data"] as Record<string, string>)["participant.json"] ?? "{}") as { bandwidthBytesPerSecond: number }).bandwidthBytesPerSecond, 2_000_000);
  const before = roundsOf(await target.client.getStatus({ migrationId: id }));
  await watchUntil(target.client, id, (s) => roundsOf(s) > before);

  t.true((await source.client.prepare({ migrationId: id })).yes);
  t.true((await target.client.prepare({ migrationId: id })).yes);
  t.deepEqual(await source.client.prepare({ migrationId: id }), await source.client.prepare({ migrationId: id }), "a retried Prepare gets the same vote");
  t.true((await target.client.prepare({ migrationId: id })).yes, "a retried Prepare gets the same vote");
  const quiesced = await source.client.quiesce({ migrationId: id, timeoutSeconds: 60 });
  t.true(quiesced.changed.some((r) => r.kind === "Deployment" && r.name === "ledger"));
  t.is(await specReplicas(source.kube, NS), 0);
  const requiesced = await source.client.quiesce({ migrationId: id, timeoutSeconds: 60 });
  t.deepEqual(requiesced.changed.map((r) => r.name), quiesced.changed.map((r) => r.name));
  t.is((await source.client.getStatus({ migrationId: id })).phase, "quiesced");
  t.true((await source.client.renew({ migrationId: id, leaseSeconds: 60 })).leaseExpiresAtUnixMs > BigInt(Date.now()));

  const final = await target.client.finalRound({ migrationId: id });
  const round = final.volumes[0]?.rounds[0];
  t.truthy(round);
  t.is(round?.sourceDigest.length, 32);
  t.deepEqual(round?.sourceDigest, round?.targetDigest);
  const finalAgain = await target.client.finalRound({ migrationId: id });
  t.is(finalAgain.volumes[0]?.rounds[0]?.round, round?.round);
  t.is((await target.client.getStatus({ migrationId: id })).phase, "synced");

  const committed = await source.client.commit({ migrationId: id });
  t.is(committed.status?.phase, "committed");
  t.is((await source.client.commit({ migrationId: id })).status?.phase, "committed");
  // Past the commit point the source refuses to abort.
  await t.throwsAsync(source.client.abort({ migrationId: id, reason: "too late" }), { message: /cannot abort in phase committed/ });
  const active = await target.client.commit({ migrationId: id, timeoutSeconds: 120 });
  t.is(active.status?.phase, "committed");
  t.is(await readyReplicas(target.kube, "ledger-b"), 1);
  t.is((await target.client.commit({ migrationId: id })).status?.phase, "committed");
  t.is(await specReplicas(source.kube, NS), 0);

  // The session is closed with the commit: its token opens no transfer any more.
  const pair = pairs[0] as VolumePair;
  const root = await mkdtemp(join(t.context.home, "stale-"));
  await t.throwsAsync(
    pullRound({ root, stateDir: join(root, ".theseus-cache", "sync", "target", "stale"), volume: "stale", sourceAddress: source.agent.address, sourceCluster: SOURCE, sessionId: pair.sessionId, token: pair.token, bandwidthBytesPerSecond: 0, tls: await t.context.pki.material({ role: "agent", name: TARGET }), logger: silentLogger() }, AbortSignal.timeout(30_000)),
    undefined,
    "a transfer on the committed migration's session is refused",
  );

  // Finish retires a move's source: its objects and claim removed, and nothing of the migration left on the source.
  t.is((await source.client.finish({ migrationId: id })).status?.phase, "finished");
  t.is((await source.client.finish({ migrationId: id })).status?.phase, "finished", "a retried Finish answers the same");
  t.is(await source.kube.get({ apiVersion: "apps/v1", kind: "Deployment", namespace: NS, name: "ledger" }), undefined, "the source's Deployment is removed");
  t.is(await source.kube.get({ apiVersion: "v1", kind: "PersistentVolumeClaim", namespace: NS, name: "ledger-data" }), undefined, "the source's claim is removed");
  for (const kind of ["ConfigMap", "Secret"]) {
    t.is(await source.kube.get({ apiVersion: "v1", kind, namespace: "theseus-system", name: `theseus-migration-${id}` }), undefined, `the source's participant ${kind} is removed`);
  }
  t.is((await target.client.finish({ migrationId: id })).status?.phase, "finished");
  const listed = await target.client.list({});
  t.true(listed.participants.some((p) => p.migrationId === id && p.phase === "finished"));
  t.is(await readyReplicas(target.kube, "ledger-b"), 1, "the target runs on");
});

test("Abort before the commit point restores the quiesced source and unstages the target", async (t) => {
  t.timeout(480_000);
  const { source, target } = t.context;
  const id = "m-agent-abort";
  const NS = "ledger-c0";
  await begin(t.context, id, NS, "ledger-c");
  await watchUntil(target.client, id, (s) => roundsOf(s) >= 1);
  t.true((await source.client.prepare({ migrationId: id })).yes);
  t.true((await target.client.prepare({ migrationId: id })).yes);
  await source.client.quiesce({ migrationId: id, timeoutSeconds: 60 });
  t.is(await specReplicas(source.kube, NS), 0);

  const targetAborted = await target.client.abort({ migrationId: id, reason: "the test changed its mind" });
  t.is(targetAborted.status?.phase, "aborted");
  t.is(targetAborted.status?.errorMessage, "the test changed its mind");
  t.is(await target.kube.get({ apiVersion: "v1", kind: "Namespace", namespace: "", name: "ledger-c" }), undefined);
  const sourceAborted = await source.client.abort({ migrationId: id, reason: "the test changed its mind" });
  t.is(sourceAborted.status?.phase, "aborted");
  t.is(await specReplicas(source.kube, NS), 1);
  // Retried, the answer is the same; a Commit now hears "aborted".
  t.is((await source.client.abort({ migrationId: id, reason: "again" })).status?.phase, "aborted");
  t.is((await source.client.commit({ migrationId: id })).status?.phase, "aborted");
  await eventually("the source app to run again", async () => ((await readyReplicas(source.kube, NS)) === 1 ? true : undefined), 120_000);
});

test("a lease expiry restores a quiesced source, and a later Commit is refused as aborted", async (t) => {
  t.timeout(480_000);
  const { source, target } = t.context;
  const id = "m-agent-lease";
  const NS = "ledger-d0";
  await begin(t.context, id, NS, "ledger-d", 3);
  await watchUntil(target.client, id, (s) => roundsOf(s) >= 1);
  t.true((await source.client.prepare({ migrationId: id })).yes);
  await source.client.quiesce({ migrationId: id, timeoutSeconds: 60 });
  // Nobody renews: the source restores itself.
  const restored = await watchUntil(source.client, id, (s) => s.phase === "aborted");
  t.is(restored.errorCode, "deadline_exceeded");
  t.is(await specReplicas(source.kube, NS), 1);
  const commit = await source.client.commit({ migrationId: id });
  t.is(commit.status?.phase, "aborted");
  await t.throwsAsync(source.client.renew({ migrationId: id, leaseSeconds: 30 }), { message: /no lease/ });
  t.is((await target.client.abort({ migrationId: id, reason: "the source's lease expired" })).status?.phase, "aborted");
  await eventually("the source app to run again", async () => ((await readyReplicas(source.kube, NS)) === 1 ? true : undefined), 120_000);
});

test("a target agent restarted during pre-sync resumes its rounds from its persisted record", async (t) => {
  t.timeout(480_000);
  const { source } = t.context;
  const id = "m-agent-restart";
  await begin(t.context, id, "ledger-e0", "ledger-e");
  const seen = roundsOf(await watchUntil(t.context.target.client, id, (s) => roundsOf(s) >= 1));
  // Stop the target agent and start another process's worth of it on the same state and cluster.
  t.context.target.client.close();
  await t.context.target.agent.close(1000);
  const restarted = await side(t.context, t.context.target.cluster, t.context.target.stateDir);
  // A test's t.context is a shallow copy of the hooks' one: the after hook would close the old agent only, and the
  // restarted one would keep the test process alive.
  t.teardown(async () => {
    restarted.client.close();
    await restarted.agent.close(1000);
  });
  t.context.target = restarted;
  const resumed = await watchUntil(t.context.target.client, id, (s) => roundsOf(s) > seen + 1);
  t.is(resumed.phase, "presyncing");
  t.is(resumed.errorCode, "");
  t.is((await t.context.target.client.abort({ migrationId: id, reason: "done" })).status?.phase, "aborted");
  t.is((await source.client.abort({ migrationId: id, reason: "done" })).status?.phase, "aborted");
});
