// The agent's Kubernetes side against two real local clusters, through its RPCs: a real agent per cluster, started
// in-process with a kubeconfig as `--kubeconfig` gives it. The composite app runs on the source; it is discovered,
// planned with app-model's buildPlan, staged into the target under another namespace and storage class, its claims
// synced and activated there, then unstaged, leaving the target as it was. Quiesce and unquiesce round-trip on the
// source per kind, and quiesce returns only when the pods that mount the claims are gone.
import { rm, stat } from "node:fs/promises";
import { join } from "node:path";
import anyTest from "ava";
import type { TestFn } from "ava";
import { resolveAgentOptions, startAgent } from "../agent/index.js";
import type { Agent } from "../agent/index.js";
import {
  ANNOTATION_QUIESCED,
  ANNOTATION_STAGED,
  LABEL_MIGRATION,
  buildPlan,
  planLookups,
  planObjectsToStage,
  podMountsClaim,
  refKey,
  refOf,
} from "../app-model/index.js";
import type { ClaimInfo, ClusterFacts, Inventory, KubeObject, PlanOptions } from "../app-model/index.js";
import { createThrowawayPki } from "../coordinator/index.js";
import type { ThrowawayPki } from "../coordinator/index.js";
import { KubeConfig } from "@kubernetes/client-node";
import { TheseusError } from "../common/index.js";
import { createKubeObjects, createKubeRest, loadKubeConfig } from "../kube/index.js";
import type { KubeObjects } from "../kube/index.js";
import type { LocalCluster } from "../local-clusters/index.js";
import { PROVISIONER_NAME, downCluster, installOpenShiftKinds, upCluster } from "../local-clusters/index.js";
import { AgentService, ConflictPolicy } from "../proto/gen/theseus/v1/agent_pb.js";
import type { ClaimInfo as WireClaim } from "../proto/gen/theseus/v1/agent_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { StageRequestSchema } from "../proto/gen/theseus/v1/agent_pb.js";
import { createRpcClient } from "../rpc/index.js";
import type { RpcClient } from "../rpc/index.js";
import { COMPOSITE_CLAIMS, WIDGET_CRD, applyCompositeApp, compositeApp } from "./fixtures/composite-app.js";
import { eventually, privateTheseusHome, withHint } from "./local-clusters-support.js";

type Client = RpcClient<typeof AgentService.method>;
interface Side {
  cluster: LocalCluster;
  agent: Agent;
  client: Client;
  kube: KubeObjects;
}
interface Context {
  home: string;
  pki: ThrowawayPki;
  source: Side;
  target: Side;
}
const test = anyTest as TestFn<Context>;

const SOURCE = "agent-app-src";
const TARGET = "agent-app-dst";
const NS = "shop";
const TARGET_NS = "shop-us";
const TARGET_CLASS = "fast-local";
const MIGRATION = "m-agent-app-1";
const ready = (pod: KubeObject): boolean =>
  ((pod["status"] as { conditions?: Array<{ type: string; status: string }> } | undefined)?.conditions ?? []).some((c) => c.type === "Ready" && c.status === "True");

test.before(async (t) => {
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
  const side = async (cluster: LocalCluster): Promise<Side> => {
    // The options an agent started with --kubeconfig gets.
    const options = resolveAgentOptions({
      clusterName: cluster.name,
      listen: "127.0.0.1:0",
      tlsCa: "unused",
      tlsCert: "unused",
      tlsKey: "unused",
      stateDir: join(t.context.home, "agent-state", cluster.name),
      kubeconfig: cluster.kubeconfigPath,
    });
    const agent = await startAgent(options, { tls: await t.context.pki.material({ role: "agent", name: cluster.name }) });
    const client = createRpcClient(AgentService, agent.address, {
      tls: await t.context.pki.material({ role: "coordinator", name: "tester" }),
      expectedPeer: { role: "agent", name: cluster.name },
    });
    return { cluster, agent, client, kube: createKubeObjects(createKubeRest(loadKubeConfig(cluster.kubeconfigPath))) };
  };
  t.context.source = await side(source);
  t.context.target = await side(target);
  await installOpenShiftKinds(target.kubeconfigPath);
  // A second WaitForFirstConsumer class on the target, so that staging maps the storage class and needs a holder pod.
  await t.context.target.kube.create({
    apiVersion: "storage.k8s.io/v1",
    kind: "StorageClass",
    metadata: { name: TARGET_CLASS },
    provisioner: PROVISIONER_NAME,
    reclaimPolicy: "Delete",
    volumeBindingMode: "WaitForFirstConsumer",
  });
  await applyCompositeApp(source.kubeconfigPath, NS);
  await waitAppReady(t.context.source.kube, NS);
});

