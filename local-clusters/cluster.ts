// `up`, `down` and `list` for local clusters: etcd, kube-apiserver, kube-controller-manager and kube-scheduler on
// 127.0.0.1 (ports of the cluster's own index, recorded), plus one node daemon that emulates the kubelet of every node
// and runs the local-path provisioner and the DeploymentConfig controller. All of them are detached, so the cluster
// keeps running after the CLI exits; state.json records how to restart or stop each of them.
import { execFile } from "node:child_process";
import { request } from "node:https";
import type { RequestOptions } from "node:https";
import { mkdir, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { CoreV1Api, StorageV1Api } from "@kubernetes/client-node";
import { stringify } from "yaml";
import type { Logger } from "../common/index.js";
import { TheseusError, silentLogger, sleep, throwIfAborted } from "../common/index.js";
import { createIfAbsent, loadKubeConfig } from "../kube/index.js";
import { clusterDir, clustersRoot, controlPlaneBinaries, repoRoot, validateClusterName } from "./paths.js";
import { generatePki, pkiFiles } from "./pki.js";
import type { PkiFiles } from "./pki.js";
import { clusterPort, freePort, isAlive, portIsFree, spawnDetached, stopProcess } from "./processes.js";
import type { ProcessRecord } from "./processes.js";
import { COMPONENT_ORDER, readState, writeState } from "./state.js";
import type { ClusterState, ComponentName, ComponentState } from "./state.js";
import { storageClassManifests } from "./provisioner.js";
import { agentAddress, agentProcess, agentRunning, ensureAgent } from "./agent.js";
import type { LocalAgentOptions } from "./agent.js";

export interface LocalCluster {
  readonly name: string;
  readonly kubeconfigPath: string;
  readonly apiServerUrl: string;
  /** The cluster's state directory: PKI, etcd data, logs, PV directories, pod directories. */
  readonly dataDir: string;
  readonly serviceCidr: string;
  readonly podIpPrefix: string;
  readonly nodes: readonly string[];
  /** Directory under which the provisioner creates one directory per PV. */
  readonly pvDir: string;
  /** HOST:PORT of the cluster's Theseus agent, once a `local up` started one. */
  readonly agentAddress?: string;
}

export interface UpOptions {
  /** Number of emulated nodes for a new cluster (default 1); ignored when the cluster exists. */
  readonly nodes?: number;
  readonly signal?: AbortSignal;
  readonly logger?: Logger;
  /** How long to wait for the control plane and the nodes (default 180 s: first starts on 2 busy cores are slow). */
  readonly timeoutMs?: number;
  /** Also run (or restart) the cluster's Theseus agent, with these certificates. */
  readonly agent?: LocalAgentOptions;
}

export type ClusterStatus = "running" | "degraded" | "stopped";

export interface ClusterSummary extends LocalCluster {
  readonly status: ClusterStatus;
  readonly components: Readonly<Record<ComponentName, boolean>>;
  readonly agent?: { readonly address: string; readonly running: boolean };
  readonly createdAt: string;
}

const DEFAULT_TIMEOUT_MS = 180_000;
const execFileAsync = promisify(execFile);

function toLocalCluster(state: ClusterState, dir: string): LocalCluster {
  return {
    name: state.name,
    kubeconfigPath: state.kubeconfigPath,
    apiServerUrl: state.apiServerUrl,
    dataDir: dir,
    serviceCidr: state.serviceCidr,
    podIpPrefix: state.podIpPrefix,
    nodes: state.nodes,
    pvDir: join(dir, "pv"),
    ...(state.agent === undefined ? {} : { agentAddress: agentAddress(state.agent) }),
  };
}

/** Starts cluster NAME, or reuses it when it is already running (restarting any component that died). */
export async function upCluster(name: string, options: UpOptions = {}): Promise<LocalCluster> {
  validateClusterName(name);
  const logger = (options.logger ?? silentLogger()).child({ component: "local-clusters", cluster: name });
  const nodes = options.nodes ?? 1;
  if (!Number.isInteger(nodes) || nodes < 1 || nodes > 20) {
    throw new TheseusError("invalid_argument", `--nodes must be an integer from 1 to 20, got ${nodes}`);
  }
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  controlPlaneBinaries();
  const dir = clusterDir(name);
  const existing = await readState(dir);
  if (existing !== undefined) {
    logger.info("cluster exists; checking its components");
    let state = existing;
    for (const component of COMPONENT_ORDER) {
      const current = state.components[component];
      if (current.process !== null && isAlive(current.process)) continue;
      logger.warn({ process: component }, "component not running; restarting it");
      state = await startComponent(state, dir, component);
      await waitComponentReady(state, dir, component, timeoutMs, options.signal);
    }
    await waitClusterReady(state, dir, timeoutMs, options.signal);
    if (options.agent !== undefined) state = await ensureAgent(state, dir, options.agent, timeoutMs, options.signal);
    return toLocalCluster(state, dir);
  }

  let state = await createState(name, dir, nodes);
  try {
    for (const component of COMPONENT_ORDER) {
      for (let attempt = 1; ; attempt++) {
        throwIfAborted(options.signal);
        logger.info({ process: component }, "starting");
        state = await startComponent(state, dir, component);
        try {
          await waitComponentReady(state, dir, component, timeoutMs, options.signal);
          break;
        } catch (error) {
          const port = await portTakenAtStart(state, component);
          if (port === undefined || attempt === PORT_ATTEMPTS) throw error;
          logger.warn({ process: component, port, holder: await portHolder(port) }, "its port was taken before it bound it; starting it on another");
          state = await withNewPorts(state, dir, component);
        }
      }
      if (component === "kube-apiserver") await bootstrap(state);
    }
    await waitClusterReady(state, dir, timeoutMs, options.signal);
  } catch (error) {
    // A half-started cluster is worse than none: stop what runs, but keep the logs for the error message.
    const detail = await failureDetail(state, dir);
    await stopAll(state, dir);
    await rm(join(dir, "etcd"), { recursive: true, force: true });
    await rm(join(dir, "state.json"), { force: true });
    const e = TheseusError.from(error, "unavailable");
    throw new TheseusError(e.code, `local cluster ${name} did not come up: ${e.message}${detail}`, {
      cause: error,
      hint: e.hint ?? `read the logs in ${join(dir, "logs")}, then retry: theseus local up ${name}`,
    });
  }
  logger.info({ apiServerUrl: state.apiServerUrl, kubeconfig: state.kubeconfigPath }, "cluster is up");
  // Outside the clean-up above: a cluster whose agent failed is still a good cluster, and the next up retries the agent.
  if (options.agent !== undefined) state = await ensureAgent(state, dir, options.agent, timeoutMs, options.signal);
  return toLocalCluster(state, dir);
}

async function usedIndexes(): Promise<Set<number>> {
  const used = new Set<number>();
  let names: string[] = [];
  try {
    names = await readdir(clustersRoot());
  } catch {
    return used;
  }
  for (const n of names) {
    const s = await readState(join(clustersRoot(), n)).catch(() => undefined);
    if (s !== undefined) used.add(s.index);
  }
  return used;
}

// The index picks the cluster's pod IPs (127.<index>.x.y) and service range, which are machine-wide: two clusters under
// different THESEUS_HOMEs (two test files, two developers) must never share one, or their pods collide on the same
// address. So an index is claimed in a machine-wide directory by an exclusive create naming the cluster's directory;
// a claim whose cluster directory is gone (`local down`, a deleted temp home) is stale and taken over.
const INDEX_CLAIMS = join(tmpdir(), "theseus-cluster-indexes");

async function claimIndex(dir: string): Promise<number> {
  const used = await usedIndexes();
  await mkdir(INDEX_CLAIMS, { recursive: true });
  for (let index = 1; index <= 254; index++) {
    if (used.has(index)) continue;
    // A cluster whose directory went without `local down` (a test's temp home removed while its processes lived on)
    // leaves a stale claim and a control plane still on the index's ports and pod addresses: an index whose etcd
    // client port is held is passed by.
    if (!(await portIsFree(clusterPort(index, 0)))) continue;
    const claim = join(INDEX_CLAIMS, String(index));
    try {
      await writeFile(claim, dir, { flag: "wx" });
      return index;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    }
    const holder = await readFile(claim, "utf8").catch(() => "");
    if (holder === dir) return index;
    const holderState = holder === "" ? undefined : await readState(holder).catch(() => undefined);
    if (holderState?.index === index) continue;
    // A cluster being created has its directory but no state yet: still its claim (two test files starting at once
    // took each other's claims here, and their pods shared addresses).
    if (holder !== "" && holderState === undefined && (await stat(holder).then(() => true, () => false))) continue;
    // Stale: take it over. A racing taker may win; then the exclusive create below fails and we move on.
    await rm(claim, { force: true });
    try {
      await writeFile(claim, dir, { flag: "wx" });
      return index;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    }
  }
  throw new TheseusError("resource_exhausted", "254 local clusters exist on this machine already", {
    hint: `remove some with theseus local down NAME (claims are in ${INDEX_CLAIMS})`,
  });
}

async function createState(name: string, dir: string, nodeCount: number): Promise<ClusterState> {
  // The directory first: it is what tells another process that the claim below is live while the state is written.
  await mkdir(dir, { recursive: true });
  const index = await claimIndex(dir);
  for (const sub of ["logs", "pki", "etcd", "pv", "pods"]) await mkdir(join(dir, sub), { recursive: true });
  const serviceCidr = `10.${index}.0.0/16`;
  const serviceIp = `10.${index}.0.1`;
  const files = pkiFiles(join(dir, "pki"));
  await generatePki(name, serviceIp, files);
  const ports = {
    etcdClient: clusterPort(index, 0),
    etcdPeer: clusterPort(index, 1),
    apiServer: clusterPort(index, 2),
    controllerManager: clusterPort(index, 3),
    scheduler: clusterPort(index, 4),
  };
  const apiServerUrl = `https://127.0.0.1:${ports.apiServer}`;
  const kubeconfigPath = join(dir, "kubeconfig");
  await writeKubeconfig(kubeconfigPath, name, apiServerUrl, files);
  const nodes = Array.from({ length: nodeCount }, (_, i) => `${name}-node-${i + 1}`);
  const argv = componentArgv(dir, files, ports, serviceCidr, kubeconfigPath);
  const components = Object.fromEntries(
    COMPONENT_ORDER.map((c) => [c, { argv: argv[c], logFile: join(dir, "logs", `${c}.log`), process: null } satisfies ComponentState]),
  ) as unknown as Record<ComponentName, ComponentState>;
  const state: ClusterState = {
    version: 1,
    name,
    index,
    createdAt: new Date().toISOString(),
    ports,
    serviceCidr,
    podIpPrefix: `127.${index}`,
    nodes,
    kubeconfigPath,
    apiServerUrl,
    components,
  };
  await writeState(dir, state);
  return state;
}

/** The cluster's admin kubeconfig for SERVER, with the CA and the admin certificate and key of FILES. */
async function writeKubeconfig(path: string, name: string, server: string, files: PkiFiles): Promise<void> {
  const [ca, cert, key] = await Promise.all([readFile(files.caCert, "utf8"), readFile(files.adminCert, "utf8"), readFile(files.adminKey, "utf8")]);
  const b64 = (s: string): string => Buffer.from(s).toString("base64");
  const context = `theseus-${name}`;
  const doc = {
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: context, cluster: { server, "certificate-authority-data": b64(ca) } }],
    users: [{ name: `${context}-admin`, user: { "client-certificate-data": b64(cert), "client-key-data": b64(key) } }],
    contexts: [{ name: context, context: { cluster: context, user: `${context}-admin`, namespace: "default" } }],
    "current-context": context,
    preferences: {},
  };
  await writeFile(path, stringify(doc), { mode: 0o600 });
}

