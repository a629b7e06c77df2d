// Named agents, the way kubectl has contexts: `theseus agents add eu 10.0.0.5:7443` once, then `--from eu` everywhere.
// Kept under `agents:` in the coordinator's config file; every read validates the whole section, so a hand-edited
// mistake is reported with the file, line and key before any command acts on it.
import { homedir } from "node:os";
import { join } from "node:path";
import { TheseusError } from "../../common/index.js";
import { validateIdentityName } from "../../rpc/index.js";
import { readConfigText, updateConfigText } from "./config-file.js";
import type { ConfigText } from "./config-file.js";

export interface AgentEntry {
  readonly name: string;
  /** HOST:PORT as this machine reaches the agent. */
  readonly address: string;
  /** The cluster name the agent's certificate must carry. */
  readonly cluster: string;
  /** Registered by `theseus local up` (and removed by `local down`). */
  readonly local: boolean;
}

/** Where to dial an agent named on the command line, and whom to expect there. */
export interface AgentTarget {
  /** The registered name, or the address itself when the user gave HOST:PORT. */
  readonly name: string;
  readonly address: string;
  /** Undefined for a bare HOST:PORT: any agent certificate of the installation is accepted there. */
  readonly cluster?: string;
}

export interface AgentRegistry {
  /** The config file the registry lives in. */
  readonly path: string;
  list(): Promise<AgentEntry[]>;
  get(name: string): Promise<AgentEntry | undefined>;
  /** Adds (or, with replace, overwrites) one agent; `cluster` defaults to the name, `local` to false. */
  add(entry: AgentInput, options?: { readonly replace?: boolean }): Promise<AgentEntry>;
  /** Removes the agent; returns what was removed, undefined when there was none. */
  remove(name: string): Promise<AgentEntry | undefined>;
  /** An agent name from the registry, or HOST:PORT as is. */
  resolve(nameOrAddress: string): Promise<AgentTarget>;
}

export interface AgentInput {
  readonly name: string;
  readonly address: string;
  readonly cluster?: string;
  readonly local?: boolean;
}

export interface AgentRegistryOptions {
  /** Default: THESEUS_HOME/config.yaml (THESEUS_HOME defaults to ~/.theseus). */
  readonly configPath?: string;
}

export function defaultConfigPath(): string {
  return join(process.env["THESEUS_HOME"] ?? join(homedir(), ".theseus"), "config.yaml");
}

const TOP_LEVEL_KEYS = ["agents"];
const AGENT_KEYS = ["address", "cluster", "local"];

export function createAgentRegistry(options: AgentRegistryOptions = {}): AgentRegistry {
  const path = options.configPath ?? defaultConfigPath();
  const load = async (): Promise<AgentEntry[]> => agentsOf(await readConfigText(path));

  const registry: AgentRegistry = {
    path,
    list: load,
    async get(name) {
      return (await load()).find((a) => a.name === name);
    },
    async add(input, addOptions = {}) {
      const entry = validateInput(input);
      return updateConfigText(path, (config) => {
        const existing = agentsOf(config).find((a) => a.name === entry.name);
        if (existing !== undefined && addOptions.replace !== true) {
          throw new TheseusError("already_exists", `agent "${entry.name}" is already registered (${existing.address}, cluster ${existing.cluster}) in ${path}`, {
            hint: `pass --replace to overwrite it, or remove it first: theseus agents remove ${entry.name}`,
          });
        }
        const value: Record<string, unknown> = { address: entry.address, cluster: entry.cluster };
        if (entry.local) value["local"] = true;
        config.doc.setIn(["agents", entry.name], config.doc.createNode(value));
        return entry;
      });
    },
    async remove(name) {
      return updateConfigText(path, (config) => {
        const existing = agentsOf(config).find((a) => a.name === name);
        if (existing !== undefined) config.doc.deleteIn(["agents", name]);
        return existing;
      });
    },
    async resolve(nameOrAddress) {
      // Names are DNS labels, so a colon can only mean HOST:PORT.
      if (nameOrAddress.includes(":")) return { name: nameOrAddress, address: validateAddress(nameOrAddress, "the agent address") };
      const entry = await registry.get(nameOrAddress);
      if (entry === undefined) {
        const known = (await load()).map((a) => a.name);
        throw new TheseusError("not_found", `no agent named "${nameOrAddress}" in ${path}${known.length > 0 ? ` (known: ${known.join(", ")})` : ""}`, {
          hint: `add it with \`theseus agents add ${nameOrAddress} HOST:PORT\`, start a local cluster with its agent with \`theseus local up ${nameOrAddress}\`, or pass HOST:PORT`,
        });
      }
      return { name: entry.name, address: entry.address, cluster: entry.cluster };
    },
  };
  return registry;
}