test.after.always(async (t) => {
  for (const side of [t.context.source, t.context.target]) {
    if (side === undefined) continue;
    side.client.close();
    await side.agent.close(1000);
  }
  await Promise.all([downCluster(SOURCE).catch(() => undefined), downCluster(TARGET).catch(() => undefined)]);
  if (t.context.home !== undefined) await rm(t.context.home, { recursive: true, force: true });
});

async function waitAppReady(kube: KubeObjects, namespace: string): Promise<KubeObject[]> {
  const pods = await kube.resourceFor("v1", "Pod");
  return eventually(
    `the app's pods in ${namespace} to be ready`,
    async () => {
      const list = (await kube.list(pods, { namespace })).filter((p) => p.metadata.deletionTimestamp === undefined);
      const names = ["web-", "db-0", "worker-"];
      return names.every((n) => list.some((p) => p.metadata.name?.startsWith(n) === true && ready(p))) ? list : undefined;
    },
    180_000,
  );
}

async function discover(client: Client, app: { namespace: string; labelSelector?: string; helmRelease?: string } = { namespace: NS }): Promise<Inventory> {
  const objects: KubeObject[] = [];
  const claims: ClaimInfo[] = [];
  let inventory: Inventory | undefined;
  for await (const event of client.discover({ app })) {
    if (event.event.case === "objectJson") objects.push(JSON.parse(event.event.value) as KubeObject);
    else if (event.event.case === "claim") claims.push(claimFromWire(event.event.value));
    else if (event.event.case === "done") {
      const done = event.event.value;
      inventory = { cluster: done.clusterName, serverVersion: done.serverVersion, objects, claims, resources: done.resources, warnings: done.warnings };
    }
  }
  if (inventory === undefined) throw new Error("discover ended without its summary");
  return inventory;
}

function claimFromWire(c: WireClaim): ClaimInfo {
  return { ...c, requestedBytes: Number(c.requestedBytes), capacityBytes: Number(c.capacityBytes), usedBytes: Number(c.usedBytes) };
}

async function describe(client: Client, namespace: string, lookups: ReturnType<typeof planLookups>): Promise<ClusterFacts> {
  const facts = await client.describeCluster({ namespace, lookup: lookups });
  return { cluster: facts.clusterName, serverVersion: facts.serverVersion, resources: facts.resources, objects: facts.objectsJson.map((j) => JSON.parse(j) as KubeObject) };
}

/** Every object on the cluster by ref (Events excluded: they come and go by themselves). */
async function snapshot(kube: KubeObjects): Promise<Map<string, KubeObject>> {
  const discovery = await kube.discovery(undefined, true);
  const out = new Map<string, KubeObject>();
  for (const resource of discovery.resources.filter((r) => r.preferred && r.verbs.includes("list") && r.kind !== "Event")) {
    for (const object of await kube.list(resource, {})) out.set(refKey(refOf(object)), object);
  }
  return out;
}

async function podUrl(kube: KubeObjects, namespace: string, prefix: string): Promise<string> {
  const pods = await kube.list(await kube.resourceFor("v1", "Pod"), { namespace });
  const pod = pods.find((p) => p.metadata.name?.startsWith(prefix) === true && p.metadata.deletionTimestamp === undefined && ready(p));
  return `http://${(pod?.["status"] as { podIP?: string } | undefined)?.podIP ?? "no-ready-pod"}:8080`;
}