// A cluster's ports are its own (clusterPort), yet a CI run saw etcd's peer port taken when etcd bound it, by a
// holder the log could not name. A fresh cluster whose component fails that way starts it again on ports
// the kernel picks, and logs who held the port; a restarted cluster keeps its ports (its kubeconfig is out there).
const PORT_ATTEMPTS = 3;

const COMPONENT_PORTS: Readonly<Record<ComponentName, readonly (keyof ClusterState["ports"])[]>> = {
  etcd: ["etcdClient", "etcdPeer"],
  "kube-apiserver": ["apiServer"],
  "kube-controller-manager": ["controllerManager"],
  "kube-scheduler": ["scheduler"],
  "node-daemon": [],
};

/** The component's port that its last start found in use ("bind: address already in use" in its log), if any. */
async function portTakenAtStart(state: ClusterState, component: ComponentName): Promise<number | undefined> {
  const proc = state.components[component].process;
  if (proc !== null && isAlive(proc)) return undefined;
  const log = await readFile(state.components[component].logFile, "utf8").catch(() => "");
  const lastStart = log.slice(log.lastIndexOf(`starting ${component}\n`));
  const match = /listen tcp [0-9.]+:(\d+): bind: address already in use/.exec(lastStart);
  const port = match === null ? undefined : Number(match[1]);
  return COMPONENT_PORTS[component].some((k) => state.ports[k] === port) ? port : undefined;
}

