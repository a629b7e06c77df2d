// `theseus sync-dirs SRC DST`: one sync round between two local directories through two real agents (child processes,
// so each one's peak RSS is its own) over mTLS gRPC on 127.0.0.1 with throwaway certificates. For developers and the
// benchmark: it prints the round's statistics, and a second run after SRC changed sends only the changes. With
// --rounds-from-stdin the agents stay up for more rounds, as through a migration (the benchmark's final round so).
//
// Where state lives: both agents' sync state (hash caches, block lists) must survive between runs, and must not be in
// DST (the app would see it) or in SRC. It defaults to $XDG_STATE_HOME/theseus/sync-dirs/<hash of SRC and DST> (or
// ~/.local/state/...): one directory per pair of paths, found again by the next run, outside both trees, and not in
// /tmp, which may be cleaned between runs. --state-dir chooses another place. The certificates are fresh for every
// run and deleted at the end.
import type { Command } from "commander";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readFile, readdir, rm, stat } from "node:fs/promises";
import { homedir, tmpdir } from "node:os";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { TheseusError, formatBytes, formatDuration, parseRate } from "../../common/index.js";
import { createLocalInstallation } from "../certs/index.js";
import { copyVolume, skippedNotice } from "../copy/index.js";
import { spawnAgent } from "../demo/index.js";
import type { AgentProcess } from "../demo/index.js";
import { interruptSignal } from "./context.js";

interface SyncDirsFlags {
  bandwidth?: string;
  json?: boolean;
  stateDir?: string;
  roundsFromStdin?: boolean;
}

export function register(program: Command): void {
  program
    .command("sync-dirs")
    .description("sync one local directory into another through a source and a target agent (developer and benchmark tool)")
    .argument("<src>", "the source directory")
    .argument("<dst>", "the target directory (created if missing)")
    .option("--bandwidth <rate>", "bandwidth limit on the sender, e.g. 50MiB/s (default: unlimited)")
    .option("--json", "print each round's statistics as one JSON object (a line)")
    .option("--state-dir <dir>", "where both agents keep their sync state between runs (default: ~/.local/state/theseus/sync-dirs/<hash>)")
    .option("--rounds-from-stdin", "keep both agents running: one round now, then one more for every line read on standard input, until it ends")
    .addHelpText(
      "after",
      `
Runs one round: the first copies everything, later runs send only what changed since the last one (the agents'
state persists in --state-dir). Both agents are real child processes on 127.0.0.1 with throwaway certificates.

With --rounds-from-stdin the agents stay up between rounds, as they do through a migration's pre-copy rounds: a
script changes SRC, writes a line, and reads the round's result. A round's CPU figure is both agents' user and
system time during it (the first round's includes their start-up).

Examples:
  theseus sync-dirs /srv/data /mnt/copy --json
  (change /srv/data; echo; change it again; echo) | theseus sync-dirs /srv/data /mnt/copy --rounds-from-stdin`,
    )
    .action(async (src: string, dst: string, flags: SyncDirsFlags) => {
      const request: SyncDirsRequest = {
        src,
        dst,
        bandwidthBytesPerSecond: flags.bandwidth === undefined ? 0 : parseRate(flags.bandwidth),
        ...(flags.stateDir === undefined ? {} : { stateDir: flags.stateDir }),
        signal: interruptSignal(),
      };
      const print = (result: SyncDirsResult): void => {
        process.stdout.write(flags.json === true ? `${JSON.stringify(result)}\n` : describeResult(result));
      };
      if (flags.roundsFromStdin !== true) return print(await syncDirs(request));
      const session = await openSyncDirs(request);
      const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
      // Ctrl-C between rounds ends the run as it cancels one in flight: the agents stop and the keys go.
      const signal = request.signal as AbortSignal;
      signal.addEventListener("abort", () => lines.close(), { once: true });
      try {
        print(await session.round());
        for await (const line of lines) {
          void line;
          print(await session.round());
        }
        if (signal.aborted) throw TheseusError.from(signal.reason);
      } finally {
        lines.close();
        await session.close();
      }
    });
}

function describeResult(result: SyncDirsResult): string {
  const lines = [
    `synced ${result.src} -> ${result.dst}: ${result.entriesChanged} of ${result.entriesScanned} entries changed, ${result.entriesDeleted} deleted, ` +
      `${formatBytes(result.bytesChanged)} changed, ${formatBytes(result.wireBytes)} on the wire, round ${formatDuration(result.durationMs)} ` +
      `(wall ${formatDuration(result.wallMs)}, CPU ${result.cpuSeconds.toFixed(2)} s); peak RSS source ${formatBytes(result.sourcePeakRssBytes)}, target ${formatBytes(result.targetPeakRssBytes)}; ` +
      `digest ${result.digest.slice(0, 16)}`,
  ];
  const skipped = skippedNotice(result);
  if (skipped !== undefined) lines.push(skipped);
  if (result.targetVouchedUnverified > 0) {
    lines.push(`${result.targetVouchedUnverified} target copies taken as the source's by size and mtime after the target's cache was lost; later rounds read them to verify`);
  }
  if (result.vouchedUnverified > 0) {
    // The quick check's trade-off, said where the user reads the round: these files are equal by stat only.
    lines.push(
      `${result.vouchedUnverified} files (${formatBytes(result.vouchedUnverifiedBytes)}) taken as unchanged by size and mtime after the source's cache was lost; ` +
        `later rounds read them to verify`,
    );
  }
  return lines.map((l) => `${l}\n`).join("");
}

