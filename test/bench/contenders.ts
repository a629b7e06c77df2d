// The contenders. Each syncs a source tree into its own target and reports wall time, peak RSS per side and its own
// view of the bytes it moved; the harness adds the wire bytes, counted for everyone the same way (see netns.ts), on the
// connection each contender names as its wire.
//
// rsync through stunnel is the data path Crane, MTC and VolSync (rsync-tls) deploy: rsync's daemon protocol inside
// TLS 1.3 with mutual certificate verification (verify = 2 against one CA). As deployed, the legs between rsync and
// stunnel are plain-text loopback TCP on each side and only the stunnel-to-stunnel connection is the wire. Here rsync
// starts its client tunnel itself (RSYNC_CONNECT_PROG, which rsync joins with a loopback TCP pair) and the stunnel
// server exec's `rsync --daemon` in inetd mode per connection (the daemon forks per connection anyway): the same legs
// and bytes as the sidecar layout, with no listening ports to race for and one measured process per side.
import { spawn } from "node:child_process";
import type { ChildProcessWithoutNullStreams } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { check, GNU_TIME, readMeasured, run, startServer, TIME_FORMAT, underTime } from "./exec.js";
import type { Measured } from "./exec.js";
import type { WireSelector } from "./netns.js";
import { readTheseusStats } from "./theseus-stats.js";
import type { TheseusStats } from "./theseus-stats.js";

export const CONTENDER_IDS = ["theseus", "rsync-tls", "rsync-tls-zstd", "rsync", "tar"] as const;
export type ContenderId = (typeof CONTENDER_IDS)[number];

/**
 * `lost-cache`: another mutation, then an incremental round after the source side lost its sync state (a new mover
 * pod, an agent restarted on another node): Theseus's quick check against rsync, which keeps no state at all.
 */
export const PHASES = ["full", "incremental", "no-change", "lost-cache"] as const;
export type Phase = (typeof PHASES)[number];

export interface RoundInput {
  readonly src: string;
  readonly dst: string;
  /** Scratch space for this round's configuration files; the Theseus target state lives beside the target. */
  readonly workDir: string;
  readonly stateDir: string;
}

export interface PeakRss {
  readonly source: number | undefined;
  readonly target: number | undefined;
}

export interface RoundResult {
  /** The figure compared: the client's wall time, or for Theseus the round's own duration (see README). */
  readonly wallMs: number;
  /** The client command's wall time, start-up included. */
  readonly processWallMs: number;
  /** Both directions, TCP/IP headers included, on the contender's wire; undefined without a private namespace. */
  readonly wireBytes: number | undefined;
  /** What the tool says it moved (rsync --stats sent + received, Theseus wireBytes): a cross-check. */
  readonly toolWireBytes: number | undefined;
  readonly peakRss: PeakRss;
  /** user + system CPU seconds of both sides (for Theseus: both agents during the round; a run's first includes their start-up). */
  readonly cpuSeconds: number | undefined;
  readonly theseus?: TheseusStats;
}

/** Reads the bytes the wire has carried so far, or undefined when the benchmark is not isolated. */
export type WireMeter = () => Promise<number | undefined>;

export interface Contender {
  readonly id: ContenderId;
  readonly label: string;
  readonly phases: readonly Phase[];
  /** The traffic that would cross the network between clusters, counted as wire bytes and shaped on the shaped link. */
  readonly wire: WireSelector;
  round(input: RoundInput, wire: WireMeter): Promise<RoundResult>;
  /** Forgets what the source side kept between rounds (the lost-cache phase); contenders that keep nothing have none. */
  loseSourceState?(input: RoundInput): Promise<void>;
  /** Stops what the contender keeps running between rounds (Theseus's agents): at the end of a run, and of the bench. */
  release?(): Promise<void>;
}

export interface ContenderSetup {
  readonly workDir: string;
  readonly theseusCli: string;
  /** Inside the private namespace ports are ours; outside, pick free ones. */
  readonly isolated: boolean;
}

export const DEFAULT_THESEUS_CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../coordinator/main.js");

/** rsync's options for every rsync contender: the fidelity Theseus also keeps (owners, modes, times, links, holes). */
const RSYNC_ARGS = ["--archive", "--hard-links", "--sparse", "--delete", "--numeric-ids", "--stats"];
const ZSTD_ARGS = ["--compress", "--compress-choice=zstd", "--compress-level=1"];