/** Who holds PORT, as `ss` tells it (best effort: for the log only). */
async function portHolder(port: number): Promise<string> {
  try {
    const { stdout } = await execFileAsync("ss", ["-Htanp", `( sport = :${port} )`], { timeout: 5_000 });
    return stdout.trim() === "" ? "nobody any more" : stdout.trim();
  } catch (error) {
    return `unknown (ss: ${(error as Error).message})`;
  }
}

/** STATE with COMPONENT's ports picked anew, every argv and the kubeconfig following, written to disk. */
async function withNewPorts(state: ClusterState, dir: string, component: ComponentName): Promise<ClusterState> {
  const ports = { ...state.ports };
  for (const key of COMPONENT_PORTS[component]) ports[key] = await freePort();
  // etcd may have begun its data directory with the old peer URL in it.
  if (component === "etcd") await rm(join(dir, "etcd"), { recursive: true, force: true });
  const files = pkiFiles(join(dir, "pki"));
  const apiServerUrl = `https://127.0.0.1:${ports.apiServer}`;
  if (apiServerUrl !== state.apiServerUrl) {
    await writeKubeconfig(state.kubeconfigPath, state.name, apiServerUrl, files);
  }
  const argv = componentArgv(dir, files, ports, state.serviceCidr, state.kubeconfigPath);
  const components = Object.fromEntries(
    COMPONENT_ORDER.map((c) => [c, { ...state.components[c], argv: argv[c] } satisfies ComponentState]),
  ) as unknown as Record<ComponentName, ComponentState>;
  const next: ClusterState = { ...state, ports, apiServerUrl, components };
  await writeState(dir, next);
  return next;
}

