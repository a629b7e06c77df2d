// The participant's transitions, table-tested without I/O: each row is a role, a state, an event and what must come of
// it (the next phase, "same" for a retry that changes nothing, or the refusal's code).
import test from "ava";
import { LEASE_EXPIRED_MESSAGE, transition } from "../agent/migration/index.js";
import type { ParticipantEvent, ParticipantRole, ParticipantState, Phase } from "../agent/migration/index.js";

const failure = { code: "cancelled" as const, message: "aborted by the coordinator" };
const S: Record<Phase, ParticipantState> = {
  presyncing: { phase: "presyncing" },
  prepared: { phase: "prepared" },
  quiescing: { phase: "quiescing" },
  quiesced: { phase: "quiesced", quiesceMs: 120, changed: [] },
  "final-round": { phase: "final-round" },
  synced: { phase: "synced", finalRoundMs: 300 },
  committing: { phase: "committing" },
  committed: { phase: "committed", startupMs: 0 },
  aborting: { phase: "aborting", failure },
  aborted: { phase: "aborted", failure },
  finished: { phase: "finished", outcome: "committed" },
};
const E = {
  prepared: { type: "prepared" },
  quiesceStarted: { type: "quiesce-started" },
  quiesced: { type: "quiesced", quiesceMs: 80, changed: [] },
  finalStarted: { type: "final-round-started" },
  finalDone: { type: "final-round-done", durationMs: 900 },
  commitInLease: { type: "commit", nowMs: 1000, leaseExpiresAtMs: 2000 },
  commitAfterLease: { type: "commit", nowMs: 2000, leaseExpiresAtMs: 2000 },
  commitTarget: { type: "commit", nowMs: 0, leaseExpiresAtMs: undefined },
  activated: { type: "activated", startupMs: 700 },
  expired: { type: "lease-expired", nowMs: 3000, leaseExpiresAtMs: 2000 },
  renewedMeanwhile: { type: "lease-expired", nowMs: 1000, leaseExpiresAtMs: 2000 },
  abort: { type: "abort", failure },
  rollback: { type: "abort", failure, rollback: true },
  activationFailed: { type: "activation-failed", failure: { code: "deadline_exceeded", message: "not ready" } },
  cleaned: { type: "cleaned-up" },
  finish: { type: "finish" },
} satisfies Record<string, ParticipantEvent>;

type Expect = Phase | "same" | "failed_precondition" | "invalid_argument";
const rows: Array<[ParticipantRole, Phase, keyof typeof E, Expect]> = [
  // pre-sync and the vote
  ["source", "presyncing", "prepared", "prepared"],
  ["target", "presyncing", "prepared", "prepared"],
  ["target", "prepared", "prepared", "same"],
  ["source", "quiesced", "prepared", "failed_precondition"],
  // quiesce: the source's, after its vote
  ["source", "prepared", "quiesceStarted", "quiescing"],
  ["source", "presyncing", "quiesceStarted", "failed_precondition"],
  ["source", "quiescing", "quiesceStarted", "same"],
  ["source", "quiescing", "quiesced", "quiesced"],
  ["source", "quiesced", "quiesced", "same"],
  ["target", "prepared", "quiesceStarted", "invalid_argument"],
  // the final round: the target's
  ["target", "prepared", "finalStarted", "final-round"],
  ["target", "presyncing", "finalStarted", "failed_precondition"],
  ["target", "final-round", "finalStarted", "same"],
  ["target", "final-round", "finalDone", "synced"],
  ["target", "synced", "finalStarted", "same"],
  ["source", "prepared", "finalStarted", "invalid_argument"],
  // the commit point: the source's CAS, decided by the lease
  ["source", "quiesced", "commitInLease", "committed"],
  ["source", "quiesced", "commitAfterLease", "aborting"],
  ["source", "committed", "commitInLease", "same"],
  ["source", "aborted", "commitInLease", "same"],
  ["source", "aborting", "commitInLease", "same"],
  ["source", "prepared", "commitInLease", "failed_precondition"],
  ["source", "quiescing", "commitInLease", "failed_precondition"],
  // the target's commit: activation
  ["target", "synced", "commitTarget", "committing"],
  ["target", "committing", "commitTarget", "same"],
  ["target", "committing", "activated", "committed"],
  ["target", "committed", "commitTarget", "same"],
  ["target", "final-round", "commitTarget", "failed_precondition"],
  // the lease watchdog: the same CAS as Commit, so one of them wins
  ["source", "quiesced", "expired", "aborting"],
  ["source", "quiescing", "expired", "aborting"],
  ["source", "quiesced", "renewedMeanwhile", "same"],
  ["source", "committed", "expired", "same"],
  ["source", "prepared", "expired", "same"],
  // abort before the commit point, never after
  ["source", "presyncing", "abort", "aborting"],
  ["source", "quiesced", "abort", "aborting"],
  ["target", "synced", "abort", "aborting"],
  ["target", "final-round", "abort", "aborting"],
  ["source", "aborting", "abort", "same"],
  ["target", "aborted", "abort", "same"],
  ["source", "committed", "abort", "failed_precondition"],
  ["target", "committing", "abort", "failed_precondition"],
  // past the commit point only a rollback (the target not ready, its volumes proven untouched) undoes it
  ["target", "committing", "activationFailed", "committing"],
  ["target", "committing", "rollback", "aborting"],
  ["source", "committed", "rollback", "aborting"],
  ["target", "committed", "rollback", "failed_precondition"],
  ["source", "finished", "rollback", "failed_precondition"],
  ["target", "aborted", "commitTarget", "same"],
  ["source", "presyncing", "rollback", "aborting"],
  ["target", "committed", "abort", "failed_precondition"],
  ["target", "aborting", "cleaned", "aborted"],
  ["target", "aborted", "cleaned", "same"],
  ["source", "quiesced", "cleaned", "failed_precondition"],
  // finish
  ["source", "committed", "finish", "finished"],
  ["target", "aborted", "finish", "finished"],
  ["target", "finished", "finish", "same"],
  ["source", "quiesced", "finish", "failed_precondition"],
];

