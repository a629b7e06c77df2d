// The pre-copy model: rounds simulated from known costs and write rates must be fitted back, converge when the app
// writes slower than a round moves data, be refused when it does not, and predict the final round and the downtime.
import test from "ava";
import { decideAfterRound, dirtyRate, fitRoundCost, predict } from "../coordinator/migration/prediction.js";
import type { RoundObservation } from "../coordinator/migration/prediction.js";
import { DEFAULT_ALLOWANCES, cutoverCosts } from "../coordinator/migration/index.js";
import type { CostSource } from "../coordinator/migration/index.js";
import type { KubeObject } from "../app-model/index.js";

const MiB = 1024 * 1024;

/**
 * Rounds as the model says they run, back to back: round 0 copies `volumeBytes`; each later one carries what was
 * written between the previous round's reading of the files and its own, midpoint to midpoint, so that
 * bytes = D * (previous / 2 + this / 2) with this = fixed + bytes / T. Each round's own statistic divides by the time
 * between round ends instead, as the sync engine's does.
 */
function simulate(opts: { volumeBytes: number; fixedMs: number; throughput: number; dirty: number; rounds: number; startMs?: number }): RoundObservation[] {
  const rounds: RoundObservation[] = [];
  let now = opts.startMs ?? 1_000_000;
  let previousMs = 0;
  for (let i = 0; i < opts.rounds; i++) {
    const ratio = opts.dirty / opts.throughput;
    const bytes = i === 0 ? opts.volumeBytes : ((opts.dirty / 1000) * (previousMs + opts.fixedMs)) / (2 - ratio);
    const durationMs = opts.fixedMs + (bytes * 1000) / opts.throughput;
    now += durationMs;
    rounds.push({ bytesChanged: bytes, durationMs, dirtyBytesPerSecond: i === 0 ? 0 : (bytes * 1000) / durationMs, endedAtMs: now });
    previousMs = durationMs;
  }
  return rounds;
}

test("the write rate is measured between the rounds' scans, not between their ends", (t) => {
  const rounds = simulate({ volumeBytes: 1024 * MiB, fixedMs: 300, throughput: 100 * MiB, dirty: 5 * MiB, rounds: 3 });
  // The first incremental round carries the full copy's writes in a fraction of its time: its own statistic says ~10x.
  t.true((rounds[1]?.dirtyBytesPerSecond ?? 0) > 8 * 5 * MiB);
  t.true(Math.abs(dirtyRate(rounds) / (5 * MiB) - 1) < 1e-9, `${dirtyRate(rounds) / MiB} MiB/s`);
  t.is(dirtyRate(rounds.slice(0, 1)), 0, "a full round alone says nothing about writes");
  // Without a usable interval (the coordinator saw two rounds end at once) a round keeps its own statistic.
  const same = [
    { bytesChanged: 1000, durationMs: 0, dirtyBytesPerSecond: 0, endedAtMs: 5000 },
    { bytesChanged: 1000, durationMs: 0, dirtyBytesPerSecond: 777, endedAtMs: 5000 },
  ];
  t.is(dirtyRate(same), 777);
});

test("the round cost is fitted back from rounds of different sizes", (t) => {
  const rounds = simulate({ volumeBytes: 1024 * MiB, fixedMs: 300, throughput: 100 * MiB, dirty: 5 * MiB, rounds: 4 });
  const fit = fitRoundCost(rounds);
  t.truthy(fit);
  t.true(Math.abs((fit?.fixedMs ?? 0) - 300) < 1);
  t.true(Math.abs((fit?.throughputBytesPerSecond ?? 0) / (100 * MiB) - 1) < 0.001);
});