function componentArgv(
  dir: string,
  pki: PkiFiles,
  ports: ClusterState["ports"],
  serviceCidr: string,
  kubeconfig: string,
): Record<ComponentName, string[]> {
  const bin = controlPlaneBinaries();
  const etcdClient = `http://127.0.0.1:${ports.etcdClient}`;
  const etcdPeer = `http://127.0.0.1:${ports.etcdPeer}`;
  return {
    etcd: [
      bin.etcd,
      "--name=theseus",
      `--data-dir=${join(dir, "etcd")}`,
      `--listen-client-urls=${etcdClient}`,
      `--advertise-client-urls=${etcdClient}`,
      `--listen-peer-urls=${etcdPeer}`,
      `--initial-advertise-peer-urls=${etcdPeer}`,
      `--initial-cluster=theseus=${etcdPeer}`,
      "--log-level=warn",
    ],
    "kube-apiserver": [
      bin.kubeApiserver,
      `--etcd-servers=${etcdClient}`,
      "--bind-address=127.0.0.1",
      "--advertise-address=127.0.0.1",
      `--secure-port=${ports.apiServer}`,
      "--insecure-port=0",
      `--cert-dir=${join(dir, "pki")}`,
      `--tls-cert-file=${pki.serverCert}`,
      `--tls-private-key-file=${pki.serverKey}`,
      `--client-ca-file=${pki.caCert}`,
      `--service-account-key-file=${pki.serviceAccountPub}`,
      `--service-account-signing-key-file=${pki.serviceAccountKey}`,
      "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
      `--service-cluster-ip-range=${serviceCidr}`,
      "--authorization-mode=Node,RBAC",
      "--allow-privileged=true",
      // The emulated kubelet has no port; nothing may try to reach it.
      "--kubelet-preferred-address-types=InternalIP",
      "--v=1",
    ],
    "kube-controller-manager": [
      bin.kubeControllerManager,
      `--kubeconfig=${kubeconfig}`,
      `--authentication-kubeconfig=${kubeconfig}`,
      `--authorization-kubeconfig=${kubeconfig}`,
      "--bind-address=127.0.0.1",
      `--secure-port=${ports.controllerManager}`,
      "--port=0",
      `--cert-dir=${join(dir, "pki", "controller-manager")}`,
      "--leader-elect=false",
      "--use-service-account-credentials=true",
      `--service-account-private-key-file=${pki.serviceAccountKey}`,
      `--root-ca-file=${pki.caCert}`,
      `--cluster-signing-cert-file=${pki.caCert}`,
      `--cluster-signing-key-file=${pki.caKey}`,
      `--service-cluster-ip-range=${serviceCidr}`,
      "--controllers=*,bootstrapsigner,tokencleaner",
      "--v=1",
    ],
    "kube-scheduler": [
      bin.kubeScheduler,
      `--kubeconfig=${kubeconfig}`,
      `--authentication-kubeconfig=${kubeconfig}`,
      `--authorization-kubeconfig=${kubeconfig}`,
      "--bind-address=127.0.0.1",
      `--secure-port=${ports.scheduler}`,
      "--port=0",
      `--cert-dir=${join(dir, "pki", "scheduler")}`,
      "--leader-elect=false",
      "--v=1",
    ],
    "node-daemon": [process.execPath, join(repoRoot, "dist", "local-clusters", "node-daemon.js"), dir],
  };
}

