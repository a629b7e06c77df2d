// The agent's configuration, from a YAML file, environment variables and flags (in increasing precedence), validated
// once into a fully defaulted AgentOptions (STYLE.md habit 6). Every error names the setting and says how to fix it.
import { readFile } from "node:fs/promises";
import { isAbsolute, join, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { TheseusError, systemErrorCode } from "../common/index.js";
import type { LogLevel } from "../common/index.js";
import { KEEPALIVE_TIME_MS, validateIdentityName } from "../rpc/index.js";
import type { ClusterSource, MoverSettings, VolumeAccessMode } from "./cluster/index.js";
import { CACHE_DIR } from "./sync/index.js";
import type { SyncStatePlacement } from "./sync/index.js";

export interface AgentOptions {
  readonly clusterName: string;
  readonly listenHost: string;
  readonly listenPort: number;
  /** Volume name -> absolute root directory. */
  readonly volumes: ReadonlyMap<string, string>;
  readonly tls: { readonly caPath: string; readonly certPath: string; readonly keyPath: string };
  /**
   * Where the agent keeps its own state (sessions), and a volume's sync state when the volume cannot hold it
   * (read-only, nearly full; else it is in the volume's reserved cache directory: agent/sync/registry.ts).
   */
  readonly stateDir: string;
  readonly logLevel: LogLevel;
  readonly sessionTtlMs: number;
  readonly shutdownGraceMs: number;
  /** Where the agent's own Kubernetes cluster comes from: a kubeconfig, its pod's service account, or none. */
  readonly cluster: ClusterSource;
  /** The node this agent runs on (holder pods are pinned there); undefined: any node reaches the volumes. */
  readonly nodeName: string | undefined;
  /** How long binding claims, deletions, pods going away and readiness may take when a call does not say. */
  readonly kubeTimeoutMs: number;
  /** The agent's own namespace in its cluster: its migrations' records and leases live there. */
  readonly namespace: string;
  /** The plain HTTP port for /healthz, /readyz and /metrics; undefined: not served. */
  readonly health: { readonly host: string; readonly port: number } | undefined;
  /** How often the TLS files are read for a rotation. */
  readonly tlsReloadIntervalMs: number;
  /** HTTP/2 keepalive of its server: a client connection unanswered for 4x this long is dropped with its calls. */
  readonly keepaliveMs: number;
  /** How claims are reached: auto (direct where the directory is here, else a mover pod), direct, or mover. */
  readonly volumeAccess: VolumeAccessMode;
  /** Where volumes' sync state lives: in each volume (default), or always in stateDir (agent/sync/registry.ts). */
  readonly syncState: SyncStatePlacement;
  readonly movers: MoverSettings;
  /**
   * "agent", or "mover": `theseus-agent mover`, the pod that serves one mounted claim for one round (no cluster, no
   * migrations, its services admit only its own agent's identity, sync state in the volume's cache directory).
   */
  readonly mode: "agent" | "mover";
}

/** The raw, optional settings each source may supply; strings as a user typed them. */
export interface AgentSettings {
  clusterName?: string | undefined;
  listen?: string | undefined;
  volumes?: Record<string, string> | undefined;
  pkiDir?: string | undefined;
  tlsCa?: string | undefined;
  tlsCert?: string | undefined;
  tlsKey?: string | undefined;
  stateDir?: string | undefined;
  logLevel?: string | undefined;
  sessionTtlSeconds?: number | undefined;
  kubeconfig?: string | undefined;
  /** Set from KUBERNETES_SERVICE_HOST: the agent runs in a pod. */
  inCluster?: boolean | undefined;
  nodeName?: string | undefined;
  namespace?: string | undefined;
  /** HOST:PORT of the health and metrics port. */
  healthListen?: string | undefined;
  /** THESEUS_KEEPALIVE_MS only: tests freeze a peer and need it noticed in seconds, not a minute. */
  keepaliveMs?: number | undefined;
  volumeAccess?: string | undefined;
  /** "volume" (default) or "state-dir". */
  syncState?: string | undefined;
  moverImage?: string | undefined;
  moverLimit?: number | undefined;
  mode?: "agent" | "mover" | undefined;
}

const LOG_LEVELS: readonly LogLevel[] = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];
const DEFAULT_PORT = 7443;

