// What a caller asks of a migration (the CLI, the demo), validated once into the spec the journal keeps.
import { TheseusError } from "../../common/index.js";
import type { Logger } from "../../common/index.js";
import type { TlsMaterial } from "../../rpc/index.js";
import type { AgentTarget } from "../agents/index.js";
import { newMigrationId, validateMigrationId, validateNamespace } from "../plan/index.js";
import type { PlanInput } from "../plan/index.js";
import type { MigrationSpec } from "./journal.js";

export interface MigrateOptions {
  readonly from: AgentTarget;
  readonly to: AgentTarget;
  /** The plan's options (namespace, mappings, rules...); its migrationId is ignored: the migration's own is used. */
  readonly plan: PlanInput;
  readonly mode: "move" | "copy";
  /** 0 = unlimited. */
  readonly bandwidthBytesPerSecond: number;
  readonly autoCutover: boolean;
  readonly maxDowntimeMs: number;
  /** Cut over at this time (epoch ms) whatever the prediction says. */
  readonly cutoverAtMs?: number;
  /** How long a quiesced source waits for the coordinator before it restores itself. */
  readonly leaseMs: number;
  readonly migrationId?: string;
  /**
   * The prediction's quiesce and start-up when the source app's pods cannot be learned from (Discover failed on a
   * resumed driver; default 1 s and 2 s). Otherwise costs.ts derives them from the pods' status.
   */
  readonly quiesceEstimateMs?: number;
  readonly startupEstimateMs?: number;
  /** How long the target may take to become ready after its Commit before the migration rolls back (default 5 min). */
  readonly readyTimeoutMs?: number;
  readonly tls: TlsMaterial;
  /** THESEUS_HOME: the journal lives below it. */
  readonly home: string;
  /** Stops driving (detaches): the agents carry on pre-syncing, `theseus resume ID` picks the migration up. */
  readonly signal?: AbortSignal;
  readonly logger?: Logger;
}

const MIN_LEASE_MS = 3_000;
const DEFAULT_QUIESCE_ESTIMATE_MS = 1_000;
const DEFAULT_STARTUP_ESTIMATE_MS = 2_000;
export const DEFAULT_READY_TIMEOUT_MS = 300_000;
const MIN_READY_TIMEOUT_MS = 1_000;

export function migrationSpec(options: MigrateOptions): MigrationSpec {
  const id = options.migrationId === undefined ? newMigrationId() : validateMigrationId(options.migrationId);
  validateNamespace(options.plan.namespace, "-n/--namespace");
  if (options.mode !== "move" && options.mode !== "copy") {
    throw new TheseusError("invalid_argument", `--mode must be move or copy, not "${String(options.mode)}"`, { hint: "move retires the source after the cutover; copy leaves it running" });
  }
  const whole = (value: number, flag: string, min: number): number => {
    if (!Number.isFinite(value) || value < min) throw new TheseusError("invalid_argument", `${flag} must be a number of at least ${min}, not ${value}`, { hint: `for example ${flag} ${Math.max(min, 1)}` });
    return Math.round(value);
  };
  if (options.leaseMs < MIN_LEASE_MS) {
    throw new TheseusError("invalid_argument", `--lease ${options.leaseMs} ms is too short for a cutover`, { hint: `give at least ${MIN_LEASE_MS / 1000} s: the coordinator renews it every third of it` });
  }
  if (options.from.address === options.to.address) {
    throw new TheseusError("invalid_argument", `--from and --to are the same agent (${options.from.address})`, { hint: "a migration moves an application between two clusters, each with its agent" });
  }
  return {
    id,
    from: options.from,
    to: options.to,
    plan: { ...options.plan, migrationId: id },
    mode: options.mode,
    bandwidthBytesPerSecond: whole(options.bandwidthBytesPerSecond, "--bandwidth", 0),
    autoCutover: options.autoCutover,
    maxDowntimeMs: whole(options.maxDowntimeMs, "--max-downtime", 1),
    cutoverAtMs: options.cutoverAtMs,
    leaseMs: whole(options.leaseMs, "--lease", MIN_LEASE_MS),
    quiesceEstimateMs: whole(options.quiesceEstimateMs ?? DEFAULT_QUIESCE_ESTIMATE_MS, "quiesceEstimateMs", 0),
    startupEstimateMs: whole(options.startupEstimateMs ?? DEFAULT_STARTUP_ESTIMATE_MS, "startupEstimateMs", 0),
    readyTimeoutMs: whole(options.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS, "--ready-timeout", MIN_READY_TIMEOUT_MS),
  };
}