/** Returns the contenders that can run here, and a reason for each one that cannot. */
export async function createContenders(
  ids: readonly ContenderId[],
  setup: ContenderSetup,
): Promise<{ contenders: Contender[]; skipped: Array<{ id: ContenderId; reason: string }> }> {
  const contenders: Contender[] = [];
  const skipped: Array<{ id: ContenderId; reason: string }> = [];
  let certs: Certs | undefined;
  let nextPort = 28730;
  const port = async (): Promise<number> => (setup.isolated ? nextPort++ : freePort());
  for (const id of ids) {
    switch (id) {
      case "theseus": {
        const reason = await theseusUnavailable(setup.theseusCli);
        if (reason === undefined) contenders.push(theseusContender(setup.theseusCli));
        else skipped.push({ id, reason });
        break;
      }
      case "rsync-tls":
      case "rsync-tls-zstd":
        certs ??= await makeCerts(path.join(setup.workDir, "pki"));
        contenders.push(rsyncTlsContender(id, certs, await port()));
        break;
      case "rsync":
        contenders.push(rsyncPlainContender(await port()));
        break;
      case "tar":
        contenders.push(tarContender());
        break;
    }
  }
  return { contenders, skipped };
}

async function theseusUnavailable(cli: string): Promise<string | undefined> {
  if (!existsSync(cli)) return `sync-dirs not built (${cli} is missing)`;
  // Commander answers `unknown-command --help` with the program's help and exit 0: look for the command's own usage.
  const help = await run(process.execPath, [cli, "sync-dirs", "--help"]);
  return help.code === 0 && /sync-dirs/.test(help.stdout) ? undefined : "sync-dirs not built (the CLI has no sync-dirs command yet)";
}

/**
 * Theseus runs as it does through a migration: its agents stay up from round to round (`sync-dirs
 * --rounds-from-stdin`), so the incremental (final) round and the round with no change are rounds of long-running
 * agents, and only the first round of a run pays for their start-up. Losing the source's state stops them (a new
 * mover pod, an agent restarted elsewhere): that round starts new agents, as it would in a cluster.
 */
function theseusContender(cli: string): Contender {
  let session: TheseusSession | undefined;
  const release = async (): Promise<void> => {
    await session?.close();
    session = undefined;
  };
  return {
    id: "theseus",
    label: "Theseus sync-dirs (mTLS gRPC)",
    phases: PHASES,
    wire: "all", // the agents talk only to each other (and to their own coordinator: counted too, it is small)
    async loseSourceState(input) {
      await release();
      // sync-dirs keeps each agent's state under --state-dir (coordinator/cli/sync-dirs.ts).
      await rm(path.join(input.stateDir, "source-agent"), { recursive: true, force: true });
    },
    async round(input, wire) {
      await mkdir(input.stateDir, { recursive: true });
      const key = `${input.src}\0${input.dst}\0${input.stateDir}`;
      if (session !== undefined && session.key !== key) await release();
      const before = await wire();
      const started = performance.now();
      let stdout: string;
      try {
        if (session === undefined) {
          session = new TheseusSession(key, cli, input);
          stdout = await session.next();
        } else stdout = await session.round();
      } catch (error) {
        await release();
        throw error;
      }
      const processWallMs = performance.now() - started;
      const after = await wire();
      const stats = readTheseusStats(stdout);
      return {
        wallMs: stats.durationMs ?? processWallMs,
        processWallMs,
        wireBytes: delta(before, after),
        toolWireBytes: stats.wireBytes,
        peakRss: { source: stats.peakRssSource, target: stats.peakRssTarget },
        cpuSeconds: stats.cpuSeconds,
        theseus: stats,
      };
    },
    release,
  };
}

/** One `theseus sync-dirs --rounds-from-stdin` process: its first round runs at once, each line written runs another. */
class TheseusSession {
  private readonly child: ChildProcessWithoutNullStreams;
  private lines: string[] = [];
  private partial = "";
  private stderr = "";
  private waiting: { resolve: (line: string) => void; reject: (error: Error) => void } | undefined;
  private exited: Error | undefined;

  constructor(
    readonly key: string,
    cli: string,
    input: RoundInput,
  ) {
    this.child = spawn(process.execPath, [cli, "sync-dirs", input.src, input.dst, "--json", "--state-dir", input.stateDir, "--rounds-from-stdin"]);
    this.child.stdout.setEncoding("utf8");
    this.child.stdout.on("data", (chunk: string) => {
      const parts = (this.partial + chunk).split("\n");
      this.partial = parts.pop() ?? "";
      for (const line of parts) if (line.trimStart().startsWith("{")) this.lines.push(line);
      this.deliver();
    });
    this.child.stderr.setEncoding("utf8");
    this.child.stderr.on("data", (chunk: string) => (this.stderr = (this.stderr + chunk).slice(-4000)));
    this.child.on("close", (code, signal) => {
      this.exited = new Error(`theseus sync-dirs exited (${signal ?? code}) before its round's result: ${this.stderr.trim() || "no output"}`);
      this.deliver();
    });
  }