export interface SyncDirsRequest {
  src: string;
  dst: string;
  bandwidthBytesPerSecond: number;
  stateDir?: string;
  signal?: AbortSignal;
}

export interface SyncDirsResult {
  src: string;
  dst: string;
  stateDir: string;
  entriesScanned: number;
  entriesChanged: number;
  entriesDeleted: number;
  bytesRead: number;
  bytesChanged: number;
  wireBytes: number;
  rawBytes: number;
  compressionRatio: number;
  bytesWritten: number;
  targetBytesRead: number;
  durationMs: number;
  /** From the request to the result: the first round's includes agent start-up and certificates. */
  wallMs: number;
  /** Both agents' user + system CPU seconds during the round (the first round's includes their start-up). */
  cpuSeconds: number;
  dirtyBytesPerSecond: number;
  ownersNotPreserved: number;
  specialFilesSkipped: number;
  firstSpecialFile: string;
  /** Files the source vouched for by size and mtime after a lost cache and has not read yet (RoundStats). */
  vouchedUnverified: number;
  vouchedUnverifiedBytes: number;
  /** The target's side: copies it took the source's hash for unread after its own cache was lost, not yet verified. */
  targetVouchedUnverified: number;
  digest: string;
  sourcePeakRssBytes: number;
  targetPeakRssBytes: number;
}

/** Two agents kept running for rounds between the same directories. */
export interface SyncDirsSession {
  round(): Promise<SyncDirsResult>;
  /** Stops both agents and removes the throwaway keys. */
  close(): Promise<void>;
}

/** One round in agents started for it. */
export async function syncDirs(request: SyncDirsRequest): Promise<SyncDirsResult> {
  const session = await openSyncDirs(request);
  try {
    return await session.round();
  } finally {
    await session.close();
  }
}

