// The "done when", through the real CLI binary with a private THESEUS_HOME: two `theseus local up` (real API
// servers, each with its agent registered by name), the composite app on the first, `theseus plan -o json` showing
// every object and volume, a plan that fails a check exiting 1 with the fix, `theseus stage` into the other cluster
// under another namespace and storage class (every object accepted by the real API server, a re-run changing
// nothing), activation through the agent's Activate RPC making the app serve there, and `theseus unstage` leaving the
// target exactly as it was.
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import anyTest from "ava";
import type { TestFn } from "ava";
import type { KubeObject } from "../app-model/index.js";
import { dialAgent } from "../coordinator/agents/index.js";
import { loadTlsMaterial } from "../coordinator/certs/index.js";
import type { PlanReport, StageResult } from "../coordinator/plan/index.js";
import { createKubeObjects, createKubeRest, loadKubeConfig } from "../kube/index.js";
import type { KubeObjects } from "../kube/index.js";
import { downCluster, getCluster } from "../local-clusters/index.js";
import { COMPOSITE_CLAIMS, applyCompositeApp, compositeApp } from "./fixtures/composite-app.js";
import { eventually, privateTheseusHome } from "./local-clusters-support.js";

interface Context {
  home: string;
  source: KubeObjects;
  target: KubeObjects;
  /** Every object of the target cluster before staging (refs), to compare with after unstaging. */
  targetBefore: string[];
  staged?: StageResult;
}
const test = anyTest as TestFn<Context>;

const CLI = fileURLToPath(new URL("../coordinator/main.js", import.meta.url));
const EU = "e2e-eu";
const US = "e2e-us";
const NS = "shop";
const TARGET_NS = "shop-us";
const MIGRATION = "e2e-1";
const MAPPING = ["--from", EU, "--to", US, "-n", NS, "--to-namespace", TARGET_NS, "--storage-class", "local-path=local-path-immediate"];

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

function theseus(home: string, ...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...process.env, THESEUS_HOME: home }, maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : 1, stdout, stderr });
    });
  });
}

function ok(run: Run, what: string): Run {
  if (run.code !== 0) throw new Error(`${what} exited ${run.code}:\n${run.stderr}\n${run.stdout.slice(0, 4000)}`);
  return run;
}

const refOf = (o: KubeObject): string => `${o.apiVersion}/${o.kind}/${o.metadata.namespace ?? ""}/${o.metadata.name ?? ""}`;

/** Every object of every listable resource in its preferred version, minus what churns on its own (events, leases). */
async function snapshot(objects: KubeObjects): Promise<string[]> {
  const discovery = await objects.discovery(undefined, true);
  const churn = new Set(["Event", "Lease", "EndpointSlice", "Endpoints"]);
  const refs: string[] = [];
  for (const r of discovery.resources.filter((x) => x.preferred && x.verbs.includes("list") && !churn.has(x.kind))) {
    for (const o of await objects.list(r, {})) refs.push(refOf(o));
  }
  return refs.sort();
}

test.before(async (t) => {
  t.timeout(10 * 60_000);
  const home = privateTheseusHome();
  t.context.home = home;
  // One after the other: two control planes compiling their caches at once on 2 cores only slow each other down.
  ok(await theseus(home, "local", "up", EU, "--agent", "process", "--openshift"), `theseus local up ${EU}`);
  ok(await theseus(home, "local", "up", US, "--agent", "process", "--openshift"), `theseus local up ${US}`);
  const kube = async (name: string): Promise<KubeObjects> => {
    const cluster = await getCluster(name);
    if (cluster === undefined) throw new Error(`cluster ${name} vanished`);
    return createKubeObjects(createKubeRest(loadKubeConfig(cluster.kubeconfigPath)));
  };
  t.context.source = await kube(EU);
  t.context.target = await kube(US);
  const euCluster = await getCluster(EU);
  await applyCompositeApp(euCluster?.kubeconfigPath ?? "", NS, { storageClass: "local-path" });
  // Claims bind once their pods are scheduled (WaitForFirstConsumer); the plan reports their sizes then.
  const pvcs = await t.context.source.resourceFor("v1", "PersistentVolumeClaim");
  await eventually(
    "the source's claims to be bound",
    async () => {
      const claims = await t.context.source.list(pvcs, { namespace: NS });
      const bound = claims.filter((c) => (c["status"] as { phase?: string } | undefined)?.phase === "Bound").map((c) => c.metadata.name);
      return COMPOSITE_CLAIMS.every((n) => bound.includes(n)) ? true : undefined;
    },
    180_000,
  );
  t.context.targetBefore = await snapshot(t.context.target);
});