test("a full copy that compressed better than the app's writes does not make a diverging pre-copy look converged", (t) => {
  // The rounds CI saw at --bandwidth 1MiB/s: the first contents compressed 4:1, the app's records 2:1, the app wrote
  // faster than a round moved them (each round carried more than the last). Fitted with the full copy, its 10.7 s read
  // as a fixed cost and the throughput came out above the write rate: "converged at 34.7 s".
  const t0 = 1_000_000;
  const rounds: RoundObservation[] = [
    { bytesChanged: 32.0 * MiB, durationMs: 10_700, dirtyBytesPerSecond: 0, endedAtMs: t0, wireBytes: 8.37 * MiB },
    { bytesChanged: 34.0 * MiB, durationMs: 21_040, dirtyBytesPerSecond: 1.6 * MiB, endedAtMs: t0 + 21_100, wireBytes: 16.2 * MiB },
    { bytesChanged: 67.8 * MiB, durationMs: 42_270, dirtyBytesPerSecond: 1.6 * MiB, endedAtMs: t0 + 63_500, wireBytes: 32.4 * MiB },
  ];
  for (const seen of [rounds.slice(0, 2), rounds]) {
    const fit = fitRoundCost(seen);
    t.true((fit?.throughputBytesPerSecond ?? 0) < 2.1 * MiB, `throughput ${(fit?.throughputBytesPerSecond ?? 0) / MiB} MiB/s`);
    const p = predict({ rounds: seen, quiesceMs: 800, startupMs: 2000, cutoverAtMs: seen.at(-1)?.endedAtMs ?? 0 });
    t.is(p?.convergence.kind, "diverging", `after ${seen.length} rounds`);
    t.regex(decideAfterRound(p, { autoCutover: true, maxDowntimeMs: 3000 }).why, /cannot converge/);
  }
});

test("small rounds at their steady state, their times noisy on a loaded machine, are not taken for divergence", (t) => {
  // The invariant matrix's rounds (bytes, ms) for an app writing ~0.4 MB/s under load average 13: rounds carry half a
  // megabyte each and take 0.4-2.4 s, mostly fixed cost. A resumed coordinator saw them all at once.
  const seen: [number, number][] = [
    [662_812, 727], [547_148, 756], [707_372, 1423], [435_488, 785], [467_020, 476], [346_324, 413], [410_468, 1342],
    [676_772, 590], [343_188, 887], [922_452, 2446], [561_236, 804], [441_528, 1284], [1_173_644, 1222],
  ];
  let at = 1_000_000;
  const rounds: RoundObservation[] = [{ bytesChanged: 48 * MiB, durationMs: 4000, dirtyBytesPerSecond: 0, endedAtMs: at }];
  for (const [bytes, ms] of seen) {
    at += ms;
    rounds.push({ bytesChanged: bytes, durationMs: ms, dirtyBytesPerSecond: (bytes * 1000) / ms, endedAtMs: at });
  }
  for (let k = 2; k <= rounds.length; k++) {
    const p = predict({ rounds: rounds.slice(0, k), quiesceMs: 800, startupMs: 2500, cutoverAtMs: rounds[k - 1]?.endedAtMs ?? 0 });
    t.not(p?.convergence.kind, "diverging", `after ${k} rounds: ${JSON.stringify(p)}`);
  }
});

test("a quiet app's tiny incremental rounds give the fixed cost; the full copy still gives the throughput", (t) => {
  const rounds: RoundObservation[] = [
    { bytesChanged: 512 * MiB, durationMs: 5_420, dirtyBytesPerSecond: 0, endedAtMs: 10_000 },
    { bytesChanged: 4096, durationMs: 300, dirtyBytesPerSecond: 1000, endedAtMs: 10_400 },
  ];
  const fit = fitRoundCost(rounds);
  t.true(Math.abs((fit?.fixedMs ?? 0) - 300) < 1, `fixed ${fit?.fixedMs} ms`);
  t.true(Math.abs((fit?.throughputBytesPerSecond ?? 0) / (100 * MiB) - 1) < 0.01);
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

/** A source pod as Discover lists it: mounting the claim, its container started and Ready at the given times. */
function pod(opts: { name: string; startedAt?: string; readyAt?: string; ready?: boolean; claim?: string; probe?: { periodSeconds?: number; initialDelaySeconds?: number; successThreshold?: number } }): KubeObject {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: opts.name, namespace: "shop" },
    spec: {
      containers: [{ name: "app", image: "x", ...(opts.probe === undefined ? {} : { readinessProbe: { httpGet: { path: "/", port: 80 }, ...opts.probe } }) }],
      volumes: [{ name: "data", persistentVolumeClaim: { claimName: opts.claim ?? "data" } }],
    },
    status: {
      phase: "Running",
      conditions: [{ type: "Ready", status: opts.ready === false ? "False" : "True", ...(opts.readyAt === undefined ? {} : { lastTransitionTime: opts.readyAt }) }],
      containerStatuses: [{ name: "app", state: opts.startedAt === undefined ? { waiting: {} } : { running: { startedAt: opts.startedAt } } }],
    },
  };
}
const claim: KubeObject = { apiVersion: "v1", kind: "PersistentVolumeClaim", metadata: { name: "data", namespace: "shop" } };
const A = DEFAULT_ALLOWANCES;