/** Reads a YAML config file (keys as in AgentSettings; `volumes` a map of name to path). */
export async function readConfigFile(path: string): Promise<AgentSettings> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    const hint = systemErrorCode(error) === "ENOENT" ? "check the --config path" : undefined;
    throw new TheseusError("invalid_argument", `cannot read the config file ${path}`, { cause: error, hint });
  }
  let data: unknown;
  try {
    data = parseYaml(text);
  } catch (error) {
    throw new TheseusError("invalid_argument", `${path} is not valid YAML`, { cause: error });
  }
  if (data === null || data === undefined) return {};
  if (typeof data !== "object" || Array.isArray(data)) throw new TheseusError("invalid_argument", `${path} must hold a YAML mapping`);
  const known = new Set(["clusterName", "listen", "volumes", "pkiDir", "tlsCa", "tlsCert", "tlsKey", "stateDir", "logLevel", "sessionTtlSeconds", "kubeconfig", "nodeName", "namespace", "healthListen", "volumeAccess", "syncState", "moverImage", "moverLimit"]);
  for (const key of Object.keys(data)) {
    if (!known.has(key)) throw new TheseusError("invalid_argument", `${path}: unknown setting "${key}"`, { hint: `known settings: ${[...known].join(", ")}` });
  }
  const settings = data as Record<string, unknown>;
  const volumes = settings["volumes"];
  if (volumes !== undefined && (typeof volumes !== "object" || volumes === null || Array.isArray(volumes) || Object.values(volumes).some((v) => typeof v !== "string"))) {
    throw new TheseusError("invalid_argument", `${path}: "volumes" must map volume names to directory paths`);
  }
  const str = (key: string): string | undefined => {
    const value = settings[key];
    if (value === undefined) return undefined;
    if (typeof value !== "string" && typeof value !== "number") throw new TheseusError("invalid_argument", `${path}: "${key}" must be a string`);
    return String(value);
  };
  const ttl = settings["sessionTtlSeconds"];
  if (ttl !== undefined && typeof ttl !== "number") throw new TheseusError("invalid_argument", `${path}: "sessionTtlSeconds" must be a number`);
  const moverLimit = settings["moverLimit"];
  if (moverLimit !== undefined && typeof moverLimit !== "number") throw new TheseusError("invalid_argument", `${path}: "moverLimit" must be a number`);
  return {
    clusterName: str("clusterName"),
    listen: str("listen"),
    volumes: volumes as Record<string, string> | undefined,
    pkiDir: str("pkiDir"),
    tlsCa: str("tlsCa"),
    tlsCert: str("tlsCert"),
    tlsKey: str("tlsKey"),
    stateDir: str("stateDir"),
    logLevel: str("logLevel"),
    sessionTtlSeconds: ttl,
    kubeconfig: str("kubeconfig"),
    nodeName: str("nodeName"),
    namespace: str("namespace"),
    healthListen: str("healthListen"),
    volumeAccess: str("volumeAccess"),
    syncState: str("syncState"),
    moverImage: str("moverImage"),
    moverLimit,
  };
}

/** Settings from THESEUS_* environment variables; THESEUS_VOLUMES is "name=/path,other=/path". */
export function settingsFromEnv(env: NodeJS.ProcessEnv): AgentSettings {
  const ttl = env["THESEUS_SESSION_TTL_SECONDS"];
  return {
    clusterName: env["THESEUS_CLUSTER"],
    listen: env["THESEUS_LISTEN"],
    volumes: env["THESEUS_VOLUMES"] === undefined ? undefined : parseVolumeList(env["THESEUS_VOLUMES"].split(","), "THESEUS_VOLUMES"),
    pkiDir: env["THESEUS_PKI_DIR"],
    tlsCa: env["THESEUS_TLS_CA"],
    tlsCert: env["THESEUS_TLS_CERT"],
    tlsKey: env["THESEUS_TLS_KEY"],
    stateDir: env["THESEUS_STATE_DIR"],
    logLevel: env["THESEUS_LOG_LEVEL"],
    sessionTtlSeconds: ttl === undefined ? undefined : Number(ttl),
    kubeconfig: env["THESEUS_KUBECONFIG"],
    inCluster: env["KUBERNETES_SERVICE_HOST"] === undefined ? undefined : true,
    nodeName: env["THESEUS_NODE_NAME"],
    namespace: env["THESEUS_NAMESPACE"],
    healthListen: env["THESEUS_HEALTH_LISTEN"],
    keepaliveMs: env["THESEUS_KEEPALIVE_MS"] === undefined ? undefined : Number(env["THESEUS_KEEPALIVE_MS"]),
    volumeAccess: env["THESEUS_VOLUME_ACCESS"],
    syncState: env["THESEUS_SYNC_STATE"],
    moverImage: env["THESEUS_MOVER_IMAGE"],
    moverLimit: env["THESEUS_MOVER_LIMIT"] === undefined ? undefined : Number(env["THESEUS_MOVER_LIMIT"]),
  };
}

