// Runs a real `theseus-agent` as a child process and waits for its readiness line: the demo and the tests use real
// daemons, so start-up, configuration, logging and SIGTERM are exercised exactly as an operator meets them.
//
// Exit tracking: a child's "exit" event fires once, possibly long before anyone asks, and a child killed by a signal
// has exitCode null and signalCode set. So the exit is captured once, at spawn, into a promise and a status that every
// later question reads; nothing waits for an event that may already have fired (a pending promise with no handle left
// let Node exit 0 in the middle of `sync-dirs`, printing nothing, when an agent was killed).
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { TheseusError } from "../../common/index.js";

export interface AgentProcessOptions {
  readonly cluster: string;
  readonly pkiDir: string;
  readonly volumes: Readonly<Record<string, string>>;
  readonly stateDir: string;
  /** Where the volumes' sync state lives (the agent's --sync-state): in each volume (default) or in stateDir. */
  readonly syncState?: "volume" | "state-dir";
  readonly listen?: string;
  readonly logLevel?: string;
  /** Where the agent's JSON log lines go; they are discarded if absent. */
  readonly logFile?: NodeJS.WritableStream;
  /**
   * The agent exits when its stdin closes (`--stop-with-stdin`), which happens when this process dies however it
   * dies, kill -9 included: a throwaway agent never outlives the tool that started it. Default true.
   */
  readonly stopWithParent?: boolean;
  /** Extra environment (THESEUS_FAILPOINTS, THESEUS_KEEPALIVE_MS...), over this process's. */
  readonly env?: Readonly<Record<string, string>>;
  /** What the agent is for, in messages ("the source agent"); default `agent CLUSTER`. */
  readonly role?: string;
}

export interface AgentExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface AgentProcess {
  readonly address: string;
  readonly pid: number;
  readonly child: ChildProcess;
  /** Resolves when the process has exited, however and whenever (also if it already had). */
  readonly exited: Promise<AgentExit>;
  /** The exit, once it happened; undefined while the agent runs. */
  exitStatus(): AgentExit | undefined;
  /**
   * Rejects with an `unavailable` TheseusError naming the agent and how it died, if it exits before stop() is called;
   * never settles otherwise. Race long work against it.
   */
  readonly died: Promise<never>;
  /** SIGTERM, then wait for the exit code (null when a signal ended it). */
  stop(): Promise<number | null>;
}

export const AGENT_MAIN = fileURLToPath(new URL("../../agent/main.js", import.meta.url));

export function describeExit(exit: AgentExit): string {
  return exit.signal !== null ? `was killed by ${exit.signal}` : `exited with code ${String(exit.code)}`;
}

export async function spawnAgent(options: AgentProcessOptions): Promise<AgentProcess> {
  const stopWithParent = options.stopWithParent ?? true;
  const role = options.role ?? `agent ${options.cluster}`;
  const args = [AGENT_MAIN, "--cluster", options.cluster, "--pki-dir", options.pkiDir, "--state-dir", options.stateDir, "--listen", options.listen ?? "127.0.0.1:0", "--log-level", options.logLevel ?? "info"];
  for (const [name, path] of Object.entries(options.volumes)) args.push("--volume", `${name}=${path}`);
  if (options.syncState !== undefined) args.push("--sync-state", options.syncState);
  if (stopWithParent) args.push("--stop-with-stdin");
  // A young generation below V8's default: sync rounds allocate a stream of short-lived frame buffers, and 16 MiB
  // semi-spaces let ~100 MiB of them pile up before a scavenge (peak RSS ~170 MiB against the 160 MiB budget). Not
  // as small as 2 MiB, which promoted the entries of a walk to the old space: warm final rounds on the bench's final
  // tree, interleaved, 4 pairs of 2 rounds, 2 MiB against 8 MiB: 1,050 against 821 ms (median), 1.75 against 1.30
  // CPU-seconds for both agents, no-change rounds 456 against 409 ms; peak RSS on 100k small files 170/156 against
  // 168/158 MiB. The chart (agent.nodeOptions) and the image (Dockerfile) set the same.
  // THESEUS_AGENT_NODE_FLAGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") reaches each agent's node: Node refuses
  // --cpu-prof in NODE_OPTIONS, and profiling both agents of a sync-dirs round is how the data plane is measured.
  const extraFlags = (process.env["THESEUS_AGENT_NODE_FLAGS"] ?? "").split(" ").filter((flag) => flag !== "");
  const child = spawn(process.execPath, ["--max-semi-space-size=8", ...extraFlags, ...args], {
    stdio: [stopWithParent ? "pipe" : "ignore", "pipe", "pipe"],
    env: { ...process.env, ...options.env },
  });
  // The pipe is only there to close when we die; it must not keep this process alive, nor fail it when the agent goes.
  child.stdin?.on("error", () => undefined);
  (child.stdin as unknown as { unref?: () => void } | null)?.unref?.();
  let status: AgentExit | undefined;
  let stopping = false;
  const exited = new Promise<AgentExit>((resolve) => {
    child.once("exit", (code, signal) => {
      status = { code, signal };
      resolve(status);
    });
  });
  const stderr: string[] = [];
  child.stderr?.on("data", (chunk: Buffer) => {
    if (options.logFile !== undefined) options.logFile.write(chunk);
    else if (stderr.length < 50) stderr.push(chunk.toString());
  });
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  const ready = new Promise<string>((resolve, reject) => {
    lines.once("line", (line) => {
      try {
        resolve((JSON.parse(line) as { listening: string }).listening);
      } catch (error) {
        reject(new TheseusError("internal", `${role} printed an unexpected first line: ${line}`, { cause: error }));
      }
    });
    void exited.then((exit) =>
      reject(new TheseusError("unavailable", `${role} ${describeExit(exit)} before listening: ${stderr.join("").trim()}`)),
    );
  });
  const address = await ready;
  const died = exited.then((exit): never => {
    if (stopping) return new Promise<never>(() => undefined) as never;
    throw new TheseusError("unavailable", `${role} (pid ${String(child.pid)}) ${describeExit(exit)} during the run`, {
      hint: "its log says why; the round can be run again: what was applied is kept",
    });
  });
  // Nobody may be racing against it (yet): an unobserved rejection must not crash the process.
  died.catch(() => undefined);
  return {
    address,
    pid: child.pid ?? -1,
    child,
    exited,
    exitStatus: () => status,
    died,
    async stop() {
      stopping = true;
      if (status === undefined) child.kill("SIGTERM");
      return (await exited).code;
    },
  };
}