export async function openSyncDirs(request: SyncDirsRequest): Promise<SyncDirsSession> {
  const started0 = performance.now();
  const src = resolve(request.src);
  const dst = resolve(request.dst);
  const srcInfo = await stat(src).catch((cause: unknown) => {
    throw new TheseusError("not_found", `the source directory ${src} cannot be read`, { cause });
  });
  if (!srcInfo.isDirectory()) throw new TheseusError("invalid_argument", `${src} is not a directory`);
  if (src === dst || dst.startsWith(src + "/") || src.startsWith(dst + "/")) {
    throw new TheseusError("invalid_argument", "the source and the target directories must not contain each other");
  }
  await mkdir(dst, { recursive: true });
  const stateDir = resolve(request.stateDir ?? defaultStateDir(src, dst));
  await mkdir(stateDir, { recursive: true, mode: 0o700 });

  await sweepStalePki();
  // The pid in the name lets a later run remove the keys of a run that was killed before its own clean-up.
  const pki = await mkdtemp(join(tmpdir(), `${PKI_PREFIX}${process.pid}-`));
  const agents: AgentProcess[] = [];
  // An agent that dies mid-round ends the run at once, as a failure naming it; and SIGTERM cancels like Ctrl-C, so
  // that the clean-up below runs (Node's default for SIGTERM would exit on the spot and leave the keys behind).
  const controller = new AbortController();
  const onTerm = (): void => controller.abort(new TheseusError("cancelled", "sync-dirs was terminated (SIGTERM)"));
  process.once("SIGTERM", onTerm);
  const signal = request.signal === undefined ? controller.signal : AbortSignal.any([request.signal, controller.signal]);
  const close = async (): Promise<void> => {
    process.removeListener("SIGTERM", onTerm);
    await Promise.all(agents.map((a) => a.stop()));
    await rm(pki, { recursive: true, force: true });
  };
  try {
    const tls = await createLocalInstallation(pki, { installation: "sync-dirs", agentClusters: ["sync-src", "sync-dst"], coordinator: "sync-dirs", validityDays: 2 });
    const started = await Promise.allSettled([
      spawnAgent({ cluster: "sync-src", role: "the source agent", pkiDir: pki, volumes: { data: src }, stateDir: join(stateDir, "source-agent"), syncState: "state-dir", logLevel: "warn" }),
      spawnAgent({ cluster: "sync-dst", role: "the target agent", pkiDir: pki, volumes: { data: dst }, stateDir: join(stateDir, "target-agent"), syncState: "state-dir", logLevel: "warn" }),
    ]);
    for (const s of started) if (s.status === "fulfilled") agents.push(s.value);
    for (const s of started) if (s.status === "rejected") throw s.reason;
    const [source, target] = agents as [AgentProcess, AgentProcess];
    let death: unknown;
    for (const agent of agents) {
      agent.died.catch((error: unknown) => {
        death ??= error;
        controller.abort(error);
      });
    }
    let first = true;
    const round = async (): Promise<SyncDirsResult> => {
      const begun = first ? started0 : performance.now();
      const cpuBefore = first ? 0 : cpuSecondsOf(source.pid) + cpuSecondsOf(target.pid);
      first = false;
      const result = await copyVolume({ from: source.address, to: target.address, volume: "data", tls, bandwidthBytesPerSecond: request.bandwidthBytesPerSecond, signal }).catch(
        (error: unknown) => {
          // The agent's death is the cause; the broken call it left behind is only its symptom.
          throw death ?? error;
        },
      );
      // The round may have ended just as an agent died: a dead agent is a failure, whatever the round said.
      for (const agent of agents) {
        const exit = agent.exitStatus();
        if (exit !== undefined) await agent.died;
      }
      const cpuSeconds = cpuSecondsOf(source.pid) + cpuSecondsOf(target.pid) - cpuBefore;
      const [sourceRss, targetRss] = await Promise.all([peakRss(source.pid), peakRss(target.pid)]);
      const s = result.stats;
      return {
        src,
        dst,
        stateDir,
        entriesScanned: Number(s.entriesScanned),
        entriesChanged: Number(s.entriesChanged),
        entriesDeleted: Number(s.entriesDeleted),
        bytesRead: Number(s.bytesRead),
        bytesChanged: Number(s.bytesChanged),
        wireBytes: Number(s.wireBytes),
        rawBytes: Number(s.rawBytes),
        compressionRatio: Number(s.wireBytes) > 0 ? Number(s.rawBytes) / Number(s.wireBytes) : 1,
        bytesWritten: Number(s.bytesWritten),
        targetBytesRead: Number(s.targetBytesRead),
        durationMs: Number(s.durationMs),
        wallMs: Math.round(performance.now() - begun),
        cpuSeconds: Math.round(cpuSeconds * 100) / 100,
        dirtyBytesPerSecond: s.dirtyBytesPerSecond,
        ownersNotPreserved: Number(s.ownersNotPreserved),
        specialFilesSkipped: Number(s.specialFilesSkipped),
        firstSpecialFile: s.firstSpecialFile,
        vouchedUnverified: Number(s.vouchedUnverified),
        vouchedUnverifiedBytes: Number(s.vouchedUnverifiedBytes),
        targetVouchedUnverified: Number(s.targetVouchedUnverified),
        digest: Buffer.from(s.targetDigest).toString("hex"),
        sourcePeakRssBytes: sourceRss,
        targetPeakRssBytes: targetRss,
      };
    };
    return { round, close };
  } catch (error) {
    await close();
    throw error;
  }
}

const PKI_PREFIX = "theseus-sync-dirs-pki-";

/** Removes the throwaway keys of earlier runs whose process is gone (killed before it could clean up). */
async function sweepStalePki(): Promise<void> {
  let names: string[];
  try {
    names = await readdir(tmpdir());
  } catch {
    return;
  }
  for (const name of names) {
    const m = new RegExp(`^${PKI_PREFIX}(\\d+)-`).exec(name);
    if (m === null || Number(m[1]) === process.pid || processAlive(Number(m[1]))) continue;
    await rm(join(tmpdir(), name), { recursive: true, force: true }).catch(() => undefined);
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

function defaultStateDir(src: string, dst: string): string {
  const base = process.env["XDG_STATE_HOME"] ?? join(homedir(), ".local", "state");
  const key = createHash("sha256").update(`${src}\0${dst}`).digest("hex").slice(0, 16);
  return join(base, "theseus", "sync-dirs", key);
}

/**
 * A process's user + system CPU seconds so far, from /proc/PID/stat (fields 14 and 15, in clock ticks of 1/100 s,
 * USER_HZ on Linux); 0 once it is gone.
 */
function cpuSecondsOf(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) may hold spaces and parentheses: the fields after it start past the last ")".
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return 0;
  }
}

/** VmHWM: the process's peak resident set size so far (Linux). */
async function peakRss(pid: number): Promise<number> {
  try {
    const status = await readFile(`/proc/${pid}/status`, "utf8");
    const m = /VmHWM:\s+(\d+)\s+kB/.exec(status);
    return m === null ? 0 : Number(m[1]) * 1024;
  } catch {
    return 0;
  }
}
