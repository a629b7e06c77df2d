// The cluster's Theseus agent, in one of two forms. By default (`theseus local up`) it is installed as a user installs
// it: the Helm chart, its pod run by the emulated kubelet, reached at a NodePort that the node daemon's proxy relays to
// whichever agent pod is ready (agent-chart.ts). With `--agent process` it is one more detached process beside the
// control plane, on 127.0.0.1 at a port chosen once and kept in state.json: what the tests that kill and restart the
// agent by its pid use (the invariant matrix, the recovery tests). Either way its certificates come from the caller:
// the local clusters never issue any.
import { readFile } from "node:fs/promises";
import { connect } from "node:net";
import { join } from "node:path";
import { TheseusError, sleep, throwIfAborted } from "../common/index.js";
import { ensureChartAgent, reachesAgent, uninstallChartAgent } from "./agent-chart.js";
import type { ChartAgentOptions } from "./agent-chart.js";
import { repoRoot } from "./paths.js";
import { clusterPort, freePort, isAlive, portIsFree, spawnDetached, stopProcess } from "./processes.js";
import type { ProcessRecord } from "./processes.js";
import type { ClusterState, LocalAgentState, ProcessAgentState } from "./state.js";
import { writeState } from "./state.js";

/** What the caller (the coordinator's `local up`) provides: how to run the agent, and its certificates. */
export type LocalAgentOptions = ProcessAgentOptions | (ChartAgentOptions & { readonly mode: "chart" });

export interface ProcessAgentOptions {
  readonly mode?: "process";
  /** Holds ca.crt and agent-<cluster>.crt/.key for the cluster's name. */
  readonly pkiDir: string;
}

export const AGENT_MAIN = join(repoRoot, "dist", "agent", "main.js");

export function agentAddress(agent: LocalAgentState): string {
  return agent.mode === "chart" ? agent.address : `127.0.0.1:${agent.port}`;
}

/** The process is alive, or the chart's agent answers at its NodePort. */
export async function agentRunning(agent: LocalAgentState): Promise<boolean> {
  if (agent.mode === "chart") return reachesAgent(agent.address);
  return agent.process !== null && isAlive(agent.process);
}

/** The agent processes of the cluster's directory that `down` must stop before the node daemon. */
export function agentProcess(agent: LocalAgentState | undefined): ProcessRecord | undefined {
  return agent === undefined || agent.mode === "chart" || agent.process === null ? undefined : agent.process;
}

/**
 * Starts (or installs) the agent unless it runs already; a cluster whose agent ran in the other form has that one
 * removed first, so that one cluster never has two agents driving its migrations.
 */
export async function ensureAgent(
  state: ClusterState,
  dir: string,
  options: LocalAgentOptions,
  timeoutMs: number,
  signal: AbortSignal | undefined,
): Promise<ClusterState> {
  const current = state.agent;
  if (options.mode === "chart") {
    if (current !== undefined && current.mode !== "chart" && current.process !== null) await stopProcess(current.process, 15_000);
    const agent = await ensureChartAgent(state, dir, options, timeoutMs, signal);
    const next: ClusterState = { ...state, agent };
    await writeState(dir, next);
    return next;
  }
  if (current?.mode === "chart") await uninstallChartAgent(state, dir, signal);
  return ensureProcessAgent(state, dir, options, timeoutMs, signal);
}

/**
 * Starts the process agent unless it runs already. The argv is recomputed each time (the PKI directory may have
 * moved); the port never changes once chosen.
 */
async function ensureProcessAgent(
  state: ClusterState,
  dir: string,
  options: ProcessAgentOptions,
  timeoutMs: number,
  signal: AbortSignal | undefined,
): Promise<ClusterState> {
  const previous = state.agent?.mode === "chart" ? undefined : state.agent;
  // The agent has no start-up retry (its address is registered once), so its own port is probed first.
  const own = clusterPort(state.index, 5);
  const port = previous?.port ?? ((await portIsFree(own)) ? own : await freePort());
  const argv = [
    process.execPath,
    AGENT_MAIN,
    "--cluster",
    state.name,
    "--pki-dir",
    options.pkiDir,
    "--kubeconfig",
    state.kubeconfigPath,
    "--listen",
    `127.0.0.1:${port}`,
    "--state-dir",
    join(dir, "agent"),
  ];
  if (previous?.process != null && isAlive(previous.process)) return state;
  const logFile = join(dir, "logs", "agent.log");
  const marker = join(dir, "agent");
  const pid = await spawnDetached({ argv, logFile, marker, cwd: dir });
  const agent: ProcessAgentState = { mode: "process", port, argv, logFile, process: { pid, marker } };
  const next: ClusterState = { ...state, agent };
  await writeState(dir, next);
  await waitListening(agent, timeoutMs, signal);
  return next;
}

async function waitListening(agent: ProcessAgentState, timeoutMs: number, signal: AbortSignal | undefined): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    throwIfAborted(signal);
    if (agent.process === null || !isAlive(agent.process)) {
      const log = await readFile(agent.logFile, "utf8").catch(() => "");
      const tail = log.trimEnd().split("\n").slice(-6).join("\n  ");
      throw new TheseusError("unavailable", `the agent exited during start-up; last lines of ${agent.logFile}:\n  ${tail}`, {
        hint: `fix what the log says (is ${AGENT_MAIN} built? npm run build), then retry theseus local up`,
      });
    }
    if (await accepts(agent.port)) return;
    if (Date.now() > deadline) throw new TheseusError("deadline_exceeded", `the agent did not listen on ${agentAddress(agent)} within ${timeoutMs / 1000} s`, { hint: `read ${agent.logFile}` });
    await sleep(200, signal);
  }
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}