async function pvDir(kube: KubeObjects, namespace: string, claim: string): Promise<string> {
  const pvc = await kube.get({ apiVersion: "v1", kind: "PersistentVolumeClaim", namespace, name: claim });
  const pv = await kube.get({ apiVersion: "v1", kind: "PersistentVolume", namespace: "", name: (pvc?.["spec"] as { volumeName: string }).volumeName });
  return (pv?.["spec"] as { hostPath: { path: string } }).hostPath.path;
}

const key = (o: { kind: string; metadata: { name?: string } }): string => `${o.kind}/${o.metadata.name ?? ""}`;

test.serial("discover streams every object of the app, its cluster-scoped dependencies and its claims with used bytes", async (t) => {
  const { source } = t.context;
  const inventory = await discover(source.client);
  const found = new Set(inventory.objects.map(key));
  for (const object of compositeApp(NS)) t.true(found.has(key(object)), `${key(object)} discovered`);
  // Left for the target's controllers, but discovered all the same: classification is app-model's.
  for (const prefix of ["ReplicaSet/web-", "Pod/web-", "Pod/db-0", "ControllerRevision/db-", "ReplicationController/worker-1", "ServiceAccount/default", "ConfigMap/kube-root-ca.crt"]) {
    t.true([...found].some((k) => k.startsWith(prefix)), `${prefix}… discovered`);
  }
  for (const crd of [WIDGET_CRD, "routes.route.openshift.io", "deploymentconfigs.apps.openshift.io"]) t.true(found.has(`CustomResourceDefinition/${crd}`), `CRD ${crd}`);
  t.true(found.has("StorageClass/local-path"));
  t.true(found.has(`ClusterRoleBinding/composite-${NS}-nodes`) && found.has(`ClusterRole/composite-${NS}-nodes`));
  const pvs = inventory.objects.filter((o) => o.kind === "PersistentVolume").map((o) => o.metadata.name);
  t.is(pvs.length, 2);
  t.deepEqual(inventory.claims.map((c) => c.name).sort(), [...COMPOSITE_CLAIMS].sort());
  for (const claim of inventory.claims) {
    t.is(claim.access, "direct", claim.reason);
    t.is(claim.volume, `${NS}/${claim.name}`);
    t.is(claim.storageClass, "local-path");
    t.is(claim.requestedBytes, 64 * 2 ** 20);
    t.true(claim.usedBytes > 0, `${claim.name}: the demo app's files occupy space`);
    t.true(pvs.includes(claim.volumeName));
  }
  t.deepEqual(inventory.warnings, []);
  t.is(inventory.serverVersion, "v1.20.2");
  t.true(inventory.resources.some((r) => r.group === "demo.theseus.io" && r.kind === "Widget" && r.namespaced));
  // Listed once, in its current group, although extensions/v1beta1 serves the same Ingress.
  t.deepEqual(inventory.objects.filter((o) => o.kind === "Ingress").map((o) => o.apiVersion), ["networking.k8s.io/v1"]);

  const selected = await discover(source.client, { namespace: NS, labelSelector: "theseus.test/app=composite" });
  t.false(selected.objects.some((o) => o.metadata.name === "kube-root-ca.crt"), "the selector is applied");
  t.true(selected.objects.some((o) => key(o) === "Deployment/web"));
});