test.after.always(async (t) => {
  if (t.context.home === undefined) return;
  for (const name of [EU, US]) await downCluster(name).catch(() => undefined);
  await rm(t.context.home, { recursive: true, force: true });
});

test.serial("local up registers each cluster's agent by name, local list shows its address, a dead agent is restarted", async (t) => {
  const agents = JSON.parse(ok(await theseus(t.context.home, "agents", "list", "-o", "json"), "agents list").stdout) as { name: string; address: string; cluster: string; local: boolean }[];
  t.deepEqual(agents.map((a) => [a.name, a.cluster, a.local]), [[EU, EU, true], [US, US, true]]);
  const clusters = JSON.parse(ok(await theseus(t.context.home, "local", "list", "--json"), "local list").stdout) as { name: string; status: string; agent?: { address: string; running: boolean } }[];
  for (const agent of agents) {
    const cluster = clusters.find((c) => c.name === agent.name);
    t.deepEqual(cluster?.agent, { address: agent.address, running: true });
    t.is(cluster?.status, "running");
  }
  // A dead agent is restarted by the next up, at the same address, and the registration stays true.
  const statePath = join(t.context.home, "clusters", EU, "state.json");
  const pid = (JSON.parse(await readFile(statePath, "utf8")) as { agent: { process: { pid: number } } }).agent.process.pid;
  process.kill(pid, "SIGKILL");
  await eventually("the killed agent to be gone", async () => (existsSync(`/proc/${pid}`) && !(await readFile(`/proc/${pid}/stat`, "utf8")).includes(") Z ") ? undefined : true));
  const dead = JSON.parse(ok(await theseus(t.context.home, "local", "list", "--json"), "local list").stdout) as typeof clusters;
  t.is(dead.find((c) => c.name === EU)?.status, "degraded");
  ok(await theseus(t.context.home, "local", "up", EU, "--agent", "process"), "second local up");
  const revived = JSON.parse(ok(await theseus(t.context.home, "local", "list", "--json"), "local list").stdout) as typeof clusters;
  t.deepEqual(revived.find((c) => c.name === EU)?.agent, clusters.find((c) => c.name === EU)?.agent);
  const again = JSON.parse(ok(await theseus(t.context.home, "agents", "list", "-o", "json"), "agents list").stdout) as typeof agents;
  t.deepEqual(again, agents);
});

