// The agent's Prometheus metrics, in a registry of its own (never prom-client's global one: tests run several agents
// in one process). Names follow Prometheus' conventions: base units (bytes, seconds), `_total` for counters.
// Counters only grow, so a scrape after an agent restart shows a reset, which Prometheus' rate() handles.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { RoundStats } from "../../proto/gen/theseus/v1/agent_pb.js";

/** Who started a round: a migration's background pre-sync or final round, or a coordinator's SyncVolume call. */
export type RoundTrigger = "migration" | "call";

export interface AgentMetrics {
  readonly registry: Registry;
  /** One finished round, on the agent that pulled it (the target). */
  roundFinished(trigger: RoundTrigger, stats: RoundStats): void;
  /** Something failed with a code: an RPC, a round, a migration step. */
  failed(where: string, code: string): void;
  rpcFinished(service: string, method: string, code: string, seconds: number): void;
  stepFinished(step: string, seconds: number): void;
  /** Called at every scrape, before the values are read: the phases of the participants this agent holds now. */
  onCollect(collect: () => Promise<void>): void;
  setParticipants(counts: ReadonlyMap<string, number>): void;
  tlsLoaded(result: "ok" | "failed", notAfterMs?: number): void;
}

export function createAgentMetrics(labels: { readonly cluster: string }): AgentMetrics {
  const registry = new Registry();
  registry.setDefaultLabels({ cluster: labels.cluster });
  // RSS, heap, event-loop lag, GC: what the 160 MiB target and the NODE_OPTIONS in the chart are judged by.
  collectDefaultMetrics({ register: registry, prefix: "theseus_agent_" });
  const collectors: (() => Promise<void>)[] = [];

  const rounds = new Counter({ name: "theseus_sync_rounds_total", help: "Sync rounds finished on this agent (as the target)", labelNames: ["trigger"], registers: [registry] });
  const bytesRead = new Counter({ name: "theseus_sync_bytes_read_total", help: "Bytes the source read for the rounds", labelNames: ["trigger"], registers: [registry] });
  const bytesChanged = new Counter({ name: "theseus_sync_bytes_changed_total", help: "Bytes of file content that differed and were sent", labelNames: ["trigger"], registers: [registry] });
  const wireBytes = new Counter({ name: "theseus_sync_wire_bytes_total", help: "Bytes on the wire (after compression)", labelNames: ["trigger"], registers: [registry] });
  const rawBytes = new Counter({ name: "theseus_sync_raw_bytes_total", help: "Bytes of frames before compression", labelNames: ["trigger"], registers: [registry] });
  const entriesChanged = new Counter({ name: "theseus_sync_entries_changed_total", help: "Files, directories and links created or changed", labelNames: ["trigger"], registers: [registry] });
  const roundSeconds = new Histogram({
    name: "theseus_sync_round_duration_seconds",
    help: "Duration of a sync round",
    labelNames: ["trigger"],
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600],
    registers: [registry],
  });
  const throughput = new Gauge({ name: "theseus_sync_throughput_bytes_per_second", help: "Changed bytes per second of the last round", labelNames: ["trigger"], registers: [registry] });
  const dirtyRate = new Gauge({ name: "theseus_sync_dirty_bytes_per_second", help: "The application's write rate measured between the last two rounds", labelNames: ["trigger"], registers: [registry] });
  const failures = new Counter({ name: "theseus_failures_total", help: "Failures by error code and where they happened", labelNames: ["where", "code"], registers: [registry] });
  const rpcSeconds = new Histogram({
    name: "theseus_rpc_duration_seconds",
    help: "Duration of the RPCs this agent served, by outcome code (ok or the error code)",
    labelNames: ["service", "method", "code"],
    buckets: [0.005, 0.025, 0.1, 0.5, 1, 5, 30, 120, 600],
    registers: [registry],
  });
  const stepSeconds = new Histogram({
    name: "theseus_migration_step_duration_seconds",
    help: "Duration of the migration steps this agent ran (prepare, quiesce, final round, commit, abort...)",
    labelNames: ["step"],
    buckets: [0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 300],
    registers: [registry],
  });
  const participants = new Gauge({
    name: "theseus_migration_participants",
    help: "Migrations this agent takes part in, by role and phase",
    labelNames: ["role", "phase"],
    registers: [registry],
    // Refreshed at scrape time: the phases live in the cluster's records, not in counters.
    async collect() {
      for (const collect of collectors) await collect();
    },
  });
  const tlsReloads = new Counter({ name: "theseus_tls_loads_total", help: "Loads of the TLS material (start and every change of the files)", labelNames: ["result"], registers: [registry] });
  const tlsNotAfter = new Gauge({ name: "theseus_tls_certificate_not_after_seconds", help: "Expiry of the agent certificate in use (unix time)", registers: [registry] });

  return {
    registry,
    roundFinished(trigger, stats) {
      rounds.inc({ trigger });
      bytesRead.inc({ trigger }, Number(stats.bytesRead));
      bytesChanged.inc({ trigger }, Number(stats.bytesChanged));
      wireBytes.inc({ trigger }, Number(stats.wireBytes));
      rawBytes.inc({ trigger }, Number(stats.rawBytes));
      entriesChanged.inc({ trigger }, Number(stats.entriesChanged));
      const seconds = Number(stats.durationMs) / 1000;
      roundSeconds.observe({ trigger }, seconds);
      if (seconds > 0) throughput.set({ trigger }, Number(stats.bytesChanged) / seconds);
      dirtyRate.set({ trigger }, stats.dirtyBytesPerSecond);
    },
    failed(where, code) {
      failures.inc({ where, code });
    },
    rpcFinished(service, method, code, seconds) {
      rpcSeconds.observe({ service, method, code }, seconds);
    },
    stepFinished(step, seconds) {
      stepSeconds.observe({ step }, seconds);
    },
    onCollect(collect) {
      collectors.push(collect);
    },
    setParticipants(counts) {
      participants.reset();
      for (const [key, n] of counts) {
        const [role = "", phase = ""] = key.split("/");
        participants.set({ role, phase }, n);
      }
    },
    tlsLoaded(result, notAfterMs) {
      tlsReloads.inc({ result });
      if (notAfterMs !== undefined) tlsNotAfter.set(notAfterMs / 1000);
    },
  };
}
