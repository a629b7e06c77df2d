// The prediction for a whole migration from its volumes' rounds, and the policy that turns it into a decision. Pure:
// the driver feeds it what the target's Watch stream reported.
import type { RoundStats } from "../../proto/gen/theseus/v1/agent_pb.js";
import { decideAfterRound, predict } from "./prediction.js";
import type { Convergence, CutoverPolicy, Prediction, PresyncDecision, RoundObservation } from "./prediction.js";

/** A finished round and when the coordinator first saw it (RoundStats carries no end time). */
export interface ObservedRound {
  readonly round: RoundStats;
  readonly endedAtMs: number;
}

export function observation(observed: ObservedRound): RoundObservation {
  return {
    bytesChanged: Number(observed.round.bytesChanged),
    durationMs: Number(observed.round.durationMs),
    dirtyBytesPerSecond: observed.round.dirtyBytesPerSecond,
    endedAtMs: observed.endedAtMs,
    wireBytes: Number(observed.round.wireBytes),
  };
}

export interface MigrationPredictionInputs {
  /** Per volume pair, its finished rounds in order. */
  readonly volumes: readonly (readonly ObservedRound[])[];
  readonly quiesceMs: number;
  readonly startupMs: number;
  readonly cutoverAtMs: number;
}

/**
 * The cutover's final round carries every volume's final round; their costs are added (the bound holds however the
 * target schedules them), and the downtime adds quiesce and start-up once. A migration converges only when every
 * volume does; one diverging volume makes it diverge.
 */
export function predictMigration(inputs: MigrationPredictionInputs): Prediction | undefined {
  const perVolume: Prediction[] = [];
  for (const rounds of inputs.volumes) {
    const p = predict({ rounds: rounds.map(observation), quiesceMs: inputs.quiesceMs, startupMs: 0, cutoverAtMs: inputs.cutoverAtMs });
    if (p === undefined) return undefined;
    perVolume.push(p);
  }
  const [only] = perVolume;
  if (only === undefined) return undefined;
  const sum = (f: (p: Prediction) => number): number => perVolume.reduce((s, p) => s + f(p), 0);
  const finalRoundMs = sum((p) => p.finalRoundMs);
  const dirty = sum((p) => p.dirtyBytesPerSecond);
  // Volumes share the link one after another: the time per byte adds up.
  const throughput = perVolume.length === 1 ? only.throughputBytesPerSecond : 1 / sum((p) => 1 / p.throughputBytesPerSecond);
  return {
    quiesceMs: inputs.quiesceMs,
    startupMs: inputs.startupMs,
    fixedMs: sum((p) => p.fixedMs),
    throughputBytesPerSecond: throughput,
    dirtyBytesPerSecond: dirty,
    finalRoundBytes: sum((p) => p.finalRoundBytes),
    finalRoundMs,
    downtimeMs: inputs.quiesceMs + finalRoundMs + inputs.startupMs,
    convergence: combineConvergence(perVolume.map((p) => p.convergence)),
  };
}

export function combineConvergence(all: readonly Convergence[]): Convergence {
  const diverging = all.find((c) => c.kind === "diverging");
  if (diverging !== undefined) return diverging;
  if (all.some((c) => c.kind === "unknown")) return { kind: "unknown" };
  if (all.some((c) => c.kind === "improving")) return { kind: "improving" };
  return { kind: "converged" };
}

export interface PresyncPolicy extends CutoverPolicy {
  /** A user's `theseus cutover ID`: cut over now, whatever the prediction says. */
  readonly cutoverRequested: boolean;
  /** --cutover-at, reached. */
  readonly cutoverTimeReached: boolean;
}

/** What to do now, after a round or a request. A user's request or the scheduled time overrides the prediction. */
export function decidePresync(prediction: Prediction | undefined, policy: PresyncPolicy): PresyncDecision {
  if (policy.cutoverRequested) return { action: "cutover", why: "requested (theseus cutover)" };
  if (policy.cutoverTimeReached) return { action: "cutover", why: "the time given with --cutover-at has come" };
  return decideAfterRound(prediction, policy);
}