const costCases: readonly { name: string; objects: KubeObject[]; measured?: { quiesceMs?: number; startupMs?: number }; startup: [number, CostSource]; quiesce: [number, CostSource] }[] = [
  {
    name: "a Ready pod: container start to Ready from its status, plus the control plane",
    objects: [claim, pod({ name: "a", startedAt: "2026-12-02T10:00:01Z", readyAt: "2026-12-02T10:00:04Z", probe: { periodSeconds: 1 } })],
    startup: [3000 + A.controlPlaneMs, "observed"],
    quiesce: [A.stopMs + A.shutdownMs, "estimated"],
  },
  {
    name: "whole seconds that round below the readiness probe's first period: the period bounds it",
    objects: [claim, pod({ name: "a", startedAt: "2026-12-02T10:00:01Z", readyAt: "2026-12-02T10:00:01Z", probe: { periodSeconds: 2 } })],
    startup: [2000 + A.controlPlaneMs, "observed"],
    quiesce: [A.stopMs + A.shutdownMs, "estimated"],
  },
  {
    name: "an initial delay and a success threshold above one add to the bound",
    objects: [claim, pod({ name: "a", startedAt: "2026-12-02T10:00:01Z", readyAt: "2026-12-02T10:00:02Z", probe: { periodSeconds: 1, initialDelaySeconds: 5, successThreshold: 3 } })],
    startup: [7000 + A.controlPlaneMs, "observed"],
    quiesce: [A.stopMs + A.shutdownMs, "estimated"],
  },
  {
    name: "the slowest of several writers counts; a pod that mounts none of the claims does not",
    objects: [
      claim,
      pod({ name: "a", startedAt: "2026-12-02T10:00:01Z", readyAt: "2026-12-02T10:00:02Z" }),
      pod({ name: "b", startedAt: "2026-12-02T10:00:01Z", readyAt: "2026-12-02T10:00:05Z" }),
      pod({ name: "cache", claim: "other", startedAt: "2026-12-02T10:00:01Z", readyAt: "2026-12-02T10:00:31Z" }),
    ],
    startup: [4000 + A.controlPlaneMs, "observed"],
    quiesce: [A.stopMs + A.shutdownMs, "estimated"],
  },
  {
    name: "no Ready pod to learn from: the allowances",
    objects: [claim, pod({ name: "a", ready: false, startedAt: "2026-12-02T10:00:01Z" }), pod({ name: "b" })],
    startup: [A.startToReadyMs + A.controlPlaneMs, "estimated"],
    quiesce: [A.stopMs + A.shutdownMs, "estimated"],
  },
  {
    name: "what the participants measured wins",
    objects: [claim, pod({ name: "a", startedAt: "2026-12-02T10:00:01Z", readyAt: "2026-12-02T10:00:04Z" })],
    measured: { quiesceMs: 420, startupMs: 1310 },
    startup: [1310, "measured"],
    quiesce: [420, "measured"],
  },
];

for (const c of costCases) {
  test(`cutover costs: ${c.name}`, (t) => {
    const costs = cutoverCosts({ sourceObjects: c.objects, ...(c.measured === undefined ? {} : { measured: c.measured }) });
    t.deepEqual([costs.startup.ms, costs.startup.source], c.startup, costs.startup.basis);
    t.deepEqual([costs.quiesce.ms, costs.quiesce.source], c.quiesce, costs.quiesce.basis);
    t.true(costs.startup.basis.length > 0 && costs.quiesce.basis.length > 0);
  });
}

test("the prediction shows its quiesce and start-up terms, and adds them to the final round", (t) => {
  const rounds = simulate({ volumeBytes: 256 * MiB, fixedMs: 200, throughput: 80 * MiB, dirty: 4 * MiB, rounds: 5 });
  const costs = cutoverCosts({ sourceObjects: costCases[0]?.objects ?? [] });
  const p = predict({ rounds, quiesceMs: costs.quiesce.ms, startupMs: costs.startup.ms, cutoverAtMs: rounds.at(-1)?.endedAtMs ?? 0 });
  t.is(p?.quiesceMs, A.stopMs + A.shutdownMs);
  t.is(p?.startupMs, 3000 + A.controlPlaneMs);
  t.true(Math.abs((p?.downtimeMs ?? 0) - ((p?.quiesceMs ?? 0) + (p?.finalRoundMs ?? 0) + (p?.startupMs ?? 0))) < 1e-6);
});