test.serial("discover narrowed to a Helm release: the objects it annotates and its release secrets", async (t) => {
  const { source } = t.context;
  const ns = "helm-shop";
  await source.kube.create({ apiVersion: "v1", kind: "Namespace", metadata: { name: ns } });
  const releaseOf = (name: string): Record<string, string> => ({ "meta.helm.sh/release-name": name, "meta.helm.sh/release-namespace": ns });
  await source.kube.create({ apiVersion: "v1", kind: "ConfigMap", metadata: { name: "shop-config", namespace: ns, annotations: releaseOf("shop") }, data: { a: "1" } });
  await source.kube.create({ apiVersion: "v1", kind: "ConfigMap", metadata: { name: "shop-other-config", namespace: ns, annotations: releaseOf("shop-other") }, data: { a: "2" } });
  await source.kube.create({ apiVersion: "v1", kind: "ConfigMap", metadata: { name: "by-hand", namespace: ns }, data: { a: "3" } });
  for (const name of ["sh.helm.release.v1.shop.v1", "sh.helm.release.v1.shop.v2", "sh.helm.release.v1.shop-other.v1"]) {
    await source.kube.create({ apiVersion: "v1", kind: "Secret", type: "helm.sh/release.v1", metadata: { name, namespace: ns, labels: { owner: "helm" } }, data: { release: "e30=" } });
  }
  const inventory = await discover(source.client, { namespace: ns, helmRelease: "shop" });
  t.deepEqual(inventory.objects.map(key).sort(), ["ConfigMap/shop-config", "Secret/sh.helm.release.v1.shop.v1", "Secret/sh.helm.release.v1.shop.v2"]);
  await t.throwsAsync(discover(source.client, { namespace: ns, helmRelease: "shop", labelSelector: "a=b" }), { message: /not both/ });
  await t.throwsAsync(discover(source.client, { namespace: ns, labelSelector: "a in (" }), { instanceOf: TheseusError, message: /label|selector/i });
});

test.serial("quiesce stops every writer per kind and returns when the pods mounting the claims are gone; unquiesce restores exactly that", async (t) => {
  t.timeout(300_000);
  const { source } = t.context;
  const app = { namespace: NS };
  const quiesced = await source.client.quiesce({ migrationId: MIGRATION, app, timeoutSeconds: 120 });
  const changed = quiesced.changed.map((r) => `${r.kind}/${r.name}`).sort();
  t.deepEqual(changed, ["CronJob/report", "Deployment/web", "DeploymentConfig/worker", "StatefulSet/db"]);
  const pods = await source.kube.resourceFor("v1", "Pod");
  const claims = new Set<string>(COMPOSITE_CLAIMS);
  t.deepEqual((await source.kube.list(pods, { namespace: NS })).filter((p) => podMountsClaim(p, claims)).map((p) => p.metadata.name), [], "no pod mounts a claim, not even a terminating one");
  const read = async (apiVersion: string, kind: string, name: string): Promise<KubeObject> => {
    const o = await source.kube.get({ apiVersion, kind, namespace: NS, name });
    if (o === undefined) throw new Error(`${kind}/${name} is gone`);
    return o;
  };
  const spec = (o: KubeObject): Record<string, unknown> => o["spec"] as Record<string, unknown>;
  for (const [apiVersion, kind, name] of [["apps/v1", "Deployment", "web"], ["apps/v1", "StatefulSet", "db"], ["apps.openshift.io/v1", "DeploymentConfig", "worker"]] as const) {
    const o = await read(apiVersion, kind, name);
    t.is(spec(o)["replicas"], 0, `${kind}/${name} scaled to 0`);
    t.regex(o.metadata.annotations?.[ANNOTATION_QUIESCED] ?? "", new RegExp(MIGRATION));
  }
  t.true(spec(await read("batch/v1beta1", "CronJob", "report"))["suspend"]);
  const archive = await read("batch/v1beta1", "CronJob", "archive");
  t.true(spec(archive)["suspend"], "the CronJob the user had suspended stays so");
  t.is(archive.metadata.annotations?.[ANNOTATION_QUIESCED], undefined, "and is not marked: quiesce did not change it");

  const again = await source.client.quiesce({ migrationId: MIGRATION, app, timeoutSeconds: 60 });
  t.deepEqual(again.changed, [], "idempotent: a second quiesce changes nothing");

  const restored = await source.client.unquiesce({ migrationId: MIGRATION, app });
  t.deepEqual(restored.restored.map((r) => `${r.kind}/${r.name}`).sort(), changed);
  for (const [apiVersion, kind, name] of [["apps/v1", "Deployment", "web"], ["apps/v1", "StatefulSet", "db"], ["apps.openshift.io/v1", "DeploymentConfig", "worker"]] as const) {
    const o = await read(apiVersion, kind, name);
    t.is(spec(o)["replicas"], 1, `${kind}/${name} back at 1`);
    t.is(o.metadata.annotations?.[ANNOTATION_QUIESCED], undefined);
  }
  t.false(spec(await read("batch/v1beta1", "CronJob", "report"))["suspend"]);
  t.true(spec(await read("batch/v1beta1", "CronJob", "archive"))["suspend"], "the user's suspension is kept after unquiesce");
  t.deepEqual((await source.client.unquiesce({ migrationId: MIGRATION, app })).restored, [], "unquiesce twice restores nothing more");
  await waitAppReady(source.kube, NS);
});

