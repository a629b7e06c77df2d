#!/usr/bin/env node
// theseus-agent: the daemon's entry point. Configuration from --config FILE, THESEUS_* variables and flags (flags win).
import { Command, Option } from "commander";
import { TheseusError, VERSION, createLogger, describeError } from "../common/index.js";
import { parseVolumeList, readConfigFile, resolveAgentOptions, settingsFromEnv, startAgent } from "./index.js";
import type { AgentSettings } from "./index.js";

interface Flags {
  config?: string;
  cluster?: string;
  listen?: string;
  volume: string[];
  pkiDir?: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  stateDir?: string;
  logLevel?: string;
  kubeconfig?: string;
  nodeName?: string;
  stopWithStdin?: boolean;
  healthListen?: string;
  volumeAccess?: string;
  syncState?: string;
  moverImage?: string;
  moverLimit?: string;
  mount?: string;
}

const program = new Command("theseus-agent")
  .description("The Theseus agent: serves this cluster's volumes to coordinators and to its peer agent over mTLS gRPC.")
  .version(VERSION)
  .option("-c, --config <file>", "YAML config file (keys: clusterName, listen, volumes, pkiDir, tlsCa, tlsCert, tlsKey, stateDir, logLevel, kubeconfig, nodeName, healthListen)")
  .option("--cluster <name>", "this cluster's name; must match the agent certificate (env THESEUS_CLUSTER)")
  .option("--listen <host:port>", "address to listen on (env THESEUS_LISTEN; default 0.0.0.0:7443)")
  .option("--volume <name=path>", "serve a directory as a named volume; repeatable (env THESEUS_VOLUMES=a=/x,b=/y)", (v: string, all: string[]) => [...all, v], [])
  .option("--pki-dir <dir>", "directory with ca.crt and agent-<cluster>.crt/.key (env THESEUS_PKI_DIR)")
  .option("--tls-ca <file>", "CA certificate (overrides --pki-dir)")
  .option("--tls-cert <file>", "agent certificate (overrides --pki-dir)")
  .option("--tls-key <file>", "agent key (overrides --pki-dir)")
  .option("--state-dir <dir>", "where the agent keeps its own state, and a volume's sync state when the volume cannot hold it (env THESEUS_STATE_DIR)")
  .option("--kubeconfig <file>", "this cluster's kubeconfig, for an agent outside the cluster (env THESEUS_KUBECONFIG); in a pod its service account is used")
  .option("--health-listen <host:port>", "plain HTTP port for /healthz, /readyz and /metrics (env THESEUS_HEALTH_LISTEN; default: not served)")
  .option("--node-name <name>", "the node whose volumes this agent reaches; holder pods are pinned there (env THESEUS_NODE_NAME)")
  .addOption(new Option("--volume-access <mode>", "how claims are reached: auto (local and hostPath directories on this machine directly, everything else through mover pods), direct, or mover (env THESEUS_VOLUME_ACCESS)").choices(["auto", "direct", "mover"]))
  .addOption(new Option("--sync-state <where>", "where volumes' sync state (hash cache, block lists) lives: volume (each volume's hidden .theseus-cache, found again by a restarted or rescheduled agent; read-only or nearly full volumes use --state-dir) or state-dir (env THESEUS_SYNC_STATE; default volume)").choices(["volume", "state-dir"]))
  .option("--mover-image <image>", "the image of mover pods: this agent's own (env THESEUS_MOVER_IMAGE; default theseus.local/agent)")
  .option("--mover-limit <n>", "mover pods running at once, the rest wait (env THESEUS_MOVER_LIMIT; default 4)")
  .option("--mount <dir>", "mover mode only: the claim's mount point, served as the volume \"data\" (a plain path, so that the kubelet's path rewriting of the local clusters reaches it)")
  .option("--stop-with-stdin", "stop when stdin closes: a tool that starts a throwaway agent (sync-dirs, the demo) keeps its stdin, so the agent dies with the tool, kill -9 included")
  .addOption(new Option("--log-level <level>", "log level (env THESEUS_LOG_LEVEL)").choices(["fatal", "error", "warn", "info", "debug", "trace", "silent"]))
  .addHelpText(
    "after",
    `
Examples:
  theseus-agent --cluster eu-1 --pki-dir ~/.theseus/pki --volume data=/srv/data --listen 0.0.0.0:7443
  theseus-agent --cluster eu-1 --pki-dir ~/.theseus/pki --kubeconfig ~/.kube/eu-1.yaml   # claims as NAMESPACE/CLAIM
  THESEUS_CLUSTER=eu-1 THESEUS_VOLUMES=data=/srv/data theseus-agent --config /etc/theseus/agent.yaml
  theseus-agent mover --cluster eu-1 --mount /data --tls-ca /tls/ca.crt ...   # what a mover pod runs

It logs JSON lines to stderr and stops gracefully on SIGTERM or SIGINT.`,
  );