/** Parses NAME=PATH entries (flags or env). */
export function parseVolumeList(entries: readonly string[], source: string): Record<string, string> {
  const volumes: Record<string, string> = {};
  for (const entry of entries.filter((e) => e.trim() !== "")) {
    const eq = entry.indexOf("=");
    if (eq <= 0 || eq === entry.length - 1) {
      throw new TheseusError("invalid_argument", `${source}: "${entry}" is not NAME=PATH`, { hint: "for example --volume data=/var/lib/app" });
    }
    volumes[entry.slice(0, eq).trim()] = entry.slice(eq + 1).trim();
  }
  return volumes;
}

/** Merges the sources (later wins, volumes merge by name) and validates the result. */
export function resolveAgentOptions(...sources: readonly AgentSettings[]): AgentOptions {
  const merged: AgentSettings = {};
  const volumes: Record<string, string> = {};
  for (const source of sources) {
    for (const [key, value] of Object.entries(source)) {
      if (value !== undefined && key !== "volumes") (merged as Record<string, unknown>)[key] = value;
    }
    Object.assign(volumes, source.volumes ?? {});
  }

  if (merged.clusterName === undefined) {
    throw new TheseusError("invalid_argument", "the agent needs a cluster name", { hint: "pass --cluster NAME, set THESEUS_CLUSTER or clusterName in the config file" });
  }
  const clusterName = validateIdentityName(merged.clusterName, "cluster name");
  const { host, port } = parseListen(merged.listen ?? `0.0.0.0:${DEFAULT_PORT}`);

  const volumeMap = new Map<string, string>();
  for (const [name, path] of Object.entries(volumes)) {
    validateIdentityName(name, "volume name");
    if (!isAbsolute(path)) throw new TheseusError("invalid_argument", `volume "${name}": "${path}" is not an absolute path`, { hint: "volume roots must be absolute directories" });
    volumeMap.set(name, resolve(path));
  }

  const pkiDir = merged.pkiDir;
  const leaf = pkiDir === undefined ? undefined : join(pkiDir, `agent-${clusterName}`);
  const tls = {
    caPath: merged.tlsCa ?? (pkiDir === undefined ? undefined : join(pkiDir, "ca.crt")),
    certPath: merged.tlsCert ?? (leaf === undefined ? undefined : `${leaf}.crt`),
    keyPath: merged.tlsKey ?? (leaf === undefined ? undefined : `${leaf}.key`),
  };
  if (tls.caPath === undefined || tls.certPath === undefined || tls.keyPath === undefined) {
    throw new TheseusError("invalid_argument", "the agent needs its TLS material", {
      hint: "pass --pki-dir DIR (holding ca.crt and agent-<cluster>.crt/.key from `theseus certs`), or --tls-ca, --tls-cert and --tls-key",
    });
  }

  const logLevel = (merged.logLevel ?? "info") as LogLevel;
  if (!LOG_LEVELS.includes(logLevel)) throw new TheseusError("invalid_argument", `unknown log level "${merged.logLevel ?? ""}"`, { hint: `use one of ${LOG_LEVELS.join(", ")}` });
  const ttl = merged.sessionTtlSeconds ?? 3600;
  if (!Number.isFinite(ttl) || ttl <= 0) throw new TheseusError("invalid_argument", `session TTL must be a positive number of seconds, not ${ttl}`);

  const keepaliveMs = merged.keepaliveMs ?? KEEPALIVE_TIME_MS;
  if (!Number.isInteger(keepaliveMs) || keepaliveMs < 100) {
    throw new TheseusError("invalid_argument", `THESEUS_KEEPALIVE_MS must be a whole number of milliseconds of at least 100, not ${String(merged.keepaliveMs)}`);
  }

  const volumeAccess = (merged.volumeAccess ?? "auto") as VolumeAccessMode;
  if (!["auto", "direct", "mover"].includes(volumeAccess)) {
    throw new TheseusError("invalid_argument", `volume access "${merged.volumeAccess ?? ""}" is not auto, direct or mover`, {
      hint: "auto reads local and hostPath volumes directly and everything else through mover pods; mover forces pods (tests)",
    });
  }
  const moverLimit = merged.moverLimit ?? 4;
  if (!Number.isInteger(moverLimit) || moverLimit < 1 || moverLimit > 64) {
    throw new TheseusError("invalid_argument", `the mover limit must be a whole number from 1 to 64, not ${String(merged.moverLimit)}`, { hint: "--mover-limit 4 runs at most four mover pods at once" });
  }
  const syncState = (merged.syncState ?? "volume") as SyncStatePlacement;
  if (syncState !== "volume" && syncState !== "state-dir") {
    throw new TheseusError("invalid_argument", `sync state placement "${merged.syncState ?? ""}" is not volume or state-dir`, {
      hint: "--sync-state volume keeps each volume's sync state in the volume (the default); state-dir keeps it in --state-dir",
    });
  }
  const mode = merged.mode ?? "agent";
  const firstVolume = [...volumeMap.values()][0];
  if (mode === "mover" && (volumeMap.size !== 1 || firstVolume === undefined)) {
    throw new TheseusError("invalid_argument", "a mover serves exactly one volume", { hint: "theseus-agent mover --mount /data ..." });
  }

  const kubeconfig = merged.kubeconfig === undefined || merged.kubeconfig === "" ? undefined : resolve(merged.kubeconfig);
  // A mover never talks to the API server (its pod mounts no token); in a pod KUBERNETES_SERVICE_HOST is set anyway.
  const cluster: ClusterSource = mode === "mover" ? { kind: "none" } : kubeconfig !== undefined ? { kind: "kubeconfig", path: kubeconfig } : merged.inCluster === true ? { kind: "in-cluster" } : { kind: "none" };

  return {
    clusterName,
    listenHost: host,
    listenPort: port,
    volumes: volumeMap,
    tls: { caPath: tls.caPath, certPath: tls.certPath, keyPath: tls.keyPath },
    // A mover's state lives in its volume's reserved cache directory, where the next mover of the claim finds it.
    stateDir: firstVolume !== undefined && mode === "mover" ? join(firstVolume, CACHE_DIR) : resolve(merged.stateDir ?? join(process.env["THESEUS_HOME"] ?? "/var/lib/theseus", "agent", clusterName)),
    logLevel,
    sessionTtlMs: ttl * 1000,
    // A mover's pod has 5 s from SIGTERM to SIGKILL; its round checkpoints on cancellation.
    shutdownGraceMs: mode === "mover" ? 2000 : 10_000,
    cluster,
    nodeName: merged.nodeName === undefined || merged.nodeName === "" ? undefined : merged.nodeName,
    kubeTimeoutMs: 300_000,
    namespace: validateIdentityName(merged.namespace ?? "theseus-system", "agent namespace"),
    health: merged.healthListen === undefined || merged.healthListen === "" ? undefined : parseListen(merged.healthListen, "health listen address"),
    tlsReloadIntervalMs: 2000,
    keepaliveMs,
    volumeAccess,
    syncState,
    movers: { image: merged.moverImage ?? "theseus.local/agent", limit: moverLimit, startTimeoutMs: 120_000 },
    mode,
  };
}

function parseListen(listen: string, what = "listen address"): { host: string; port: number } {
  const match = /^(.*):(\d+)$/.exec(listen);
  const port = Number(match?.[2]);
  if (match === null || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new TheseusError("invalid_argument", `${what} "${listen}" is not HOST:PORT`, { hint: "for example 0.0.0.0:7443, or 127.0.0.1:0 for any free port" });
  }
  return { host: (match[1] ?? "").replace(/^\[(.*)\]$/, "$1") || "0.0.0.0", port };
}
