// The clusters' agents as processes the test owns: `theseus local up` starts each agent detached; the matrix needs to
// start one with THESEUS_FAILPOINTS, see it crash (exit 137, as kill -9), and start it again without, on the same
// address (the coordinator and the peer know it), with the same kubeconfig and state directory, so that the restarted
// agent finds its participants in its cluster exactly as a rebooted pod would.
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { createWriteStream } from "node:fs";
import { readFile } from "node:fs/promises";
import { connect } from "node:net";
import { join } from "node:path";
import { sleep } from "../../common/index.js";
import { clusterDir } from "../../local-clusters/index.js";

export interface AgentExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly atMs: number;
}

export interface OwnedAgent {
  readonly cluster: string;
  readonly port: number;
  readonly logFile: string;
  /** The running process's exit (a new promise after each start). */
  exited(): Promise<AgentExit>;
  alive(): boolean;
  /** The running process's pid. */
  pid(): number | undefined;
  /** Starts it (again) with these failpoints ("" for none); resolves once it listens. */
  start(failpoints: string): Promise<void>;
  /** SIGKILL, awaited. */
  kill(): Promise<void>;
}

interface AgentStateFile {
  readonly agent?: { readonly argv: readonly string[]; readonly port: number; readonly process: { readonly pid: number } | null };
}

/** Stops the agent `local up` started for the cluster and returns one the test starts and stops itself. */
export async function takeOverAgent(cluster: string, logDir: string): Promise<OwnedAgent> {
  const dir = clusterDir(cluster);
  const state = JSON.parse(await readFile(join(dir, "state.json"), "utf8")) as AgentStateFile;
  const agent = state.agent;
  if (agent === undefined) throw new Error(`cluster ${cluster} has no agent in its state.json`);
  const pid = agent.process?.pid;
  if (pid !== undefined) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
    for (let i = 0; i < 100 && isAlive(pid); i++) await sleep(50);
  }
  const [exe, ...args] = agent.argv;
  if (exe === undefined) throw new Error(`cluster ${cluster}: the agent's argv is empty`);
  const logFile = join(logDir, `agent-${cluster}.log`);
  const log = createWriteStream(logFile, { flags: "a" });
  let child: ChildProcess | undefined;
  let exit: Promise<AgentExit> = Promise.resolve({ code: null, signal: null, atMs: Date.now() });
  let running = false;

  const owned: OwnedAgent = {
    cluster,
    port: agent.port,
    logFile,
    exited: () => exit,
    alive: () => running,
    pid: () => (running ? child?.pid : undefined),
    async start(failpoints) {
      if (running) await owned.kill();
      log.write(`\n==== start ${new Date().toISOString()} THESEUS_FAILPOINTS=${failpoints}\n`);
      const env = { ...process.env, THESEUS_FAILPOINTS: failpoints };
      const c = spawn(exe, args, { env, stdio: ["ignore", "pipe", "pipe"], cwd: dir });
      child = c;
      running = true;
      c.stdout?.pipe(log, { end: false });
      c.stderr?.pipe(log, { end: false });
      exit = new Promise((resolve) => {
        c.once("exit", (code, signal) => {
          running = false;
          log.write(`==== exit code=${String(code)} signal=${String(signal)} ${new Date().toISOString()}\n`);
          resolve({ code, signal, atMs: Date.now() });
        });
      });
      // A shared 2-core machine under load can take a minute to start node and the agent's discovery.
      const deadline = Date.now() + 180_000;
      while (!(await accepts(agent.port))) {
        if (!running) throw new Error(`the agent of ${cluster} exited during start-up (see ${logFile})`);
        if (Date.now() > deadline) {
          await owned.kill();
          throw new Error(`the agent of ${cluster} did not listen on 127.0.0.1:${agent.port} within 180 s (see ${logFile})`);
        }
        await sleep(100);
      }
    },
    async kill() {
      if (child === undefined || !running) return;
      const ended = exit;
      child.kill("SIGKILL");
      await ended;
    },
  };
  return owned;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
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