test.serial("stage, sync, activate and unstage on the target: another namespace and storage class, and the target as it was afterwards", async (t) => {
  t.timeout(600_000);
  const { source, target } = t.context;
  const before = await snapshot(target.kube);
  const inventory = await discover(source.client);
  const options: PlanOptions = {
    sourceNamespace: NS,
    targetNamespace: TARGET_NS,
    storageClasses: new Map([["local-path", TARGET_CLASS]]),
    imageRegistries: new Map(),
    replicas: new Map(),
    routeHosts: new Map(),
    rules: [],
    rewriteServiceDns: true,
    keepNodePorts: false,
    onConflict: "fail",
  };
  const facts = await describe(target.client, TARGET_NS, planLookups(inventory, options));
  t.true(facts.objects.some((o) => o.kind === "StorageClass" && o.metadata.name === TARGET_CLASS));
  t.false(facts.objects.some((o) => o.kind === "Namespace"), "the target namespace does not exist yet");
  t.true(facts.objects.some((o) => o.kind === "CustomResourceDefinition" && o.metadata.name === "routes.route.openshift.io"), "the target's CRDs");
  t.false(facts.objects.some((o) => o.kind === "CustomResourceDefinition" && o.metadata.name === WIDGET_CRD), "and not the app's, which it lacks");
  const plan = buildPlan(inventory, facts, options);
  t.deepEqual(plan.problems.filter((p) => p.severity === "error"), []);
  const objects = planObjectsToStage(plan);

  const stage = async (): Promise<Awaited<ReturnType<Client["stage"]>>> => {
    async function* messages(): AsyncGenerator<MessageInitShape<typeof StageRequestSchema>> {
      yield { item: { case: "header", value: { migrationId: MIGRATION, namespace: TARGET_NS, onConflict: ConflictPolicy.FAIL, timeoutSeconds: 180 } } };
      for (const object of objects) yield { item: { case: "objectJson", value: JSON.stringify(object) } };
    }
    return target.client.stage(messages());
  };
  const staged = await stage();
  t.true(staged.objects.length > 0);
  t.deepEqual([...new Set(staged.objects.map((o) => o.action))], ["created"]);
  t.is(staged.objects[0]?.ref?.kind, "CustomResourceDefinition", "CRDs first");
  t.true(staged.objects.some((o) => o.ref?.kind === "Namespace" && o.ref.name === TARGET_NS));
  t.deepEqual(staged.claims.map((c) => c.volume).sort(), COMPOSITE_CLAIMS.map((c) => `${TARGET_NS}/${c}`).sort());
  for (const claim of staged.claims) {
    t.is(claim.access, "direct");
    t.is(claim.storageClass, TARGET_CLASS);
    const pvc = await target.kube.get({ apiVersion: "v1", kind: "PersistentVolumeClaim", namespace: TARGET_NS, name: claim.name });
    t.is((pvc?.["status"] as { phase?: string } | undefined)?.phase, "Bound");
  }
  const web = await target.kube.get({ apiVersion: "apps/v1", kind: "Deployment", namespace: TARGET_NS, name: "web" });
  t.is((web?.["spec"] as { replicas?: number }).replicas, 0, "workloads are staged at 0 replicas");
  t.is(web?.metadata.labels?.[LABEL_MIGRATION], MIGRATION);
  t.is(web?.metadata.annotations?.[ANNOTATION_STAGED], "created");
  const pods = await target.kube.resourceFor("v1", "Pod");
  await eventually("the holder pod to be gone", async () => ((await target.kube.list(pods, { namespace: TARGET_NS })).length === 0 ? true : undefined));

  const afterStage = await snapshot(target.kube);
  const restaged = await stage();
  t.deepEqual([...new Set(restaged.objects.map((o) => o.action))], ["unchanged"], "a re-run creates nothing");
  t.deepEqual([...(await snapshot(target.kube)).keys()].sort(), [...afterStage.keys()].sort(), "and the target's objects are the same");

  // The claims as sync volumes: a few acknowledged records on the source, quiesce it, copy each claim into its staged
  // twin, bring the source back.
  const sourceWeb = await podUrl(source.kube, NS, "web-");
  for (let i = 0; i < 3; i++) {
    const res = await fetch(`${sourceWeb}/records`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ payload: `r${i}` }) });
    t.is(res.status, 201);
  }
  await source.client.quiesce({ migrationId: MIGRATION, app: { namespace: NS }, timeoutSeconds: 120 });
  for (const claim of COMPOSITE_CLAIMS) {
    const session = await source.client.openSession({ migrationId: MIGRATION, volume: `${NS}/${claim}`, peerCluster: TARGET });
    let done = false;
    for await (const event of target.client.syncVolume({
      migrationId: MIGRATION,
      volume: `${TARGET_NS}/${claim}`,
      sourceAddress: source.agent.address,
      sourceCluster: SOURCE,
      sessionId: session.sessionId,
      token: session.token,
      round: 1,
    })) {
      if (event.event.case === "done") done = true;
    }
    t.true(done, `${claim} synced`);
  }
  await source.client.unquiesce({ migrationId: MIGRATION, app: { namespace: NS } });
  const targetWebDir = await pvDir(target.kube, TARGET_NS, "web-data");
  t.true((await stat(join(targetWebDir, "records.log"))).size > 0, "the records reached the target's volume");

  const activated = await target.client.activate({ migrationId: MIGRATION, namespace: TARGET_NS, waitReady: true, timeoutSeconds: 180 });
  t.true(activated.activated.some((r) => r.kind === "Deployment" && r.name === "web"));
  t.false(activated.activated.some((r) => r.kind === "CronJob" && r.name === "archive"), "the suspended CronJob stays suspended");
  await waitAppReady(target.kube, TARGET_NS);
  const stats = (await (await fetch(`${await podUrl(target.kube, TARGET_NS, "web-")}/stats`)).json()) as { state: string; store?: { records: number } };
  t.is(stats.state, "ready", "the activated app serves on the target");
  t.is(stats.store?.records, 3, "with the records acknowledged on the source");
  const report = await target.kube.get({ apiVersion: "batch/v1beta1", kind: "CronJob", namespace: TARGET_NS, name: "report" });
  t.false((report?.["spec"] as { suspend?: boolean }).suspend, "the CronJob that ran on the source runs on the target");

  const unstaged = await target.client.unstage({ migrationId: MIGRATION, namespace: TARGET_NS });
  t.true(unstaged.removed.some((r) => r.ref?.kind === "Namespace" && r.ref.name === TARGET_NS));
  const after = await snapshot(target.kube);
  t.deepEqual([...after.keys()].sort(), [...before.keys()].sort(), "unstage leaves exactly the objects that were there before");
  t.false([...after.values()].some((o) => o.metadata.labels?.[LABEL_MIGRATION] !== undefined));
  await t.throwsAsync(stat(targetWebDir), undefined, "the staged claim's volume is gone with it");
});

