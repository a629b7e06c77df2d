// The cluster's Theseus agent, run as one more detached process beside the control plane. It reaches its cluster
// through the cluster's kubeconfig, listens on 127.0.0.1 at a port chosen once and kept in state.json (so a registered
// address stays true across restarts), and keeps its state inside the cluster's directory (so `down` removes it). Its
// certificates come from the caller: the local clusters never issue any.
// Why not the Helm chart here (test/chart-install.test.ts shows the chart installs and serves on these clusters): the
// local clusters have no Service proxy, so a chart-installed agent is reachable only at its pod IP, which changes each
// time the pod is recreated (an upgrade, a Recreate rollout, a deleted pod), while `local up` registers one address
// that the demo and the migration tests keep across agent restarts (they stop and restart this process by its pid);
// and `helm install --wait` adds about 30 s to every `local up` on an idle 2-core machine.
import { readFile } from "node:fs/promises";
import { connect } from "node:net";
import { join } from "node:path";
import { TheseusError, sleep, throwIfAborted } from "../common/index.js";
import { repoRoot } from "./paths.js";
import { freePort, isAlive, spawnDetached } from "./processes.js";
import type { ClusterState, LocalAgentState } from "./state.js";
import { writeState } from "./state.js";

/** What the caller (the coordinator's `local up`) provides: where the installation's certificates are. */
export interface LocalAgentOptions {
  /** Holds ca.crt and agent-<cluster>.crt/.key for the cluster's name. */
  readonly pkiDir: string;
}

export const AGENT_MAIN = join(repoRoot, "dist", "agent", "main.js");

export function agentAddress(agent: Pick<LocalAgentState, "port">): string {
  return `127.0.0.1:${agent.port}`;
}

/**
 * Starts the agent unless it runs already. The argv is recomputed each time (the PKI directory may have moved); the
 * port never changes once chosen.
 */
export async function ensureAgent(
  state: ClusterState,
  dir: string,
  options: LocalAgentOptions,
  timeoutMs: number,
  signal: AbortSignal | undefined,
): Promise<ClusterState> {
  const port = state.agent?.port ?? (await freePort());
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
    agentAddress({ port }),
    "--state-dir",
    join(dir, "agent"),
  ];
  const current = state.agent;
  if (current?.process != null && isAlive(current.process)) return state;
  const logFile = join(dir, "logs", "agent.log");
  const marker = join(dir, "agent");
  const pid = await spawnDetached({ argv, logFile, marker, cwd: dir });
  const agent: LocalAgentState = { port, argv, logFile, process: { pid, marker } };
  const next: ClusterState = { ...state, agent };
  await writeState(dir, next);
  await waitListening(agent, timeoutMs, signal);
  return next;
}

async function waitListening(agent: LocalAgentState, timeoutMs: number, signal: AbortSignal | undefined): Promise<void> {
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
