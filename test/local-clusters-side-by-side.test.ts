// Two local clusters at once must be as independent as two real ones: own ports, CAs, etcd and service CIDRs, so
// that objects, credentials and clusterIPs from one are meaningless in the other; stopping one leaves the other up.
import { existsSync } from "node:fs";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import type { Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import anyTest from "ava";
import type { TestFn } from "ava";
import { CoreV1Api, KubeConfig } from "@kubernetes/client-node";
import type { LocalCluster } from "../local-clusters/index.js";
import { clusterDir, clusterPort, downCluster, listClusters, portIsFree, upCluster } from "../local-clusters/index.js";
import { loadKubeConfig } from "../kube/index.js";
import { eventually, privateTheseusHome, withHint } from "./local-clusters-support.js";

interface Context {
  home: string;
  a: LocalCluster;
  b: LocalCluster;
  /** The etcd peer, API server and scheduler ports held while a started: a's own among them, whatever its index. */
  held: Set<number>;
}
const test = anyTest as TestFn<Context>;

test.before(async (t) => {
  t.context.home = privateTheseusHome();
  try {
    // One after the other: each start-up alone keeps 2 cores busy. a starts with its own etcd peer and API server ports
    // taken, as a CI run once had etcd's: it must come up on others.
    const { servers, releaseDecoy } = await claimAndHoldPorts(t.context.home, [1, 2, 4]);
    t.context.held = new Set(servers.map((h) => (h.address() as { port: number }).port));
    try {
      t.context.a = await upCluster("lc-side-a");
    } finally {
      await Promise.all(servers.map((h) => new Promise((resolve) => h.close(resolve))));
      await releaseDecoy();
    }
    t.context.b = await upCluster("lc-side-b", { nodes: 2 });
  } catch (error) {
    throw withHint(error);
  }
});

test.after.always(async (t) => {
  await downCluster("lc-side-a").catch(() => undefined);
  await downCluster("lc-side-b").catch(() => undefined);
  if (t.context.home !== undefined) await rm(t.context.home, { recursive: true, force: true });
});

/**
 * Takes two indexes no cluster claims, as a cluster left running without its directory and a squatter on a's own
 * ports would: the first is claimed for a directory that has no cluster state (as a cluster being created has) and
 * its etcd client port is held, so a must pass it by; the second is claimed for a's directory, so a takes it, and
 * slots SLOTS of it are held. Both are claimed in the machine-wide directory cluster.ts keeps, so clusters that other
 * test files start meanwhile never take these indexes and never meet the held ports (they once did, and one's etcd
 * died on a port held here). Returns the servers and a release that removes the decoy's claim.
 */
async function claimAndHoldPorts(home: string, slots: readonly number[]): Promise<{ servers: Server[]; releaseDecoy: () => Promise<void> }> {
  const claims = join(tmpdir(), "theseus-cluster-indexes");
  await mkdir(claims, { recursive: true });
  const decoyDir = join(home, "decoy-cluster");
  await mkdir(decoyDir, { recursive: true });
  // Both directories exist before their claims: a claim naming a missing directory is stale, and would be taken over.
  await mkdir(clusterDir("lc-side-a"), { recursive: true });
  const holders = [decoyDir, clusterDir("lc-side-a")];
  const taken: number[] = [];
  for (let index = 1; index <= 254 && taken.length < holders.length; index++) {
    // As claimIndex does: an index whose etcd client port is held is passed by, a claim is live while the directory it
    // names exists, and a stale one is taken over (or a would take it, below the indexes claimed here).
    if (!(await portIsFree(clusterPort(index, 0)))) continue;
    const claim = join(claims, String(index));
    const holder = await readFile(claim, "utf8").catch(() => undefined);
    if (holder !== undefined && existsSync(holder)) continue;
    if (holder !== undefined) await rm(claim, { force: true });
    // The exclusive create is what makes the claim ours: another process may be claiming the same index now.
    const claimed = await writeFile(claim, holders[taken.length] ?? "", { flag: "wx" }).then(() => true, () => false);
    if (claimed) taken.push(index);
  }
  const [decoy, own] = taken;
  if (decoy === undefined || own === undefined) throw new Error(`no two free cluster indexes in ${claims}`);
  const servers: Server[] = [];
  for (const port of [clusterPort(decoy, 0), ...slots.map((slot) => clusterPort(own, slot))]) {
    // Connections are dropped at once: a held port answers nothing, and its server closes without waiting for them.
    const server = createServer((socket) => socket.destroy());
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, "127.0.0.1", () => resolve());
    });
    servers.push(server);
  }
  const releaseDecoy = async (): Promise<void> => {
    const claim = join(claims, String(decoy));
    if ((await readFile(claim, "utf8").catch(() => "")) === decoyDir) await rm(claim, { force: true });
  };
  return { servers, releaseDecoy };
}