test.serial("stage refuses an object that exists and is not the migration's, before writing anything; adopt labels it and unstage leaves it", async (t) => {
  t.timeout(300_000);
  const { target } = t.context;
  const ns = "conflicts";
  await target.kube.create({ apiVersion: "v1", kind: "Namespace", metadata: { name: ns } });
  await target.kube.create({ apiVersion: "v1", kind: "ConfigMap", metadata: { name: "settings", namespace: ns }, data: { mine: "yes" } });
  const objects: KubeObject[] = [
    { apiVersion: "v1", kind: "ConfigMap", metadata: { name: "fresh", namespace: ns }, data: { a: "1" } },
    { apiVersion: "v1", kind: "ConfigMap", metadata: { name: "settings", namespace: ns }, data: { theirs: "yes" } },
  ];
  const stage = (onConflict: ConflictPolicy): Promise<unknown> =>
    target.client.stage(
      (async function* (): AsyncGenerator<MessageInitShape<typeof StageRequestSchema>> {
        yield { item: { case: "header", value: { migrationId: "m-conflict", namespace: ns, onConflict } } };
        for (const object of objects) yield { item: { case: "objectJson", value: JSON.stringify(object) } };
      })(),
    );
  const error = await t.throwsAsync(stage(ConflictPolicy.FAIL));
  t.regex(error?.message ?? "", /ConfigMap conflicts\/settings/);
  t.is(await target.kube.get({ apiVersion: "v1", kind: "ConfigMap", namespace: ns, name: "fresh" }), undefined, "nothing was created");

  await stage(ConflictPolicy.ADOPT);
  const adopted = await target.kube.get({ apiVersion: "v1", kind: "ConfigMap", namespace: ns, name: "settings" });
  t.deepEqual(adopted?.["data"], { mine: "yes" }, "an adopted object is left as it is");
  t.is(adopted?.metadata.annotations?.[ANNOTATION_STAGED], "adopted");

  await target.client.unstage({ migrationId: "m-conflict", namespace: ns });
  const kept = await target.kube.get({ apiVersion: "v1", kind: "ConfigMap", namespace: ns, name: "settings" });
  t.deepEqual(kept?.["data"], { mine: "yes" });
  t.is(kept?.metadata.labels?.[LABEL_MIGRATION], undefined, "it loses the migration's label");
  t.is(kept?.metadata.annotations?.[ANNOTATION_STAGED], undefined);
  t.is(await target.kube.get({ apiVersion: "v1", kind: "ConfigMap", namespace: ns, name: "fresh" }), undefined, "what staging created is gone");
  t.truthy(await target.kube.get({ apiVersion: "v1", kind: "Namespace", namespace: "", name: ns }), "the namespace it did not create stays");
});


