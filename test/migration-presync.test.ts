// The migration-wide prediction and policy: several volumes add their final rounds, one diverging volume makes the
// whole migration diverge, and a user's request or --cutover-at overrides the prediction.
import { create } from "@bufbuild/protobuf";
import test from "ava";
import { RoundStatsSchema } from "../proto/gen/theseus/v1/agent_pb.js";
import { combineConvergence, decidePresync, predict, predictMigration } from "../coordinator/migration/index.js";
import type { ObservedRound } from "../coordinator/migration/index.js";

const MiB = 1024 * 1024;

function rounds(opts: { fixedMs: number; throughput: number; dirty: number; count: number; volumeBytes: number }): ObservedRound[] {
  const out: ObservedRound[] = [];
  let now = 1_000_000;
  let bytes = opts.volumeBytes;
  for (let i = 0; i < opts.count; i++) {
    const durationMs = opts.fixedMs + (bytes * 1000) / opts.throughput;
    now += durationMs;
    out.push({ round: create(RoundStatsSchema, { round: i + 1, bytesChanged: BigInt(Math.round(bytes)), durationMs: BigInt(Math.round(durationMs)), dirtyBytesPerSecond: i === 0 ? 0 : opts.dirty }), endedAtMs: now });
    bytes = (opts.dirty * durationMs) / 1000;
  }
  return out;
}

test("one volume predicts as the model does", (t) => {
  const one = rounds({ fixedMs: 300, throughput: 100 * MiB, dirty: 5 * MiB, count: 4, volumeBytes: 1024 * MiB });
  const at = (one.at(-1)?.endedAtMs ?? 0) + 100;
  const p = predictMigration({ volumes: [one], quiesceMs: 500, startupMs: 1000, cutoverAtMs: at });
  const q = predict({ rounds: one.map((r) => ({ bytesChanged: Number(r.round.bytesChanged), durationMs: Number(r.round.durationMs), dirtyBytesPerSecond: r.round.dirtyBytesPerSecond, endedAtMs: r.endedAtMs })), quiesceMs: 500, startupMs: 1000, cutoverAtMs: at });
  t.truthy(p);
  t.true(Math.abs((p?.downtimeMs ?? 0) - (q?.downtimeMs ?? 1)) < 1);
});

test("two volumes add their final rounds; quiesce and start-up count once", (t) => {
  const a = rounds({ fixedMs: 300, throughput: 100 * MiB, dirty: 5 * MiB, count: 4, volumeBytes: 512 * MiB });
  const at = (a.at(-1)?.endedAtMs ?? 0) + 100;
  const single = predictMigration({ volumes: [a], quiesceMs: 500, startupMs: 1000, cutoverAtMs: at });
  const both = predictMigration({ volumes: [a, a], quiesceMs: 500, startupMs: 1000, cutoverAtMs: at });
  t.truthy(single && both);
  t.true(Math.abs((both?.finalRoundMs ?? 0) - 2 * (single?.finalRoundMs ?? 0)) < 1);
  t.true(Math.abs((both?.downtimeMs ?? 0) - (1500 + 2 * (single?.finalRoundMs ?? 0))) < 1);
  t.is(predictMigration({ volumes: [a, []], quiesceMs: 500, startupMs: 1000, cutoverAtMs: at }), undefined, "a volume without a round yet: no prediction");
});

test("one diverging volume makes the migration diverge; one unknown keeps it unknown", (t) => {
  const diverging = { kind: "diverging", dirtyBytesPerSecond: 10, throughputBytesPerSecond: 5 } as const;
  t.deepEqual(combineConvergence([{ kind: "converged" }, diverging, { kind: "improving" }]), diverging);
  t.deepEqual(combineConvergence([{ kind: "converged" }, { kind: "unknown" }]), { kind: "unknown" });
  t.deepEqual(combineConvergence([{ kind: "converged" }, { kind: "improving" }]), { kind: "improving" });
  t.deepEqual(combineConvergence([{ kind: "converged" }, { kind: "converged" }]), { kind: "converged" });
});

test("a request or the scheduled time cuts over whatever the prediction says; otherwise the policy decides", (t) => {
  const slow = rounds({ fixedMs: 300, throughput: 5 * MiB, dirty: 10 * MiB, count: 3, volumeBytes: 64 * MiB });
  const p = predictMigration({ volumes: [slow], quiesceMs: 500, startupMs: 1000, cutoverAtMs: (slow.at(-1)?.endedAtMs ?? 0) + 10 });
  t.is(p?.convergence.kind, "diverging");
  const policy = { autoCutover: true, maxDowntimeMs: 3000, cutoverRequested: false, cutoverTimeReached: false };
  const refused = decidePresync(p, policy);
  t.is(refused.action, "refuse");
  t.regex(refused.why, /cannot converge/);
  t.is(decidePresync(p, { ...policy, cutoverRequested: true }).action, "cutover");
  t.is(decidePresync(p, { ...policy, cutoverTimeReached: true }).action, "cutover");
  t.is(decidePresync(undefined, policy).action, "continue");
});