async function startComponent(state: ClusterState, dir: string, component: ComponentName): Promise<ClusterState> {
  const spec = state.components[component];
  await mkdir(join(dir, "logs"), { recursive: true });
  await writeFile(spec.logFile, `--- ${new Date().toISOString()} starting ${component}\n`, { flag: "a" });
  const pid = await spawnDetached({ argv: spec.argv, logFile: spec.logFile, marker: dir, cwd: dir });
  const next: ClusterState = {
    ...state,
    components: { ...state.components, [component]: { ...spec, process: { pid, marker: dir } } },
  };
  await writeState(dir, next);
  return next;
}

async function waitComponentReady(
  state: ClusterState,
  dir: string,
  component: ComponentName,
  timeoutMs: number,
  signal: AbortSignal | undefined,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const files = pkiFiles(join(dir, "pki"));
  for (;;) {
    throwIfAborted(signal);
    const proc = state.components[component].process;
    if (proc === null || !isAlive(proc)) {
      throw new TheseusError("unavailable", `${component} exited during start-up`);
    }
    let ready = false;
    switch (component) {
      case "etcd":
        ready = await httpOk(`http://127.0.0.1:${state.ports.etcdClient}/health`);
        break;
      case "kube-apiserver":
        ready = await apiGetOk(state, files, "/readyz");
        break;
      case "kube-controller-manager":
        ready = await healthzOk(state.ports.controllerManager);
        break;
      case "kube-scheduler":
        ready = await healthzOk(state.ports.scheduler);
        break;
      default:
        // The node daemon has no health endpoint; waitClusterReady checks its effect (Ready nodes) instead.
        ready = true;
    }
    if (ready) return;
    if (Date.now() > deadline) throw new TheseusError("deadline_exceeded", `${component} was not ready within ${timeoutMs / 1000} s`);
    await sleep(250, signal);
  }
}