/** Grace for in-flight rounds when the tool that started us died (--stop-with-stdin). */
const STDIN_GRACE_MS = 2000;

async function main(mode: "agent" | "mover"): Promise<void> {
  // `theseus-agent mover ...` takes the agent's flags: the word only switches the mode.
  program.parse(mode === "mover" ? process.argv.filter((_, i) => i !== 2) : process.argv);
  const flags = program.opts<Flags>();
  const fromFile: AgentSettings = flags.config === undefined ? {} : await readConfigFile(flags.config);
  const fromFlags: AgentSettings = {
    clusterName: flags.cluster,
    listen: flags.listen,
    volumes: flags.mount !== undefined ? { data: flags.mount } : flags.volume.length > 0 ? parseVolumeList(flags.volume, "--volume") : undefined,
    pkiDir: flags.pkiDir,
    tlsCa: flags.tlsCa,
    tlsCert: flags.tlsCert,
    tlsKey: flags.tlsKey,
    stateDir: flags.stateDir,
    logLevel: flags.logLevel,
    kubeconfig: flags.kubeconfig,
    nodeName: flags.nodeName,
    healthListen: flags.healthListen,
    volumeAccess: flags.volumeAccess,
    syncState: flags.syncState,
    moverImage: flags.moverImage,
    moverLimit: flags.moverLimit === undefined ? undefined : Number(flags.moverLimit),
    mode,
  };
  const options = resolveAgentOptions(fromFile, settingsFromEnv(process.env), fromFlags);
  const logger = createLogger({ level: options.logLevel, name: "theseus-agent" });
  const agent = await startAgent(options, { logger });
  let stopping = false;
  const stop = (signal: string, graceMs?: number): void => {
    if (stopping) {
      logger.warn({ signal }, "second signal: exiting now");
      process.exit(130);
    }
    stopping = true;
    logger.info({ signal }, "stopping");
    agent.close(graceMs).then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: error }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
  if (flags.stopWithStdin === true) {
    // Our parent is gone (or closed the pipe on purpose): nobody waits for our rounds, so a short grace is enough
    // for them to checkpoint what they applied.
    process.stdin.on("error", () => undefined);
    process.stdin.once("end", () => {
      if (!stopping) stop("stdin closed", STDIN_GRACE_MS);
    });
    process.stdin.resume();
  }
  // Readiness line, printed once signals are handled, on stdout, for scripts and the local clusters' process supervisor.
  process.stdout.write(`${JSON.stringify({ listening: agent.address, cluster: options.clusterName, ...(agent.healthAddress === undefined ? {} : { health: agent.healthAddress }) })}\n`);
}

// `theseus-agent hold`: the holder pod Stage starts so that a WaitForFirstConsumer claim binds. It only mounts the
// claims; it waits for SIGTERM and exits.
function hold(): void {
  const exit = (): never => process.exit(0);
  process.on("SIGTERM", exit);
  process.on("SIGINT", exit);
  setInterval(() => undefined, 1 << 30);
}

(process.argv[2] === "hold" ? Promise.resolve(hold()) : main(process.argv[2] === "mover" ? "mover" : "agent")).catch((error: unknown) => {
  process.stderr.write(`${describeError(error)}\n`);
  process.exit(TheseusError.from(error).code === "invalid_argument" ? 2 : 1);
});