test.serial("plan -o json shows every object of the composite app and both volumes, with the right actions", async (t) => {
  t.timeout(5 * 60_000);
  const run = ok(await theseus(t.context.home, "plan", ...MAPPING, "-o", "json"), "theseus plan");
  const report = JSON.parse(run.stdout) as PlanReport;
  t.deepEqual(report.problems.filter((p) => p.severity === "error"), []);
  t.deepEqual(report.source, { cluster: EU, namespace: NS });
  t.deepEqual(report.target, { cluster: US, namespace: TARGET_NS });
  for (const object of compositeApp(NS)) {
    const found = report.objects.find((o) => o.kind === object.kind && o.name === object.metadata.name && o.source.namespace === (object.metadata.namespace ?? ""));
    t.truthy(found, `${object.kind} ${object.metadata.name ?? ""} is in the plan`);
    t.is(found?.action, "create", `${object.kind} ${object.metadata.name ?? ""} moves`);
    t.is(found?.namespace, object.metadata.namespace === undefined ? "" : TARGET_NS);
  }
  const pods = report.objects.filter((o) => o.kind === "Pod");
  t.true(pods.length >= 3, "the app's pods are listed");
  for (const o of pods) {
    t.is(o.action, "skip");
    t.truthy(o.reason, `pod ${o.name} says why it stays`);
  }
  for (const o of report.objects.filter((x) => x.action === "skip" || x.action === "conflict")) t.truthy(o.reason, `${o.kind} ${o.name} has a reason`);
  for (const claim of COMPOSITE_CLAIMS) {
    const volume = report.volumes.find((v) => v.claim === claim);
    t.truthy(volume, `volume ${claim}`);
    t.is(volume?.storageClass, "local-path");
    t.is(volume?.targetStorageClass, "local-path-immediate");
    t.true((volume?.capacityBytes ?? 0) > 0);
    t.is(typeof volume?.usedBytes, "number");
  }
  const text = ok(await theseus(t.context.home, "plan", ...MAPPING), "theseus plan (text)").stdout;
  t.regex(text, /Will move \(\d+\):/);
  t.regex(text, /local-path -> local-path-immediate/);
  t.regex(text, /Ready to stage/);
});

test.serial("a plan that fails a check (unknown storage class) exits 1 and names the fix", async (t) => {
  const args = ["plan", "--from", EU, "--to", US, "-n", NS, "--to-namespace", TARGET_NS, "--storage-class", "local-path=no-such-class"];
  const json = await theseus(t.context.home, ...args, "-o", "json");
  t.is(json.code, 1, json.stderr);
  const report = JSON.parse(json.stdout) as PlanReport;
  const problem = report.problems.find((p) => p.severity === "error" && p.check === "storage-class");
  t.truthy(problem, JSON.stringify(report.problems));
  t.regex(`${problem?.message ?? ""} ${problem?.hint ?? ""}`, /no-such-class/);
  t.regex(problem?.hint ?? "", /--storage-class/);
  const text = await theseus(t.context.home, ...args);
  t.is(text.code, 1);
  t.regex(text.stdout, /fix: .*--storage-class/);
  // stage refuses the same plan and stages nothing.
  const stage = await theseus(t.context.home, "stage", ...args.slice(1), "--migration-id", "refused-1");
  t.is(stage.code, 1, stage.stderr);
  t.regex(stage.stderr, /nothing was staged/);
  t.deepEqual(await snapshot(t.context.target), t.context.targetBefore);
});

test.serial("stage puts the app on the other cluster, every object accepted by the API server; a re-run changes nothing", async (t) => {
  t.timeout(5 * 60_000);
  const plan = JSON.parse(ok(await theseus(t.context.home, "plan", ...MAPPING, "-o", "json"), "theseus plan").stdout) as PlanReport;
  const run = ok(await theseus(t.context.home, "stage", ...MAPPING, "--migration-id", MIGRATION, "-o", "json"), "theseus stage");
  const staged = JSON.parse(run.stdout) as StageResult;
  t.context.staged = staged;
  t.is(staged.migrationId, MIGRATION);
  for (const o of plan.objects.filter((x) => x.action === "create")) {
    const entry = staged.objects.find((s) => s.ref.kind === o.kind && s.ref.name === o.name && s.ref.namespace === o.namespace);
    t.is(entry?.action, "created", `${o.kind} ${o.namespace}/${o.name}`);
    const stored = await t.context.target.get({ apiVersion: o.apiVersion, kind: o.kind, namespace: o.namespace, name: o.name });
    t.truthy(stored, `${o.kind} ${o.namespace}/${o.name} exists on the target`);
    t.is(stored?.metadata.labels?.["theseus.io/migration"], MIGRATION);
  }
  for (const claim of COMPOSITE_CLAIMS) {
    const c = staged.claims.find((x) => x.name === claim);
    t.is(c?.namespace, TARGET_NS);
    t.is(c?.storageClass, "local-path-immediate");
    t.is(c?.access, "direct");
    t.is(c?.volume, `${TARGET_NS}/${claim}`);
  }
  const again = JSON.parse(ok(await theseus(t.context.home, "stage", ...MAPPING, "--migration-id", MIGRATION, "-o", "json"), "theseus stage again").stdout) as StageResult;
  t.deepEqual(
    again.objects.filter((o) => o.action !== "unchanged"),
    [],
    "a re-run creates nothing",
  );
});