/** Ready when the controller manager has issued the default service account's token and every node is Ready. */
async function waitClusterReady(state: ClusterState, dir: string, timeoutMs: number, signal: AbortSignal | undefined): Promise<void> {
  const kc = loadKubeConfig(state.kubeconfigPath);
  const core = kc.makeApiClient(CoreV1Api);
  const deadline = Date.now() + timeoutMs;
  let waitingFor = "";
  for (;;) {
    throwIfAborted(signal);
    for (const c of COMPONENT_ORDER) {
      const proc = state.components[c].process;
      if (proc === null || !isAlive(proc)) throw new TheseusError("unavailable", `${c} exited`);
    }
    try {
      const sa = await core.readNamespacedServiceAccount({ name: "default", namespace: "default" });
      const nodes = await core.listNode();
      const ready = new Set(
        nodes.items
          .filter((n) => n.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") === true)
          .map((n) => n.metadata?.name),
      );
      const notReady = state.nodes.filter((n) => !ready.has(n));
      if ((sa.secrets?.length ?? 0) > 0 && notReady.length === 0) return;
      waitingFor = (sa.secrets?.length ?? 0) === 0 ? "the default service account token (controller manager)" : `nodes ${notReady.join(", ")} (node daemon)`;
    } catch {
      waitingFor = "the default service account (controller manager)";
    }
    if (Date.now() > deadline) {
      throw new TheseusError("deadline_exceeded", `timed out after ${timeoutMs / 1000} s waiting for ${waitingFor}`, {
        hint: `read ${join(dir, "logs")}/*.log`,
      });
    }
    await sleep(500, signal);
  }
}

/** Objects every local cluster has from the start: the two local-path StorageClasses. */
async function bootstrap(state: ClusterState): Promise<void> {
  const kc = loadKubeConfig(state.kubeconfigPath);
  const storage = kc.makeApiClient(StorageV1Api);
  for (const sc of storageClassManifests()) await createIfAbsent(() => storage.createStorageClass({ body: sc }));
}

function httpOk(url: string): Promise<boolean> {
  return fetch(url, { signal: AbortSignal.timeout(2000) })
    .then((r) => r.ok)
    .catch(() => false);
}

/**
 * The controllers' /healthz on their secure port. It is always allowed to anonymous callers, and their serving
 * certificate is self-signed, so it is not verified: the answer only tells that the component bound its own port.
 */
function healthzOk(port: number): Promise<boolean> {
  return httpsGetOk({ port, path: "/healthz", rejectUnauthorized: false });
}

async function apiGetOk(state: ClusterState, files: PkiFiles, path: string): Promise<boolean> {
  const [ca, cert, key] = await Promise.all([readFile(files.caCert), readFile(files.adminCert), readFile(files.adminKey)]);
  return httpsGetOk({ port: state.ports.apiServer, path, ca, cert, key });
}

/** Whether a GET on 127.0.0.1 answers 200 within 2 s (any failure is a no). */
function httpsGetOk(options: RequestOptions): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ ...options, host: "127.0.0.1", method: "GET", timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on("error", () => resolve(false));
    req.on("timeout", () => req.destroy());
    req.end();
  });
}

