// Detached background processes that outlive the CLI (like kind's containers). Every pid we record comes with a
// marker string that must appear in /proc/PID/cmdline before we signal it, so that a recycled pid is never killed.
import { spawn } from "node:child_process";
import { openSync, closeSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { sleep } from "../common/index.js";

export interface ProcessRecord {
  readonly pid: number;
  /** A string that appears in the process's command line; guards against pid reuse. */
  readonly marker: string;
  /** Optionally, a NAME=VALUE that must be in the process's environment (pods of one image share a command line). */
  readonly envMarker?: string;
}

export interface DetachedSpec {
  readonly argv: readonly string[];
  readonly logFile: string;
  /** What isAlive will look for in the process's command line (see ProcessRecord.marker). */
  readonly marker: string;
  readonly env?: NodeJS.ProcessEnv;
  readonly cwd?: string;
}

/**
 * Starts a process that outlives us and resolves with its pid once its command line shows the marker. Node's spawn
 * returns when the exec has begun (the close-on-exec pipe closed), not when the new program's arguments are in place:
 * on a loaded machine /proc/PID/cmdline is empty for a while after, and an isAlive right away said a healthy
 * node-daemon had "exited during start-up" (a CI run, with nothing in its log).
 */
export async function spawnDetached(spec: DetachedSpec): Promise<number> {
  const [cmd, ...args] = spec.argv;
  if (cmd === undefined) throw new Error("empty argv");
  const fd = openSync(spec.logFile, "a");
  let pid: number;
  try {
    const child = spawn(cmd, args, {
      detached: true,
      stdio: ["ignore", fd, fd],
      env: spec.env ?? process.env,
      ...(spec.cwd === undefined ? {} : { cwd: spec.cwd }),
    });
    child.unref();
    if (child.pid === undefined) throw new Error(`could not start ${cmd}`);
    pid = child.pid;
  } finally {
    closeSync(fd);
  }
  // A process that dies at once is left for the caller's isAlive to report, with its log.
  for (let waited = 0; waited < 5000 && !isAlive({ pid, marker: spec.marker }) && exists(pid); waited += 10) await sleep(10);
  return pid;
}

/** The pid is a process that has not exited (its command line may not be in place yet). */
function exists(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

export function isAlive(record: ProcessRecord): boolean {
  try {
    const cmdline = readFileSync(`/proc/${record.pid}/cmdline`, "utf8").replaceAll("\0", " ");
    if (!cmdline.includes(record.marker)) return false;
    if (record.envMarker !== undefined) {
      const environ = readFileSync(`/proc/${record.pid}/environ`, "utf8").split("\0");
      if (!environ.includes(record.envMarker)) return false;
    }
    const stat = readFileSync(`/proc/${record.pid}/stat`, "utf8");
    // A zombie has exited; its parent just has not reaped it yet.
    return !/^\d+ \(.*\) Z /.test(stat);
  } catch {
    return false;
  }
}

/** SIGTERM, wait up to graceMs, then SIGKILL. Resolves once the process is gone. */
export async function stopProcess(record: ProcessRecord, graceMs: number): Promise<void> {
  if (!isAlive(record)) return;
  signal(record.pid, "SIGTERM");
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    if (!isAlive(record)) return;
    await sleep(100);
  }
  // Checked again right before: the pid may have been reused in the last sleep (pid_max is 32768 on our machines).
  if (isAlive(record)) signal(record.pid, "SIGKILL");
  for (let i = 0; i < 50 && isAlive(record); i++) await sleep(100);
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

/**
 * A port of a cluster's own, below Linux's ephemeral range (32768-60999): `slot` (0-7) of the ports reserved for the
 * cluster's claimed index. A port picked by binding port 0 comes from that range, and between our close and etcd's
 * bind any outgoing connection on the machine may take it: a CI run lost a cluster to "bind: address already in use"
 * while other test files were connecting everywhere. The index is the cluster's alone (claimIndex), so no other
 * cluster picks the same port. It is not probed here: a probe is stale by the time the component binds, so what
 * something else holds anyway is handled where it shows, when the component fails to bind (upCluster starts it again
 * on a port the kernel picks).
 */
export function clusterPort(index: number, slot: number): number {
  if (!Number.isInteger(slot) || slot < 0 || slot >= CLUSTER_PORT_SLOTS) throw new RangeError(`port slot ${slot} is not 0-${CLUSTER_PORT_SLOTS - 1}`);
  return CLUSTER_PORT_BASE + index * CLUSTER_PORT_SLOTS + slot;
}
const CLUSTER_PORT_BASE = 20000;
const CLUSTER_PORT_SLOTS = 8;

/** True when nothing listens on 127.0.0.1:PORT right now (a probe: it may be taken the moment after). */
export function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

/** A free TCP port on 127.0.0.1 (bind port 0, read it, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}
