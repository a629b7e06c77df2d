// The coordinator's phases: every phase against every transition, so that what may follow what (and above all where
// the commit decision puts an end to aborting) is written down as a table, and what a resumed coordinator does in
// each phase.
import test from "ava";
import { PHASES, canAbort, isEnded, resumeAction, transition } from "../coordinator/migration/index.js";
import type { MigrationState, Phase, Placement, ResumeAction, Transition, VolumePairRef } from "../coordinator/migration/index.js";

const placement: Placement = { sourceCluster: "eu", targetCluster: "us", sourceNamespace: "shop", targetNamespace: "shop-us", labelSelector: "", helmRelease: "" };
const volumes: VolumePairRef[] = [{ sourceVolume: "shop/data", targetVolume: "shop-us/data", usedBytes: 1024 }];
const cutover = { why: "requested", predictedDowntimeMs: 1200 };

const states: Record<Phase, MigrationState> = {
  planning: { phase: "planning" },
  staging: { phase: "staging", placement },
  beginning: { phase: "beginning", placement, volumes },
  presyncing: { phase: "presyncing", placement, volumes },
  preparing: { phase: "preparing", placement, volumes, cutover },
  quiescing: { phase: "quiescing", placement, volumes, cutover },
  "final-round": { phase: "final-round", placement, volumes, cutover, quiesceMs: 300 },
  "committing-source": { phase: "committing-source", placement, volumes, cutover, quiesceMs: 300 },
  "committing-target": { phase: "committing-target", placement, volumes, cutover, quiesceMs: 300 },
  committed: { phase: "committed", placement, volumes, cutover, measuredDowntimeMs: 1400 },
  aborting: { phase: "aborting", reason: "because", placement },
  aborted: { phase: "aborted", reason: "because", placement },
  finished: { phase: "finished", placement },
};

const transitions: Record<Transition["type"], Transition> = {
  planned: { type: "planned", placement },
  staged: { type: "staged", volumes },
  begun: { type: "begun" },
  "cutover-decided": { type: "cutover-decided", why: "auto", predictedDowntimeMs: 900 },
  prepared: { type: "prepared" },
  quiesced: { type: "quiesced", durationMs: 250 },
  "commit-decided": { type: "commit-decided" },
  "source-committed": { type: "source-committed" },
  "target-committed": { type: "target-committed", measuredDowntimeMs: 1500 },
  "abort-decided": { type: "abort-decided", reason: "user" },
  "source-aborted": { type: "source-aborted", reason: "lease" },
  "target-rolled-back": { type: "target-rolled-back", reason: "not ready, no write" },
  aborted: { type: "aborted" },
  finished: { type: "finished" },
};

const ABORTABLE: Phase[] = ["planning", "staging", "beginning", "presyncing", "preparing", "quiescing", "final-round"];

// [transition, from phase] -> the phase it leads to; every pair not listed must be refused.
const allowed: Partial<Record<Transition["type"], Partial<Record<Phase, Phase>>>> = {
  planned: { planning: "staging" },
  staged: { staging: "beginning" },
  begun: { beginning: "presyncing" },
  "cutover-decided": { presyncing: "preparing" },
  prepared: { preparing: "quiescing" },
  quiesced: { quiescing: "final-round" },
  "commit-decided": { "final-round": "committing-source" },
  "source-committed": { "committing-source": "committing-target" },
  "target-committed": { "committing-target": "committed" },
  "abort-decided": { ...Object.fromEntries(ABORTABLE.map((p) => [p, "aborting"])), aborting: "aborting" },
  "source-aborted": { ...Object.fromEntries(ABORTABLE.map((p) => [p, "aborting"])), "committing-source": "aborting" },
  "target-rolled-back": { "committing-target": "aborting" },
  aborted: { aborting: "aborted" },
  finished: { committed: "finished" },
};

for (const [type, t] of Object.entries(transitions) as [Transition["type"], Transition][]) {
  test(`"${type}" from every phase`, (tt) => {
    for (const phase of PHASES) {
      const to = allowed[type]?.[phase];
      if (to === undefined) {
        const error = tt.throws(() => transition(states[phase], t), undefined, `${type} from ${phase} must be refused`);
        tt.is((error as { code?: string } | undefined)?.code, "failed_precondition");
        tt.true(error?.message.includes(phase) === true, "the refusal names the phase");
      } else {
        tt.is(transition(states[phase], t).phase, to, `${type} from ${phase}`);
      }
    }
  });
}

test("the coordinator may abort until the commit decision, never after it", (t) => {
  for (const phase of PHASES) t.is(canAbort(states[phase]), ABORTABLE.includes(phase), phase);
  t.throws(() => transition(states["committing-source"], transitions["abort-decided"]));
  t.throws(() => transition(states["committing-target"], transitions["source-aborted"]), undefined, "after the source's ack even the source cannot abort");
});

test("the transitions carry what later phases need: placement, volumes, the cutover's prediction, the downtime", (t) => {
  let state: MigrationState = { phase: "planning" };
  for (const type of ["planned", "staged", "begun", "cutover-decided", "prepared", "quiesced", "commit-decided", "source-committed", "target-committed"] as const) {
    state = transition(state, transitions[type]);
  }
  t.deepEqual(state, { phase: "committed", placement, volumes, cutover: { why: "auto", predictedDowntimeMs: 900 }, measuredDowntimeMs: 1500 });
  t.deepEqual(transition(states.presyncing, transitions["abort-decided"]), { phase: "aborting", reason: "user", placement });
  t.deepEqual(transition(states.planning, transitions["abort-decided"]), { phase: "aborting", reason: "user", placement: undefined }, "nothing staged: nothing to unstage");
  t.deepEqual(transition(states.aborting, transitions.aborted), { phase: "aborted", reason: "because", placement });
  t.is(transition(states.aborting, transitions["abort-decided"]), states.aborting, "asking again while aborting changes nothing");
  // Past the commit point only the target's proven rollback (not ready, no write taken) leads to an abort, marked as one.
  const rolling = transition(states["committing-target"], transitions["target-rolled-back"]);
  t.deepEqual(rolling, { phase: "aborting", reason: "not ready, no write", placement, rollback: true });
  t.deepEqual(transition(rolling, transitions.aborted), { phase: "aborted", reason: "not ready, no write", placement, rollback: true });
});

test("a resumed coordinator carries on before the cutover, aborts a cutover without its decision, rolls forward after it", (t) => {
  const expected: Record<Phase, ResumeAction> = {
    planning: "continue",
    staging: "continue",
    beginning: "continue",
    presyncing: "continue",
    preparing: "abort",
    quiescing: "abort",
    "final-round": "abort",
    "committing-source": "roll-forward",
    "committing-target": "roll-forward",
    committed: "none",
    aborting: "abort",
    aborted: "none",
    finished: "none",
  };
  for (const phase of PHASES) t.is(resumeAction(states[phase]), expected[phase], phase);
  for (const phase of PHASES) t.is(isEnded(states[phase]), ["committed", "aborted", "finished"].includes(phase), phase);
});