const core = (c: LocalCluster): CoreV1Api => loadKubeConfig(c.kubeconfigPath).makeApiClient(CoreV1Api);

test.serial("two clusters run side by side with their own ports, nodes and service CIDRs, and do not see each other", async (t) => {
  const { a, b } = t.context;
  t.not(a.apiServerUrl, b.apiServerUrl);
  t.not(a.serviceCidr, b.serviceCidr);
  t.not(a.podIpPrefix, b.podIpPrefix);
  t.deepEqual((await core(a).listNode()).items.map((n) => n.metadata?.name), ["lc-side-a-node-1"]);
  t.deepEqual((await core(b).listNode()).items.map((n) => n.metadata?.name).sort(), ["lc-side-b-node-1", "lc-side-b-node-2"]);

  await core(a).createNamespace({ body: { metadata: { name: "only-in-a" } } });
  await t.throwsAsync(core(b).readNamespace({ name: "only-in-a" }));

  const listed = await listClusters();
  t.deepEqual(listed.map((c) => [c.name, c.status]), [["lc-side-a", "running"], ["lc-side-b", "running"]]);
});

test.serial("a cluster whose own ports are taken when it starts comes up on others (its kubeconfig following)", async (t) => {
  const { a, held } = t.context;
  const state = JSON.parse(await readFile(join(a.dataDir, "state.json"), "utf8")) as {
    index: number;
    ports: { etcdPeer: number; apiServer: number; scheduler: number };
  };
  t.false(held.has(clusterPort(state.index, 0)), "an index whose etcd client port was held (a cluster left running) was passed by");
  t.true([1, 2, 4].every((slot) => held.has(clusterPort(state.index, slot))), "a's own ports were held");
  t.false(held.has(state.ports.etcdPeer), `etcd's peer port ${state.ports.etcdPeer} is not a held one`);
  t.false(held.has(state.ports.apiServer), `the API server's port ${state.ports.apiServer} is not a held one`);
  t.false(held.has(state.ports.scheduler), `the scheduler's port ${state.ports.scheduler} is not a held one`);
  t.is(a.apiServerUrl, `https://127.0.0.1:${state.ports.apiServer}`, "the kubeconfig names the port the API server got");
  const etcdLog = await readFile(join(a.dataDir, "logs", "etcd.log"), "utf8");
  t.regex(etcdLog, new RegExp(`127\\.0\\.0\\.1:${clusterPort(state.index, 1)}: bind: address already in use`));
  t.is(etcdLog.split("starting etcd").length - 1, 2, "etcd was started twice: on its own ports, then on others");
  const schedulerLog = await readFile(join(a.dataDir, "logs", "kube-scheduler.log"), "utf8");
  t.is(schedulerLog.split("starting kube-scheduler").length - 1, 2, "so was the scheduler (its readiness is its /healthz)");
  t.is((await core(a).listNode()).items.length, 1, "and the cluster answers");
});