test.serial("API server errors arrive as TheseusErrors that say what to do; an agent without a cluster says how to give it one", async (t) => {
  const { source, pki, home } = t.context;
  const kube = source.kube;
  const notFound = await t.throwsAsync(kube.create({ apiVersion: "v1", kind: "ConfigMap", metadata: { name: "x", namespace: "no-such-namespace" } }), { instanceOf: TheseusError });
  t.is(notFound?.code, "not_found");
  const exists = await t.throwsAsync(kube.create({ apiVersion: "v1", kind: "ConfigMap", metadata: { name: "web-config", namespace: NS } }), { instanceOf: TheseusError });
  t.is(exists?.code, "already_exists");
  t.regex(exists?.message ?? "", /create configmaps shop\/web-config/);
  const invalid = await t.throwsAsync(kube.create({ apiVersion: "v1", kind: "ConfigMap", metadata: { name: "Not_A_Name", namespace: NS } }), { instanceOf: TheseusError });
  t.is(invalid?.code, "invalid_argument");
  t.regex(invalid?.message ?? "", /metadata\.name/);
  const stale = await kube.get({ apiVersion: "v1", kind: "ConfigMap", namespace: NS, name: "web-config" });
  await kube.mergePatch({ apiVersion: "v1", kind: "ConfigMap", namespace: NS, name: "web-config" }, { metadata: { labels: { touched: "1" } } });
  const conflict = await t.throwsAsync(
    kube.mergePatch({ apiVersion: "v1", kind: "ConfigMap", namespace: NS, name: "web-config" }, { metadata: { resourceVersion: stale?.metadata.resourceVersion ?? "", labels: { touched: "2" } } }),
    { instanceOf: TheseusError },
  );
  t.is(conflict?.code, "failed_precondition", "a resourceVersion conflict");
  await kube.mergePatch({ apiVersion: "v1", kind: "ConfigMap", namespace: NS, name: "web-config" }, { metadata: { labels: { touched: null } } });

  // A service account without any RBAC: its token is accepted, its requests forbidden.
  await kube.create({ apiVersion: "v1", kind: "ServiceAccount", metadata: { name: "nobody", namespace: "default" } });
  const token = await eventually("the token of default/nobody", async () => {
    const secrets = await kube.list(await kube.resourceFor("v1", "Secret"), { namespace: "default" });
    const secret = secrets.find((s) => s["type"] === "kubernetes.io/service-account-token" && s.metadata.annotations?.["kubernetes.io/service-account.name"] === "nobody");
    const data = (secret?.["data"] as { token?: string } | undefined)?.token;
    return data === undefined ? undefined : Buffer.from(data, "base64").toString("utf8");
  });
  const withUser = (user: { name: string; token: string }): KubeConfig => {
    const cluster = loadKubeConfig(source.cluster.kubeconfigPath).getCurrentCluster();
    if (cluster === null) throw new Error("no cluster in the kubeconfig");
    const kc = new KubeConfig();
    kc.loadFromOptions({ clusters: [cluster], users: [user], contexts: [{ name: "c", cluster: cluster.name, user: user.name }], currentContext: "c" });
    return kc;
  };
  const nobody = createKubeObjects(createKubeRest(withUser({ name: "nobody", token })));
  const forbidden = await t.throwsAsync(nobody.list(await kube.resourceFor("apps/v1", "Deployment"), { namespace: NS }), { instanceOf: TheseusError });
  t.is(forbidden?.code, "permission_denied");
  t.regex(forbidden?.hint ?? "", /service account needs RBAC for list deployments\.apps in namespace shop/);
  const stranger = createKubeObjects(createKubeRest(withUser({ name: "stranger", token: "not-a-token" })));
  t.is((await t.throwsAsync(stranger.discovery(), { instanceOf: TheseusError }))?.code, "unauthenticated");
  const gone = new KubeConfig();
  gone.loadFromOptions({ clusters: [{ name: "g", server: "https://127.0.0.1:1", skipTLSVerify: false }], users: [{ name: "u", token: "x" }], contexts: [{ name: "g", cluster: "g", user: "u" }], currentContext: "g" });
  const unreachable = await t.throwsAsync(createKubeObjects(createKubeRest(gone)).discovery(), { instanceOf: TheseusError });
  t.is(unreachable?.code, "unavailable");

  const options = resolveAgentOptions({ clusterName: "no-cluster", listen: "127.0.0.1:0", tlsCa: "unused", tlsCert: "unused", tlsKey: "unused", stateDir: join(home, "agent-state", "no-cluster") });
  const agent = await startAgent(options, { tls: await pki.material({ role: "agent", name: "no-cluster" }) });
  const client = createRpcClient(AgentService, agent.address, { tls: await pki.material({ role: "coordinator", name: "tester" }), expectedPeer: { role: "agent", name: "no-cluster" } });
  try {
    const error = await t.throwsAsync(client.describeCluster({ namespace: NS }), { instanceOf: TheseusError });
    t.is(error?.code, "failed_precondition");
    t.regex(error?.hint ?? "", /--kubeconfig/);
    const claim = await t.throwsAsync(client.openSession({ migrationId: MIGRATION, volume: `${NS}/web-data`, peerCluster: TARGET }), { instanceOf: TheseusError });
    t.is(claim?.code, "failed_precondition");
  } finally {
    client.close();
    await agent.close(1000);
  }
});