for (const [role, phase, event, expected] of rows) {
  test(`${role} ${phase} + ${event} -> ${expected}`, (t) => {
    const result = transition(role, S[phase], E[event]);
    if (expected === "failed_precondition" || expected === "invalid_argument") {
      t.false(result.ok);
      if (!result.ok) {
        t.is(result.error.code, expected);
        t.true(result.error.message.includes(role) || result.error.message.includes("is for the"), result.error.message);
      }
      return;
    }
    t.true(result.ok);
    if (!result.ok) return;
    if (expected === "same") {
      t.false(result.changed);
      t.is(result.state, S[phase]);
    } else {
      t.true(result.changed);
      t.is(result.state.phase, expected);
    }
  });
}

test("a lease expiry says why, and the abort keeps the reason through cleanup", (t) => {
  const expired = transition("source", S.quiesced, E.expired);
  t.true(expired.ok);
  if (!expired.ok || expired.state.phase !== "aborting") return t.fail();
  t.is(expired.state.failure.message, LEASE_EXPIRED_MESSAGE);
  t.is(expired.state.failure.code, "deadline_exceeded");
  const cleaned = transition("source", expired.state, E.cleaned);
  t.true(cleaned.ok && cleaned.state.phase === "aborted" && cleaned.state.failure.message === LEASE_EXPIRED_MESSAGE);
});

test("quiesced and committed states carry their measurements", (t) => {
  const q = transition("source", S.quiescing, E.quiesced);
  t.true(q.ok && q.state.phase === "quiesced" && q.state.quiesceMs === 80);
  const a = transition("target", S.committing, E.activated);
  t.true(a.ok && a.state.phase === "committed" && a.state.startupMs === 700);
});

test("a step refused after the participant aborted on its own says why (a coordinator back from a partition reports the lease)", (t) => {
  const expired: ParticipantState = { phase: "aborted", failure: { code: "failed_precondition", message: LEASE_EXPIRED_MESSAGE } };
  const r = transition("source", expired, E.quiesceStarted);
  t.false(r.ok);
  if (!r.ok) {
    t.is(r.error.code, "failed_precondition");
    t.true(r.error.message.includes(LEASE_EXPIRED_MESSAGE), r.error.message);
  }
  const early = transition("target", S.presyncing, E.finalStarted);
  t.false(early.ok);
  if (!early.ok) t.regex(early.error.message, /in phase presyncing/);
});
