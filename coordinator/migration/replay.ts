// A journal's records folded into what they say: the spec, the state (through the same transition function the
// driver used), the timeline of phases, the rounds, the pending requests. Pure, so resume and status read a journal
// exactly as the driver wrote it.
import { fromJson } from "@bufbuild/protobuf";
import { TheseusError } from "../../common/index.js";
import { RoundStatsSchema } from "../../proto/gen/theseus/v1/agent_pb.js";
import type { RoundStats } from "../../proto/gen/theseus/v1/agent_pb.js";
import type { JournalRecord, MigrationSpec } from "./journal.js";
import { transition } from "./phases.js";
import type { MigrationState, Phase, Transition } from "./phases.js";

export interface TimelineEntry {
  readonly phase: Phase;
  readonly startedAtMs: number;
  readonly durationMs: number;
}

export interface MigrationView {
  readonly spec: MigrationSpec;
  readonly state: MigrationState;
  readonly createdAtMs: number;
  readonly updatedAtMs: number;
  /** Every phase entered, with how long it lasted (the current one: until the last record). */
  readonly timeline: readonly TimelineEntry[];
  /** Each round with when the coordinator journaled it (RoundStats carries no end time). */
  readonly rounds: readonly { readonly volume: string; readonly final: boolean; readonly round: RoundStats; readonly atMs: number }[];
  /** Requests from `theseus cutover|abort ID`, counted so that a driver acts on each once. */
  readonly requests: readonly ({ readonly request: "cutover" } | { readonly request: "abort"; readonly reason: string })[];
  readonly bandwidthBytesPerSecond: number;
  /** When the cutover quiesced the source (the start of the downtime), if it did. */
  readonly quiesceStartedAtMs: number | undefined;
  readonly predictedDowntimeMs: number | undefined;
  readonly measuredDowntimeMs: number | undefined;
}

const TRANSITIONS: ReadonlySet<string> = new Set<Transition["type"]>([
  "planned",
  "staged",
  "begun",
  "cutover-decided",
  "prepared",
  "quiesced",
  "commit-decided",
  "source-committed",
  "target-committed",
  "abort-decided",
  "source-aborted",
  "target-rolled-back",
  "aborted",
  "finished",
]);

export function isTransition(record: JournalRecord): record is JournalRecord & Transition {
  return TRANSITIONS.has(record.type);
}

export function replay(records: readonly JournalRecord[]): MigrationView {
  const [first, ...rest] = records;
  if (first?.type !== "created") {
    throw new TheseusError("data_loss", "the journal does not start with the migration's spec", { hint: "the file was truncated or edited; the agents' records still hold each participant's state" });
  }
  let state: MigrationState = { phase: "planning" };
  const timeline: { phase: Phase; startedAtMs: number }[] = [{ phase: "planning", startedAtMs: first.atMs }];
  const rounds: { volume: string; final: boolean; round: RoundStats; atMs: number }[] = [];
  const requests: MigrationView["requests"][number][] = [];
  let bandwidth = first.spec.bandwidthBytesPerSecond;
  let quiesceStartedAtMs: number | undefined;
  let predictedDowntimeMs: number | undefined;
  let measuredDowntimeMs: number | undefined;
  let updatedAtMs = first.atMs;
  for (const record of rest) {
    updatedAtMs = record.atMs;
    if (isTransition(record)) {
      const next = transition(state, record);
      if (next.phase !== state.phase) timeline.push({ phase: next.phase, startedAtMs: record.atMs });
      // "prepared" is journaled right before Quiesce is sent: the downtime starts there.
      if (record.type === "prepared") quiesceStartedAtMs = record.atMs;
      if (record.type === "cutover-decided") predictedDowntimeMs = record.predictedDowntimeMs;
      if (record.type === "target-committed") measuredDowntimeMs = record.measuredDowntimeMs;
      state = next;
      continue;
    }
    switch (record.type) {
      case "round":
        rounds.push({ volume: record.volume, final: record.final, round: fromJson(RoundStatsSchema, record.round), atMs: record.atMs });
        break;
      case "request":
        requests.push(record.request === "abort" ? { request: "abort", reason: record.reason } : { request: "cutover" });
        break;
      case "rate":
        bandwidth = record.bytesPerSecond;
        break;
      case "created":
        throw new TheseusError("data_loss", "the journal holds a second spec", { hint: "two migrations share one id; start a new one with another --migration-id" });
    }
  }
  return {
    spec: first.spec,
    state,
    createdAtMs: first.atMs,
    updatedAtMs,
    timeline: timeline.map((entry, i) => ({ ...entry, durationMs: (timeline[i + 1]?.startedAtMs ?? updatedAtMs) - entry.startedAtMs })),
    rounds,
    requests,
    bandwidthBytesPerSecond: bandwidth,
    quiesceStartedAtMs,
    predictedDowntimeMs,
    measuredDowntimeMs,
  };
}
