// Running the contenders' processes: timed clients and long-lived servers, each under GNU time so that every process
// reports its peak resident set the same way (wait4's ru_maxrss, which covers the process and every descendant it
// reaped: rsync's forked receivers, stunnel's exec'd rsync), without sampling /proc and missing short peaks.
import { spawn } from "node:child_process";
import { readFile, rm } from "node:fs/promises";
import path from "node:path";
import { TheseusError } from "../../common/index.js";

export const GNU_TIME = "/usr/bin/time";

export interface Finished {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly wallMs: number;
}

export interface RunOptions {
  readonly env?: NodeJS.ProcessEnv;
  readonly cwd?: string;
  readonly signal?: AbortSignal;
}

/** Runs a command to completion, collecting its output; never throws for a non-zero exit (see `check`). */
export function run(command: string, args: readonly string[], options: RunOptions = {}): Promise<Finished> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(command, args, {
      stdio: ["ignore", "pipe", "pipe"],
      env: options.env ?? process.env,
      ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (chunk: Buffer) => out.push(chunk));
    child.stderr.on("data", (chunk: Buffer) => err.push(chunk));
    child.on("error", reject);
    child.on("close", (code, signal) => {
      resolve({
        code, signal,
        stdout: Buffer.concat(out).toString("utf8"),
        stderr: Buffer.concat(err).toString("utf8"),
        wallMs: performance.now() - started,
      });
    });
  });
}

export function check(what: string, finished: Finished): Finished {
  if (finished.code === 0) return finished;
  const detail = (finished.stderr.trim() || finished.stdout.trim()).split("\n").slice(-8).join("\n");
  throw new TheseusError("internal", `${what} failed (${finished.signal ?? `exit ${finished.code}`}):\n${detail}`);
}

/** GNU time's report: peak RSS (KiB), user and system CPU seconds (its own and its waited-for descendants'). */
export const TIME_FORMAT = "--format=%M %U %S";

/** The argument vector that runs `command` under GNU time, writing its peak RSS and CPU time to `timeFile`. */
export function underTime(timeFile: string, command: string, args: readonly string[]): [string, string[]] {
  return [GNU_TIME, [TIME_FORMAT, `--output=${timeFile}`, command, ...args]];
}

export interface Measured {
  readonly peakRssBytes: number | undefined;
  /** user + system CPU seconds of the process and the descendants it waited for. */
  readonly cpuSeconds: number | undefined;
}

/** Reads what GNU time wrote (and removes the file); undefined figures when the process was not measured. */
export async function readMeasured(timeFile: string): Promise<Measured> {
  try {
    return parseMeasured(await readFile(timeFile, "utf8"));
  } catch {
    return { peakRssBytes: undefined, cpuSeconds: undefined };
  } finally {
    await rm(timeFile, { force: true });
  }
}

export function parseMeasured(text: string): Measured {
  // GNU time prefixes "Command terminated by signal 15" when a server is stopped; the figures are the last line.
  const [kib, user, sys] = (text.trim().split("\n").pop() ?? "").trim().split(/\s+/).map(Number);
  const ok = (n: number | undefined): n is number => n !== undefined && Number.isFinite(n);
  return {
    peakRssBytes: ok(kib) && kib > 0 ? kib * 1024 : undefined,
    cpuSeconds: ok(user) && ok(sys) ? user + sys : undefined,
  };
}

export interface Server {
  /** Stops the server (SIGTERM to the measured process) and returns its peak RSS and CPU time. */
  stop(): Promise<Measured>;
}

/**
 * Starts a server under GNU time and waits until it listens on 127.0.0.1:`port` (read from /proc/net/tcp, so that no
 * probe connection reaches the server: stunnel would start an rsync for it).
 */
export async function startServer(
  name: string,
  workDir: string,
  command: string,
  args: readonly string[],
  port: number,
): Promise<Server> {
  const rssFile = path.join(workDir, `${name}.rss`);
  const [timeCmd, timeArgs] = underTime(rssFile, command, args);
  const child = spawn(timeCmd, timeArgs, { stdio: ["ignore", "ignore", "pipe"] });
  const err: Buffer[] = [];
  child.stderr.on("data", (chunk: Buffer) => err.push(chunk));
  const exited = new Promise<void>((resolve) => child.on("close", () => resolve()));
  let alive = true;
  void exited.then(() => (alive = false));

  const deadline = performance.now() + 10_000;
  while (!(await isListening(port))) {
    if (!alive || performance.now() > deadline) {
      child.kill("SIGKILL");
      throw new TheseusError("internal", `${name} did not start listening on 127.0.0.1:${port}:\n${Buffer.concat(err).toString().trim()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }

  return {
    async stop() {
      // GNU time reports only if its child ends, so signal the child, not time itself.
      const pids = await childPids(child.pid ?? -1);
      for (const pid of pids) process.kill(pid, "SIGTERM");
      if (pids.length === 0) child.kill("SIGTERM");
      await exited;
      return readMeasured(rssFile);
    },
  };
}

async function childPids(pid: number): Promise<number[]> {
  try {
    const text = await readFile(`/proc/${pid}/task/${pid}/children`, "utf8");
    return text.trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

async function isListening(port: number): Promise<boolean> {
  const wanted = `:${port.toString(16).toUpperCase().padStart(4, "0")}`;
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text: string;
    try {
      text = await readFile(table, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (fields[1]?.endsWith(wanted) === true && fields[3] === "0A") return true; // 0A = LISTEN
    }
  }
  return false;
}
