// The agent's Prometheus metrics (prom-client): rounds, bytes read, changed and on the wire, throughput, migration
// phases and step durations, RPC durations and failures by code, TLS loads. Served by agent/health/ at /metrics.
export { createAgentMetrics } from "./metrics.js";
export type { AgentMetrics, RoundTrigger } from "./metrics.js";
export { observeService, observeSteps, participantCollector, syncVolumeRounds } from "./observe.js";
