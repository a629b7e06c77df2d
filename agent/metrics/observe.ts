// Observation without reaching into the services: the agent wraps each RPC implementation and its Migrations object
// once, in agent.ts, so that every call is timed and every failure counted by its code, whatever the service does
// inside. Round statistics come from where they already are: the `done` event of a SyncVolume stream, and the rounds
// the participants record in the cluster (read at scrape time).
import { TheseusError } from "../../common/index.js";
import type { RoundStats } from "../../proto/gen/theseus/v1/agent_pb.js";
import { Role } from "../../proto/gen/theseus/v1/migration_pb.js";
import type { ParticipantStatus } from "../../proto/gen/theseus/v1/migration_pb.js";
import type { AgentMetrics } from "./metrics.js";

type Method = (this: unknown, ...args: unknown[]) => unknown;

const codeOf = (error: unknown): string => TheseusError.from(error).code;

function isAsyncIterable(value: unknown): value is AsyncIterable<unknown> {
  return typeof value === "object" && value !== null && Symbol.asyncIterator in value;
}

/**
 * The same implementation, each method timed into theseus_rpc_duration_seconds and its failures counted by code.
 * `onItem` sees every message a streaming method yields (SyncVolume's `done` carries the round's statistics).
 */
export function observeService<T extends object>(service: string, impl: T, metrics: AgentMetrics, onItem?: (method: string, item: unknown) => void): T {
  const wrapped: Record<string, Method> = {};
  for (const [method, fn] of Object.entries(impl)) {
    if (typeof fn !== "function") continue;
    const call = fn as Method;
    const done = (started: number, error?: unknown): void => {
      const code = error === undefined ? "ok" : codeOf(error);
      metrics.rpcFinished(service, method, code, (performance.now() - started) / 1000);
      // A cancelled call is the caller's choice (or shutdown), not a failure of this agent.
      if (error !== undefined && code !== "cancelled") metrics.failed(`${service}.${method}`, code);
    };
    wrapped[method] = function (this: unknown, ...args: unknown[]): unknown {
      const started = performance.now();
      let result: unknown;
      try {
        result = call.apply(impl, args);
      } catch (error) {
        done(started, error);
        throw error;
      }
      if (result instanceof Promise) {
        return result.then(
          (value: unknown) => {
            done(started);
            return value;
          },
          (error: unknown) => {
            done(started, error);
            throw error;
          },
        );
      }
      if (isAsyncIterable(result)) {
        const source = result;
        return (async function* () {
          try {
            for await (const item of source) {
              onItem?.(method, item);
              yield item;
            }
            done(started);
          } catch (error) {
            done(started, error);
            throw error;
          }
        })();
      }
      return result;
    };
  }
  return wrapped as T;
}

/** SyncVolume's `done` event: the round a coordinator asked for, pulled by this agent. */
export function syncVolumeRounds(metrics: AgentMetrics): (method: string, item: unknown) => void {
  return (method, item) => {
    if (method !== "syncVolume") return;
    const event = (item as { event?: { case?: string; value?: unknown } }).event;
    if (event?.case === "done") metrics.roundFinished("call", event.value as RoundStats);
  };
}

/** The steps whose duration and failures are worth a series of their own. */
const STEPS = ["begin", "prepare", "quiesce", "finalRound", "commit", "abort", "finish"] as const;

/** The same Migrations object with its steps timed and their failures counted. */
export function observeSteps<T extends object>(migrations: T, metrics: AgentMetrics): T {
  const out = Object.create(migrations) as Record<string, unknown>;
  for (const step of STEPS) {
    const fn = (migrations as Record<string, unknown>)[step];
    if (typeof fn !== "function") continue;
    out[step] = async (...args: unknown[]): Promise<unknown> => {
      const started = performance.now();
      try {
        const value: unknown = await (fn as Method).apply(migrations, args);
        metrics.stepFinished(step, (performance.now() - started) / 1000);
        return value;
      } catch (error) {
        const code = codeOf(error);
        if (code !== "cancelled") metrics.failed(`migration.${step}`, code);
        throw error;
      }
    };
  }
  return out as T;
}

/**
 * A scrape-time collector over the participants: their phases now, and each round they recorded, counted once
 * (rounds are identified by migration, volume and number; a restarted agent counts the recorded ones again, which
 * Prometheus sees as a counter reset).
 */
export function participantCollector(list: (signal: AbortSignal) => Promise<ParticipantStatus[]>, metrics: AgentMetrics): () => Promise<void> {
  const seenRounds = new Set<string>();
  const seenFailures = new Set<string>();
  return async () => {
    let participants: ParticipantStatus[];
    try {
      participants = await list(AbortSignal.timeout(5000));
    } catch {
      // No cluster, or the API server is away: /readyz says so; the other series stay as they were.
      return;
    }
    const counts = new Map<string, number>();
    for (const p of participants) {
      const key = `${p.role === Role.SOURCE ? "source" : p.role === Role.TARGET ? "target" : "unknown"}/${p.phase}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
      // Rounds are pulled by the target: counting them there only keeps a migration between two agents counted once.
      if (p.role === Role.TARGET) {
        for (const volume of p.volumes) {
          for (const round of volume.rounds) {
            const id = `${p.migrationId}/${volume.targetVolume}/${round.round}`;
            if (seenRounds.has(id)) continue;
            seenRounds.add(id);
            metrics.roundFinished("migration", round);
          }
        }
      }
      if (p.errorCode !== "" && !seenFailures.has(`${p.migrationId}/${p.errorCode}`)) {
        seenFailures.add(`${p.migrationId}/${p.errorCode}`);
        metrics.failed("migration", p.errorCode);
      }
    }
    metrics.setParticipants(counts);
  };
}