test.serial("a clusterIP copied from the other cluster is rejected, as it would be between real clusters", async (t) => {
  const { a, b } = t.context;
  const svc = await core(a).createNamespacedService({
    namespace: "default",
    body: { metadata: { name: "web" }, spec: { selector: { app: "web" }, ports: [{ port: 80 }] } },
  });
  const ip = svc.spec?.clusterIP ?? "";
  t.true(ip.startsWith(a.serviceCidr.split(".").slice(0, 2).join(".")), `${ip} is in ${a.serviceCidr}`);
  const error = await t.throwsAsync(
    core(b).createNamespacedService({
      namespace: "default",
      body: { metadata: { name: "web" }, spec: { clusterIP: ip, selector: { app: "web" }, ports: [{ port: 80 }] } },
    }),
  );
  t.regex(JSON.stringify((error as { body?: unknown }).body ?? error?.message ?? ""), /not within the service CIDR|provided IP is not in the valid range/);
});

test.serial("one cluster's credentials are not accepted by the other (separate CAs)", async (t) => {
  const { a, b } = t.context;
  const ka = loadKubeConfig(a.kubeconfigPath);
  const kb = loadKubeConfig(b.kubeconfigPath);
  // b's server and CA, a's admin client certificate: b's API server does not trust a's CA.
  const crossed = new KubeConfig();
  crossed.loadFromOptions({ clusters: kb.clusters, users: ka.users, contexts: ka.contexts.map((c) => ({ ...c, cluster: kb.clusters[0]?.name ?? "" })), currentContext: ka.currentContext });
  const error = await t.throwsAsync(crossed.makeApiClient(CoreV1Api).listNode(), { any: true });
  t.is((error as { code?: number }).code, 401);
  // And a's CA does not verify b's serving certificate.
  const wrongCa = new KubeConfig();
  wrongCa.loadFromOptions({ clusters: ka.clusters.map((c) => ({ ...c, server: b.apiServerUrl })), users: kb.users, contexts: kb.contexts.map((c) => ({ ...c, cluster: ka.clusters[0]?.name ?? "" })), currentContext: kb.currentContext });
  const tlsError = await t.throwsAsync(wrongCa.makeApiClient(CoreV1Api).listNode(), { any: true });
  t.regex(String((tlsError as { message?: string }).message), /certificate/);
});

test.serial("up restarts the components of a running cluster that died, and the cluster is whole again", async (t) => {
  const { b } = t.context;
  const state = JSON.parse(await readFile(join(b.dataDir, "state.json"), "utf8")) as {
    components: Record<string, { process: { pid: number } | null }>;
  };
  for (const c of ["kube-scheduler", "node-daemon"]) {
    const pid = state.components[c]?.process?.pid;
    // Never kill(-1): as root that signals every process on the machine.
    if (pid === undefined || pid <= 0) throw new Error(`state.json has no pid for ${c}`);
    process.kill(pid, "SIGKILL");
  }
  const degraded = await eventually("list to notice", async () => {
    const s = (await listClusters()).find((c) => c.name === b.name);
    return s?.status === "degraded" ? s : undefined;
  });
  t.false(degraded.components["kube-scheduler"]);
  t.true(degraded.components["kube-apiserver"]);
  const again = await upCluster(b.name);
  t.is(again.apiServerUrl, b.apiServerUrl, "same cluster, same API server");
  t.is((await listClusters()).find((c) => c.name === b.name)?.status, "running");
});

test.serial("stopping one cluster leaves the other running and removes its state", async (t) => {
  const { a, b } = t.context;
  t.true(await downCluster(a.name));
  t.false(existsSync(a.dataDir));
  t.is((await core(b).listNode()).items.length, 2);
  t.deepEqual((await listClusters()).map((c) => c.name), ["lc-side-b"]);
  t.false(await downCluster(a.name), "a second down reports that there was nothing to stop");
});