async function failureDetail(state: ClusterState, dir: string): Promise<string> {
  for (const c of COMPONENT_ORDER) {
    const proc = state.components[c].process;
    if (proc !== null && !isAlive(proc)) {
      const log = await readFile(state.components[c].logFile, "utf8").catch(() => "");
      const tail = log.trimEnd().split("\n").slice(-8).join("\n  ");
      return `\n${c} died; last lines of ${join(dir, "logs", `${c}.log`)}:\n  ${tail}`;
    }
  }
  return "";
}

async function stopAll(state: ClusterState, dir: string): Promise<void> {
  // The agent first (it may be writing to the API server), then the node daemon: it stops its pods with their grace
  // period while the API server still answers.
  // A chart-installed agent is a pod: the node daemon stops it with the others.
  const agent = agentProcess(state.agent);
  if (agent !== undefined) await stopProcess(agent, 15_000);
  for (const c of [...COMPONENT_ORDER].reverse()) {
    const proc = state.components[c].process;
    if (proc !== null) await stopProcess(proc, c === "node-daemon" ? 40_000 : 10_000);
  }
  // Containers the node daemon could not stop (it crashed, or was killed) still have their pid files.
  for (const record of await podProcessRecords(dir)) await stopProcess(record, 2_000);
}

async function podProcessRecords(dir: string): Promise<ProcessRecord[]> {
  const records: ProcessRecord[] = [];
  const podsDir = join(dir, "pods");
  let pods: string[] = [];
  try {
    pods = await readdir(podsDir);
  } catch {
    return records;
  }
  for (const pod of pods) {
    const files = await readdir(join(podsDir, pod)).catch(() => [] as string[]);
    for (const f of files.filter((x) => x.endsWith(".pid"))) {
      try {
        records.push(JSON.parse(await readFile(join(podsDir, pod, f), "utf8")) as ProcessRecord);
      } catch {
        // a half-written pid file: the process it named never started
      }
    }
  }
  return records;
}

/** Stops every process of cluster NAME and removes its state. Returns false when there was no such cluster. */
export async function downCluster(name: string): Promise<boolean> {
  validateClusterName(name);
  const dir = clusterDir(name);
  const state = await readState(dir);
  if (state === undefined) {
    const leftovers = await readdir(dir).catch(() => undefined);
    if (leftovers === undefined) return false;
    for (const record of await podProcessRecords(dir)) await stopProcess(record, 2_000);
    await rm(dir, { recursive: true, force: true });
    return true;
  }
  await stopAll(state, dir);
  await rm(dir, { recursive: true, force: true });
  return true;
}

export async function listClusters(): Promise<ClusterSummary[]> {
  let names: string[] = [];
  try {
    names = (await readdir(clustersRoot())).sort();
  } catch {
    return [];
  }
  const out: ClusterSummary[] = [];
  for (const n of names) {
    const dir = join(clustersRoot(), n);
    const state = await readState(dir).catch(() => undefined);
    if (state === undefined) continue;
    const components = Object.fromEntries(
      COMPONENT_ORDER.map((c) => {
        const p = state.components[c].process;
        return [c, p !== null && isAlive(p)];
      }),
    ) as Record<ComponentName, boolean>;
    const agent = state.agent === undefined ? undefined : { address: agentAddress(state.agent), running: await agentRunning(state.agent) };
    const alive = Object.values(components).filter(Boolean).length;
    const status: ClusterStatus =
      alive === COMPONENT_ORDER.length && agent?.running !== false ? "running" : alive === 0 && agent?.running !== true ? "stopped" : "degraded";
    out.push({ ...toLocalCluster(state, dir), status, components, ...(agent === undefined ? {} : { agent }), createdAt: state.createdAt });
  }
  return out;
}

/** Reads a cluster that is already up (no start-up); undefined when there is none. */
export async function getCluster(name: string): Promise<LocalCluster | undefined> {
  validateClusterName(name);
  const dir = clusterDir(name);
  const state = await readState(dir);
  return state === undefined ? undefined : toLocalCluster(state, dir);
}
