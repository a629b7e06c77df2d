// The pre-copy model: rounds simulated from known costs and write rates must be fitted back, converge when the app
// writes slower than a round moves data, be refused when it does not, and predict the final round and the downtime.
import test from "ava";
import { decideAfterRound, fitRoundCost, predict } from "../coordinator/migration/prediction.js";
import type { RoundObservation } from "../coordinator/migration/prediction.js";

const MiB = 1024 * 1024;

/** Rounds as the model says they run: round 0 copies `volumeBytes`, each later one what was dirtied meanwhile. */
function simulate(opts: { volumeBytes: number; fixedMs: number; throughput: number; dirty: number; rounds: number; startMs?: number }): RoundObservation[] {
  const rounds: RoundObservation[] = [];
  let now = opts.startMs ?? 1_000_000;
  let bytes = opts.volumeBytes;
  for (let i = 0; i < opts.rounds; i++) {
    const durationMs = opts.fixedMs + (bytes * 1000) / opts.throughput;
    now += durationMs;
    rounds.push({ bytesChanged: bytes, durationMs, dirtyBytesPerSecond: i === 0 ? 0 : opts.dirty, endedAtMs: now });
    bytes = (opts.dirty * durationMs) / 1000;
  }
  return rounds;
}

test("the round cost is fitted back from rounds of different sizes", (t) => {
  const rounds = simulate({ volumeBytes: 1024 * MiB, fixedMs: 300, throughput: 100 * MiB, dirty: 5 * MiB, rounds: 4 });
  const fit = fitRoundCost(rounds);
  t.truthy(fit);
  t.true(Math.abs((fit?.fixedMs ?? 0) - 300) < 1);
  t.true(Math.abs((fit?.throughputBytesPerSecond ?? 0) / (100 * MiB) - 1) < 0.001);
});

test("a round that sent almost nothing gives a fixed cost but no throughput", (t) => {
  const fit = fitRoundCost([{ bytesChanged: 10, durationMs: 120, dirtyBytesPerSecond: 0, endedAtMs: 0 }]);
  t.is(fit?.fixedMs, 120);
  t.is(fit?.throughputBytesPerSecond, Number.POSITIVE_INFINITY);
});

test("rounds converge towards the steady state, and the prediction says when more rounds stop helping", (t) => {
  const opts = { volumeBytes: 1024 * MiB, fixedMs: 300, throughput: 100 * MiB, dirty: 5 * MiB };
  const early = simulate({ ...opts, rounds: 2 });
  const late = simulate({ ...opts, rounds: 6 });
  const at = (rounds: RoundObservation[]): number => rounds.at(-1)?.endedAtMs ?? 0;
  const p2 = predict({ rounds: early, quiesceMs: 200, startupMs: 500, cutoverAtMs: at(early) });
  const p6 = predict({ rounds: late, quiesceMs: 200, startupMs: 500, cutoverAtMs: at(late) });
  t.is(p2?.convergence.kind, "improving");
  t.is(p6?.convergence.kind, "converged");
  t.true((p6?.finalRoundMs ?? Infinity) < (p2?.finalRoundMs ?? 0));
  // Steady state: V* = D * fixed / (1 - D/T); the final round carries D * (half a round + quiesce).
  const steadyRoundMs = 300 / (1 - 5 / 100);
  const expectedFinalBytes = 5 * MiB * ((steadyRoundMs / 2 + 200) / 1000);
  t.true(Math.abs((p6?.finalRoundBytes ?? 0) / expectedFinalBytes - 1) < 0.02, `final ${p6?.finalRoundBytes} vs ${expectedFinalBytes}`);
  t.true(Math.abs((p6?.downtimeMs ?? 0) - (200 + (p6?.finalRoundMs ?? 0) + 500)) < 1e-6);
});

test("waiting before the cutover makes the final round larger", (t) => {
  const rounds = simulate({ volumeBytes: 256 * MiB, fixedMs: 200, throughput: 80 * MiB, dirty: 4 * MiB, rounds: 5 });
  const end = rounds.at(-1)?.endedAtMs ?? 0;
  const now = predict({ rounds, quiesceMs: 100, startupMs: 300, cutoverAtMs: end });
  const later = predict({ rounds, quiesceMs: 100, startupMs: 300, cutoverAtMs: end + 10_000 });
  t.true((later?.finalRoundBytes ?? 0) > (now?.finalRoundBytes ?? 0) + 39 * MiB);
});

test("an app that writes faster than a round moves data is refused with what would help", (t) => {
  const rounds = simulate({ volumeBytes: 64 * MiB, fixedMs: 100, throughput: 10 * MiB, dirty: 12 * MiB, rounds: 3 });
  const p = predict({ rounds, quiesceMs: 100, startupMs: 100, cutoverAtMs: rounds.at(-1)?.endedAtMs ?? 0 });
  t.is(p?.convergence.kind, "diverging");
  const decision = decideAfterRound(p, { autoCutover: true, maxDowntimeMs: 3000 });
  t.is(decision.action, "refuse");
  t.regex(decision.why, /cannot converge/);
  t.regex(decision.action === "refuse" ? decision.hint : "", /bandwidth/);
});

test("the cutover policy: measure first, continue while improving, cut over when it fits, refuse when it never will", (t) => {
  t.is(decideAfterRound(undefined, { autoCutover: true, maxDowntimeMs: 3000 }).action, "continue");
  const opts = { volumeBytes: 1024 * MiB, fixedMs: 300, throughput: 100 * MiB, dirty: 5 * MiB };
  const converged = simulate({ ...opts, rounds: 6 });
  const p = predict({ rounds: converged, quiesceMs: 200, startupMs: 500, cutoverAtMs: converged.at(-1)?.endedAtMs ?? 0 });
  t.is(decideAfterRound(p, { autoCutover: true, maxDowntimeMs: 3000 }).action, "cutover");
  t.is(decideAfterRound(p, { autoCutover: false, maxDowntimeMs: 3000 }).action, "wait");
  const tooTight = decideAfterRound(p, { autoCutover: true, maxDowntimeMs: 100 });
  t.is(tooTight.action, "refuse");
  t.regex(tooTight.why, /above --max-downtime/);
});