function validateInput(input: AgentInput): AgentEntry {
  const name = validateIdentityName(input.name, "agent name");
  return {
    name,
    address: validateAddress(input.address, `the address of agent "${name}"`),
    cluster: validateIdentityName(input.cluster ?? name, `cluster name of agent "${name}"`),
    local: input.local ?? false,
  };
}

/** HOST:PORT with a port from 1 to 65535 (IPv6 hosts in brackets). */
export function validateAddress(address: string, what: string): string {
  const match = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(address);
  const port = Number(match?.[2]);
  if (match === null || port < 1 || port > 65535) {
    throw new TheseusError("invalid_argument", `${what} "${address}" is not HOST:PORT`, { hint: "for example 10.0.0.5:7443 or agent.eu.example.com:443" });
  }
  return address;
}

/** Validates the `agents:` section as a whole; every error names the file, the line and the key to fix. */
function agentsOf(config: ConfigText): AgentEntry[] {
  const data: unknown = config.doc.toJS();
  const fail = (keys: readonly string[], message: string, hint: string): never => {
    throw new TheseusError("invalid_argument", `${config.where(keys)}: ${keys.length === 0 ? "" : `${keys.join(".")}: `}${message}`, { hint: `${hint} (in ${config.path})` });
  };
  if (!isPlainObject(data)) return fail([], "the file must hold a YAML mapping", "start it with `agents:`");
  for (const key of Object.keys(data)) {
    if (!TOP_LEVEL_KEYS.includes(key)) fail([key], "unknown key", `known keys: ${TOP_LEVEL_KEYS.join(", ")}`);
  }
  const agents = data["agents"];
  if (agents === undefined || agents === null) return [];
  if (!isPlainObject(agents)) return fail(["agents"], "must map agent names to {address, cluster}", "for example `agents: {eu: {address: 10.0.0.5:7443}}`");
  return Object.entries(agents).map(([name, value]) => {
    const at = ["agents", name];
    try {
      validateIdentityName(name, "agent name");
    } catch (error) {
      fail(at, TheseusError.from(error).message, "agent names are 1-63 lowercase letters, digits, '-' or '.'");
    }
    if (!isPlainObject(value)) return fail(at, "must be a mapping with address and cluster", `for example \`${name}: {address: 10.0.0.5:7443, cluster: ${name}}\``);
    for (const key of Object.keys(value)) {
      if (!AGENT_KEYS.includes(key)) fail([...at, key], "unknown key", `known keys of an agent: ${AGENT_KEYS.join(", ")}`);
    }
    const { address, cluster, local } = value;
    if (typeof address !== "string") return fail([...at, "address"], address === undefined ? "missing" : "must be a string", "set it to HOST:PORT, e.g. 10.0.0.5:7443");
    try {
      validateAddress(address, "address");
    } catch (error) {
      fail([...at, "address"], TheseusError.from(error).message, "set it to HOST:PORT, e.g. 10.0.0.5:7443");
    }
    if (cluster !== undefined) {
      if (typeof cluster !== "string") return fail([...at, "cluster"], "must be a string", "set it to the cluster name in the agent's certificate");
      try {
        validateIdentityName(cluster, "cluster name");
      } catch (error) {
        fail([...at, "cluster"], TheseusError.from(error).message, "set it to the cluster name in the agent's certificate");
      }
    }
    if (local !== undefined && typeof local !== "boolean") fail([...at, "local"], "must be true or false", "it is written by `theseus local up`; remove the key otherwise");
    return { name, address, cluster: typeof cluster === "string" ? cluster : name, local: local === true };
  });
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