test.serial("activated through the agent, the app serves on the target", async (t) => {
  t.timeout(5 * 60_000);
  const registry = JSON.parse(ok(await theseus(t.context.home, "agents", "list", "-o", "json"), "agents list").stdout) as { name: string; address: string; cluster: string }[];
  const us = registry.find((a) => a.name === US);
  if (us === undefined) throw new Error("no agent us");
  const tls = await loadTlsMaterial(join(t.context.home, "pki"), { role: "coordinator", name: "local" });
  const client = dialAgent(us, tls);
  try {
    const activated = await client.activate({ migrationId: MIGRATION, namespace: TARGET_NS, waitReady: true, timeoutSeconds: 180 });
    t.true(activated.activated.some((r) => r.kind === "Deployment" && r.name === "web"));
  } finally {
    client.close();
  }
  const pods = await t.context.target.resourceFor("v1", "Pod");
  const ip = await eventually(
    "a ready web pod on the target",
    async () => {
      const ready = (await t.context.target.list(pods, { namespace: TARGET_NS, labelSelector: "app=web" })).find((p) => {
        const status = p["status"] as { podIP?: string; conditions?: { type: string; status: string }[] } | undefined;
        return status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") === true;
      });
      return (ready?.["status"] as { podIP?: string } | undefined)?.podIP;
    },
    120_000,
  );
  const response = await fetch(`http://${ip}:8080/healthz`);
  t.is(response.status, 200);
});

test.serial("unstage removes exactly what was staged: the target is as it was", async (t) => {
  t.timeout(5 * 60_000);
  const run = ok(await theseus(t.context.home, "unstage", "--to", US, "-n", TARGET_NS, "--migration-id", MIGRATION, "-o", "json"), "theseus unstage");
  const removed = (JSON.parse(run.stdout) as { removed: unknown[] }).removed;
  t.true(removed.length >= (t.context.staged?.objects.length ?? 1), `removed ${removed.length}`);
  // Pods and PVs go after their owners and claims (garbage collector, provisioner): wait for the cluster to settle.
  const before = t.context.targetBefore;
  const after = await eventually(
    "the target to be as before",
    async () => {
      const now = await snapshot(t.context.target);
      return JSON.stringify(now) === JSON.stringify(before) ? now : undefined;
    },
    120_000,
  ).catch(async () => snapshot(t.context.target));
  t.deepEqual(after, before);
});

test.serial("local down stops the agent and removes only its registration", async (t) => {
  ok(await theseus(t.context.home, "agents", "add", "mine", "127.0.0.1:9"), "agents add");
  ok(await theseus(t.context.home, "local", "down", US), "local down");
  const agents = JSON.parse(ok(await theseus(t.context.home, "agents", "list", "-o", "json"), "agents list").stdout) as { name: string }[];
  t.deepEqual(agents.map((a) => a.name), [EU, "mine"]);
  const unknown = await theseus(t.context.home, "plan", "--from", EU, "--to", US, "-n", NS);
  t.is(unknown.code, 2);
  t.regex(unknown.stderr, /theseus local up e2e-us/);
});
