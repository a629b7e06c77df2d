// The persisted description of one local cluster: state.json under its directory. Everything needed to restart a
// component or to tear the cluster down is in here, so `down` works even if the CLI that ran `up` is long gone.
import { readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { ProcessRecord } from "./processes.js";

export type ComponentName = "etcd" | "kube-apiserver" | "kube-controller-manager" | "kube-scheduler" | "node-daemon";
export const COMPONENT_ORDER: readonly ComponentName[] = [
  "etcd",
  "kube-apiserver",
  "kube-controller-manager",
  "kube-scheduler",
  "node-daemon",
];

export interface ComponentState {
  readonly argv: readonly string[];
  readonly logFile: string;
  readonly process: ProcessRecord | null;
}

/** The cluster's agent run as a detached process on 127.0.0.1 (`local up --agent process`). */
export interface ProcessAgentState extends ComponentState {
  /** Absent in the state of clusters made before agents could be installed with the chart. */
  readonly mode?: "process";
  /** Chosen once: the address registered with the coordinator stays true across restarts. */
  readonly port: number;
}

/** The cluster's agent installed with the Helm chart, reached through its NodePort (`local up`, the default). */
export interface ChartAgentState {
  readonly mode: "chart";
  readonly release: string;
  readonly namespace: string;
  /** <node address>:<nodePort>: stays true while the agent's pod is replaced. */
  readonly address: string;
}

/** The cluster's Theseus agent (present once a `local up` asked for it; clusters made before it have none). */
export type LocalAgentState = ProcessAgentState | ChartAgentState;

export interface ClusterState {
  readonly version: 1;
  readonly name: string;
  /** 1..254, unique among clusters on this machine; selects the pod IP block and the service CIDR. */
  readonly index: number;
  readonly createdAt: string;
  readonly ports: { readonly etcdClient: number; readonly etcdPeer: number; readonly apiServer: number; readonly controllerManager: number; readonly scheduler: number };
  readonly serviceCidr: string;
  /** Pod IPs are 127.<index>.X.Y: every loopback address answers locally on Linux. */
  readonly podIpPrefix: string;
  readonly nodes: readonly string[];
  readonly kubeconfigPath: string;
  readonly apiServerUrl: string;
  readonly components: Readonly<Record<ComponentName, ComponentState>>;
  readonly agent?: LocalAgentState;
}

/**
 * A node's address: 127.<index>.0.<n> for the n-th node. Pod IPs start at 127.<index>.1.1, so the two never meet;
 * it is the node's InternalIP, its pods' hostIP, and where the cluster's NodePorts answer.
 */
export function nodeIpOf(state: Pick<ClusterState, "podIpPrefix" | "nodes">, nodeName: string): string {
  const n = state.nodes.indexOf(nodeName);
  if (n < 0 || n > 253) throw new Error(`${nodeName} is not a node of this cluster`);
  return `${state.podIpPrefix}.0.${n + 1}`;
}

export function statePath(dir: string): string {
  return join(dir, "state.json");
}

export async function readState(dir: string): Promise<ClusterState | undefined> {
  try {
    return JSON.parse(await readFile(statePath(dir), "utf8")) as ClusterState;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
}

export async function writeState(dir: string, state: ClusterState): Promise<void> {
  const tmp = `${statePath(dir)}.tmp`;
  await writeFile(tmp, `${JSON.stringify(state, null, 2)}\n`);
  await rename(tmp, statePath(dir));
}