  /** The next round's result line (the first round's, right after start). */
  next(): Promise<string> {
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
      this.deliver();
    });
  }

  round(): Promise<string> {
    const result = this.next();
    this.child.stdin.write("\n");
    return result;
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const closed = new Promise<void>((resolve) => this.child.once("close", () => resolve()));
    this.child.stdin.end();
    // A session stuck in a round must not hang the bench: SIGTERM cancels sync-dirs, which stops its agents.
    const stuck = setTimeout(() => this.child.kill("SIGTERM"), 30_000);
    await closed;
    clearTimeout(stuck);
  }

  private deliver(): void {
    const w = this.waiting;
    if (w === undefined) return;
    const line = this.lines.shift();
    if (line !== undefined) {
      this.waiting = undefined;
      w.resolve(line);
    } else if (this.exited !== undefined) {
      this.waiting = undefined;
      w.reject(this.exited);
    }
  }
}

function rsyncTlsContender(id: "rsync-tls" | "rsync-tls-zstd", certs: Certs, port: number): Contender {
  const zstd = id === "rsync-tls-zstd";
  return {
    id,
    label: zstd ? "rsync + zstd-1 through stunnel (mTLS)" : "rsync through stunnel (mTLS)",
    phases: PHASES,
    wire: { port },
    async round(input, wire) {
      const rsyncdConf = await writeRsyncdConf(input.workDir, input.dst);
      const serverConf = path.join(input.workDir, "stunnel-server.conf");
      await writeFile(serverConf, stunnelConf([
        `cert = ${certs.serverCert}`, `key = ${certs.serverKey}`, `CAfile = ${certs.ca}`, "verify = 2",
        "[rsync]", `accept = 127.0.0.1:${port}`, "exec = /usr/bin/rsync", `execArgs = rsync --daemon --config=${rsyncdConf}`,
      ]));
      const clientConf = path.join(input.workDir, "stunnel-client.conf");
      await writeFile(clientConf, stunnelConf([
        "client = yes", `cert = ${certs.clientCert}`, `key = ${certs.clientKey}`, `CAfile = ${certs.ca}`, "verify = 2",
        // No service section and no accept: inetd mode, the tunnel is stdin/stdout of the process rsync started.
        "checkHost = rsync-server", `connect = 127.0.0.1:${port}`,
      ]));
      const server = await startServer(id, input.workDir, "stunnel", [serverConf], port);
      try {
        return await rsyncClient(input, wire, [...RSYNC_ARGS, ...(zstd ? ZSTD_ARGS : [])], "rsync://127.0.0.1/volume/", {
          ...process.env,
          RSYNC_CONNECT_PROG: `stunnel ${clientConf}`,
        }, () => server.stop());
      } catch (error) {
        await server.stop();
        throw error;
      }
    },
  };
}

function rsyncPlainContender(port: number): Contender {
  return {
    id: "rsync",
    label: "rsync daemon, no TLS (reference)",
    phases: PHASES,
    wire: { port },
    async round(input, wire) {
      const conf = await writeRsyncdConf(input.workDir, input.dst);
      const server = await startServer("rsyncd", input.workDir, "rsync", [
        "--daemon", "--no-detach", `--config=${conf}`, "--address=127.0.0.1", `--port=${port}`,
      ], port);
      try {
        return await rsyncClient(input, wire, RSYNC_ARGS, `rsync://127.0.0.1:${port}/volume/`, process.env, () => server.stop());
      } catch (error) {
        await server.stop();
        throw error;
      }
    },
  };
}

async function rsyncClient(
  input: RoundInput,
  wire: WireMeter,
  rsyncArgs: readonly string[],
  url: string,
  env: NodeJS.ProcessEnv,
  stopServer: () => Promise<Measured>,
): Promise<RoundResult> {
  const rssFile = path.join(input.workDir, "rsync-client.rss");
  const [cmd, args] = underTime(rssFile, "rsync", [...rsyncArgs, `${input.src}/`, url]);
  const before = await wire();
  const finished = await run(cmd, args, { env });
  const after = await wire();
  const server = await stopServer();
  check("rsync", finished);
  const client = await readMeasured(rssFile);
  return {
    wallMs: finished.wallMs,
    processWallMs: finished.wallMs,
    wireBytes: delta(before, after),
    toolWireBytes: rsyncStat(finished.stdout, "Total bytes sent") + rsyncStat(finished.stdout, "Total bytes received"),
    peakRss: { source: client.peakRssBytes, target: server.peakRssBytes },
    cpuSeconds: sum(client.cpuSeconds, server.cpuSeconds),
  };
}

