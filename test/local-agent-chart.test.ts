// `theseus local up` installs the agent with the Helm chart, as a user would: the agent is a pod under the emulated
// kubelet, registered at its NodePort on the node's address, and that address stays true when the pod is replaced
// (the node daemon's proxy follows the ready pod, whose pod IP changes). `--agent process` switches the same cluster
// back to a process agent and removes the release, so that one cluster never runs two agents.
import { execFile } from "node:child_process";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import anyTest from "ava";
import type { TestFn } from "ava";
import type { KubeObject } from "../app-model/index.js";
import { dialAgent } from "../coordinator/agents/index.js";
import { loadTlsMaterial } from "../coordinator/certs/index.js";
import { createKubeObjects, createKubeRest, loadKubeConfig } from "../kube/index.js";
import type { KubeObjects } from "../kube/index.js";
import { getCluster, listClusters, repoRoot } from "../local-clusters/index.js";
import type { TlsMaterial } from "../rpc/index.js";
import { eventually, privateTheseusHome } from "./local-clusters-support.js";

const run = promisify(execFile);
const CLUSTER = "agent-chart";
const CLI = join(repoRoot, "dist", "coordinator", "main.js");
const SELECTOR = "app.kubernetes.io/instance=theseus-agent,app.kubernetes.io/component=agent";

interface Context {
  home: string;
  objects: KubeObjects;
  tls: TlsMaterial;
  address: string;
}
const test = anyTest.serial as TestFn<Context>;

async function theseus(home: string, ...args: string[]): Promise<string> {
  const { stdout } = await run(process.execPath, [CLI, ...args], { env: { ...process.env, THESEUS_HOME: home }, maxBuffer: 16 << 20 });
  return stdout;
}

async function agentPods(objects: KubeObjects): Promise<KubeObject[]> {
  const pods = await objects.list(await objects.resourceFor("v1", "Pod"), { namespace: "theseus-system", labelSelector: SELECTOR });
  return pods.filter((p) => p.metadata.deletionTimestamp === undefined);
}

function podIp(pod: KubeObject | undefined): string | undefined {
  return (pod?.["status"] as { podIP?: string } | undefined)?.podIP;
}

async function clusterName(address: string, tls: TlsMaterial): Promise<string> {
  const client = dialAgent({ name: CLUSTER, address, cluster: CLUSTER }, tls);
  try {
    return (await client.getInfo({}, { timeoutMs: 10_000 })).clusterName;
  } finally {
    client.close();
  }
}

test.before(async (t) => {
  const home = privateTheseusHome();
  // The CLI's default: the chart.
  const out = await theseus(home, "local", "up", CLUSTER);
  const address = /agent:\s+(\S+) \(registered as agent "agent-chart"\)/.exec(out)?.[1];
  if (address === undefined) throw new Error(`local up did not say where the agent is:\n${out}`);
  const cluster = await getCluster(CLUSTER);
  const objects = createKubeObjects(createKubeRest(loadKubeConfig(cluster?.kubeconfigPath ?? "")));
  const tls = await loadTlsMaterial(join(home, "pki"), { role: "coordinator", name: "local" });
  t.context = { home, objects, tls, address };
});

test.after.always(async (t) => {
  if (t.context.home === undefined) return;
  await theseus(t.context.home, "local", "down", CLUSTER).catch(() => undefined);
  await rm(t.context.home, { recursive: true, force: true });
});

test("the agent runs as the chart's pod and is registered at its NodePort on the node's address", async (t) => {
  const { home, objects, tls, address } = t.context;
  const pods = await agentPods(objects);
  t.is(pods.length, 1);
  const ip = podIp(pods[0]) ?? "";
  const index = /^127\.(\d+)\./.exec(ip)?.[1];
  t.truthy(index, `pod IP ${ip}`);
  // The node's address, not the pod's: 127.<cluster>.0.1 and a port from the NodePort range.
  t.regex(address, new RegExp(`^127\\.${index ?? "x"}\\.0\\.1:3\\d{4}$`));
  const registered = JSON.parse(await theseus(home, "agents", "list", "-o", "json")) as { name: string; address: string }[];
  t.deepEqual(registered.map((a) => [a.name, a.address]), [[CLUSTER, address]]);
  t.is(await clusterName(address, tls), CLUSTER, "mTLS gRPC through the NodePort reaches the agent");
  const listed = (await listClusters()).find((c) => c.name === CLUSTER);
  t.deepEqual(listed?.agent, { address, running: true });
});

test("a replaced agent pod is reached at the same address", async (t) => {
  const { objects, tls, address } = t.context;
  const [before] = await agentPods(objects);
  const oldIp = podIp(before);
  await objects.delete({ apiVersion: "v1", kind: "Pod", namespace: "theseus-system", name: before?.metadata.name ?? "" });
  const replacement = await eventually(
    "a new agent pod, Ready",
    async () => {
      const pods = await agentPods(objects);
      const fresh = pods.find((p) => p.metadata.name !== before?.metadata.name);
      const ready = ((fresh?.["status"] as { conditions?: { type: string; status: string }[] } | undefined)?.conditions ?? []).some((c) => c.type === "Ready" && c.status === "True");
      return ready ? fresh : undefined;
    },
    3 * 60_000,
  );
  t.not(podIp(replacement), oldIp, "the new pod has another pod IP");
  // The old pod may still be terminating for a moment; the proxy picks only ready pods that are not deleting.
  t.is(await eventually("the agent answering at the old address", async () => clusterName(address, tls).catch(() => undefined)), CLUSTER);
});

test("--agent process switches the cluster to a process agent and removes the chart's release", async (t) => {
  const { home, objects, tls } = t.context;
  const out = await theseus(home, "local", "up", CLUSTER, "--agent", "process");
  const address = /agent:\s+(\S+) \(registered/.exec(out)?.[1] ?? "";
  t.regex(address, /^127\.0\.0\.1:\d+$/);
  t.is(await clusterName(address, tls), CLUSTER);
  await eventually("the chart's agent pod gone", async () => ((await agentPods(objects)).length === 0 ? true : undefined), 2 * 60_000);
  t.is(await objects.get({ apiVersion: "apps/v1", kind: "Deployment", namespace: "theseus-system", name: "theseus-agent" }), undefined);
});
