// Runs a real `theseus-agent` as a child process and waits for its readiness line: the demo and the tests use real
// daemons, so start-up, configuration, logging and SIGTERM are exercised exactly as an operator meets them.
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { TheseusError } from "../../common/index.js";

export interface AgentProcessOptions {
  readonly cluster: string;
  readonly pkiDir: string;
  readonly volumes: Readonly<Record<string, string>>;
  readonly stateDir: string;
  readonly listen?: string;
  readonly logLevel?: string;
  /** Where the agent's JSON log lines go; they are discarded if absent. */
  readonly logFile?: NodeJS.WritableStream;
}

export interface AgentProcess {
  readonly address: string;
  readonly pid: number;
  readonly child: ChildProcess;
  /** SIGTERM, then wait for the exit code. */
  stop(): Promise<number | null>;
}

export const AGENT_MAIN = fileURLToPath(new URL("../../agent/main.js", import.meta.url));

export async function spawnAgent(options: AgentProcessOptions): Promise<AgentProcess> {
  const args = [AGENT_MAIN, "--cluster", options.cluster, "--pki-dir", options.pkiDir, "--state-dir", options.stateDir, "--listen", options.listen ?? "127.0.0.1:0", "--log-level", options.logLevel ?? "info"];
  for (const [name, path] of Object.entries(options.volumes)) args.push("--volume", `${name}=${path}`);
  // A small young generation: sync rounds allocate a stream of short-lived frame buffers, and V8's default 16 MiB
  // semi-spaces let ~100 MiB of them pile up before a scavenge (peak RSS ~170 MiB against the 160 MiB budget).
  const child = spawn(process.execPath, ["--max-semi-space-size=2", ...args], { stdio: ["ignore", "pipe", "pipe"] });
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
        reject(new TheseusError("internal", `agent ${options.cluster} printed an unexpected first line: ${line}`, { cause: error }));
      }
    });
    child.once("exit", (code) => reject(new TheseusError("unavailable", `agent ${options.cluster} exited with code ${String(code)} before listening: ${stderr.join("").trim()}`)));
  });
  const address = await ready;
  return {
    address,
    pid: child.pid ?? -1,
    child,
    async stop() {
      if (child.exitCode !== null) return child.exitCode;
      const exited = once(child, "exit");
      child.kill("SIGTERM");
      const [code] = (await exited) as [number | null];
      return code;
    },
  };
}