function tarContender(): Contender {
  return {
    id: "tar",
    label: "tar | tar (local copy limit)",
    phases: ["full"], // tar has no notion of a round: it would copy everything again
    wire: "none",
    async round(input) {
      const sourceRss = path.join(input.workDir, "tar-create.rss");
      const targetRss = path.join(input.workDir, "tar-extract.rss");
      await mkdir(input.dst, { recursive: true });
      const script =
        `${GNU_TIME} "${TIME_FORMAT}" --output="$1" tar -C "$3" --sparse --numeric-owner -cf - . | ` +
        `${GNU_TIME} "${TIME_FORMAT}" --output="$2" tar -C "$4" --numeric-owner -xpf -`;
      const finished = check("tar | tar", await run("bash", ["-o", "pipefail", "-c", script, "bash", sourceRss, targetRss, input.src, input.dst]));
      const create = await readMeasured(sourceRss);
      const extract = await readMeasured(targetRss);
      return {
        wallMs: finished.wallMs,
        processWallMs: finished.wallMs,
        wireBytes: 0,
        toolWireBytes: 0,
        peakRss: { source: create.peakRssBytes, target: extract.peakRssBytes },
        cpuSeconds: sum(create.cpuSeconds, extract.cpuSeconds),
      };
    },
  };
}

async function writeRsyncdConf(workDir: string, dst: string): Promise<string> {
  await mkdir(dst, { recursive: true });
  const file = path.join(workDir, "rsyncd.conf");
  // uid/gid 0 as the peers' movers run (privileged, to keep owners); no chroot, so that no extra setup skews timings.
  await writeFile(file, [
    "use chroot = no", "uid = 0", "gid = 0", "numeric ids = yes", `log file = ${path.join(workDir, "rsyncd.log")}`,
    // Without chroot rsyncd "munges" symlinks (prefixes /rsyncd-munged/) unless told not to: the copy would be wrong.
    "[volume]", `path = ${dst}`, "read only = no", "munge symlinks = no", "",
  ].join("\n"));
  return file;
}

function stunnelConf(lines: readonly string[]): string {
  // debug = 3 logs errors only: stunnel's per-connection notices would cost time in the measured path.
  return ["foreground = yes", "pid =", "debug = 3", ...lines, ""].join("\n");
}

function rsyncStat(output: string, label: string): number {
  const match = new RegExp(`^${label}: ([\\d,.]+)`, "m").exec(output);
  return match?.[1] === undefined ? 0 : Number(match[1].replace(/[,.]/g, ""));
}

function delta(before: number | undefined, after: number | undefined): number | undefined {
  return before === undefined || after === undefined ? undefined : after - before;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

interface Certs {
  readonly ca: string;
  readonly serverCert: string;
  readonly serverKey: string;
  readonly clientCert: string;
  readonly clientKey: string;
}

/** A throwaway CA and a server and a client certificate (ECDSA P-256, as cert-manager issues by default). */
async function makeCerts(dir: string): Promise<Certs> {
  await mkdir(dir, { recursive: true });
  const f = (name: string): string => path.join(dir, name);
  const openssl = async (what: string, args: string[]): Promise<void> => {
    check(`openssl ${what}`, await run("openssl", args, { cwd: dir }));
  };
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  await openssl("ca", ["req", "-x509", ...ec, "-keyout", f("ca.key"), "-out", f("ca.crt"), "-days", "7", "-subj", "/CN=theseus-bench-ca"]);
  for (const name of ["rsync-server", "rsync-client"]) {
    await openssl(`${name} request`, ["req", ...ec, "-keyout", f(`${name}.key`), "-out", f(`${name}.csr`), "-subj", `/CN=${name}`]);
    await writeFile(f(`${name}.ext`), `subjectAltName=DNS:${name}\n`);
    await openssl(`${name} certificate`, [
      "x509", "-req", "-in", f(`${name}.csr`), "-CA", f("ca.crt"), "-CAkey", f("ca.key"), "-CAcreateserial",
      "-out", f(`${name}.crt`), "-days", "7", "-extfile", f(`${name}.ext`),
    ]);
  }
  return {
    ca: f("ca.crt"),
    serverCert: f("rsync-server.crt"), serverKey: f("rsync-server.key"),
    clientCert: f("rsync-client.crt"), clientKey: f("rsync-client.key"),
  };
}

/** Both sides' CPU seconds; undefined unless both were measured. */
function sum(a: number | undefined, b: number | undefined): number | undefined {
  return a === undefined || b === undefined ? undefined : a + b;
}
