// The migration's phases as the coordinator sees them: an explicit union and one pure transition function, so that
// the journal (a list of transitions) replays into exactly the state the driver had, and every rule about what may
// follow what is tested without I/O.
//
// The line that matters is the commit decision. Before "commit-decided" is journaled anything may abort; after it
// the coordinator only rolls forward, except when the source itself reports that it restored itself (its lease ran
// out before it acknowledged Commit: the source's record decides, and it said aborted). "source-committed" is the
// commit point proper: the source acknowledged that it is fenced.
import { TheseusError } from "../../common/index.js";

/** Where the application lives and what the agents call its volumes, fixed by planning and staging. */
export interface Placement {
  readonly sourceCluster: string;
  readonly targetCluster: string;
  readonly sourceNamespace: string;
  readonly targetNamespace: string;
  readonly labelSelector: string;
  readonly helmRelease: string;
}

export interface VolumePairRef {
  /** "NAMESPACE/CLAIM" on the source and on the target. */
  readonly sourceVolume: string;
  readonly targetVolume: string;
  readonly usedBytes: number;
}

export interface CutoverDecision {
  readonly why: string;
  readonly predictedDowntimeMs: number | undefined;
}

interface Placed {
  readonly placement: Placement;
}
interface Paired extends Placed {
  readonly volumes: readonly VolumePairRef[];
}
interface CuttingOver extends Paired {
  readonly cutover: CutoverDecision;
}

export type MigrationState =
  | { readonly phase: "planning" }
  | ({ readonly phase: "staging" } & Placed)
  | ({ readonly phase: "beginning" } & Paired)
  | ({ readonly phase: "presyncing" } & Paired)
  | ({ readonly phase: "preparing" } & CuttingOver)
  | ({ readonly phase: "quiescing" } & CuttingOver)
  | ({ readonly phase: "final-round" } & CuttingOver & { readonly quiesceMs: number })
  /** The decision is journaled: from here on, roll forward. */
  | ({ readonly phase: "committing-source" } & CuttingOver & { readonly quiesceMs: number })
  /** The source acknowledged Commit: the commit point has passed. */
  | ({ readonly phase: "committing-target" } & CuttingOver & { readonly quiesceMs: number })
  | ({ readonly phase: "committed" } & CuttingOver & { readonly measuredDowntimeMs: number | undefined })
  /**
   * Undoing: the target's staging removed, the source unquiesced. Placement is absent when nothing was staged.
   * rollback: after the commit point, because the target failed to become ready and proved that it took no write:
   * the target stops first, then the fenced source is told to restore itself.
   */
  | { readonly phase: "aborting"; readonly reason: string; readonly placement: Placement | undefined; readonly rollback?: boolean }
  | { readonly phase: "aborted"; readonly reason: string; readonly placement: Placement | undefined; readonly rollback?: boolean }
  | { readonly phase: "finished"; readonly placement: Placement };

export type Phase = MigrationState["phase"];

export const PHASES: readonly Phase[] = [
  "planning",
  "staging",
  "beginning",
  "presyncing",
  "preparing",
  "quiescing",
  "final-round",
  "committing-source",
  "committing-target",
  "committed",
  "aborting",
  "aborted",
  "finished",
];

export type Transition =
  | { readonly type: "planned"; readonly placement: Placement }
  | { readonly type: "staged"; readonly volumes: readonly VolumePairRef[] }
  | { readonly type: "begun" }
  | { readonly type: "cutover-decided"; readonly why: string; readonly predictedDowntimeMs: number | undefined }
  | { readonly type: "prepared" }
  | { readonly type: "quiesced"; readonly durationMs: number }
  /** Both digests matched: the decision to commit, journaled before Commit goes to the source. */
  | { readonly type: "commit-decided" }
  | { readonly type: "source-committed" }
  | { readonly type: "target-committed"; readonly measuredDowntimeMs: number | undefined }
  /** The coordinator's decision to abort (only before the commit decision). */
  | { readonly type: "abort-decided"; readonly reason: string }
  /** The source answered Commit with "aborted": its lease ran out first, and it restored itself. */
  | { readonly type: "source-aborted"; readonly reason: string }
  /** The target, not ready in time, gave up its activation with proof that it took no write: roll back to the source. */
  | { readonly type: "target-rolled-back"; readonly reason: string }
  | { readonly type: "aborted" }
  | { readonly type: "finished" };

/** Phases in which the coordinator may still decide to abort. */
const ABORTABLE: ReadonlySet<Phase> = new Set(["planning", "staging", "beginning", "presyncing", "preparing", "quiescing", "final-round"]);

export function canAbort(state: MigrationState): boolean {
  return ABORTABLE.has(state.phase);
}

export function isEnded(state: MigrationState): boolean {
  return state.phase === "committed" || state.phase === "aborted" || state.phase === "finished";
}

/** The next state, or a failed_precondition error naming the phase and the transition that may not follow it. */
export function transition(state: MigrationState, t: Transition): MigrationState {
  const refuse = (): never => {
    throw new TheseusError("failed_precondition", `a migration in phase ${state.phase} cannot take "${t.type}"`, {
      hint: "the journal and the driver disagree: read the journal (theseus status ID -o json) and report it",
    });
  };
  switch (t.type) {
    case "planned":
      return state.phase === "planning" ? { phase: "staging", placement: t.placement } : refuse();
    case "staged":
      return state.phase === "staging" ? { phase: "beginning", placement: state.placement, volumes: t.volumes } : refuse();
    case "begun":
      return state.phase === "beginning" ? { ...state, phase: "presyncing" } : refuse();
    case "cutover-decided":
      return state.phase === "presyncing" ? { ...state, phase: "preparing", cutover: { why: t.why, predictedDowntimeMs: t.predictedDowntimeMs } } : refuse();
    case "prepared":
      return state.phase === "preparing" ? { ...state, phase: "quiescing" } : refuse();
    case "quiesced":
      return state.phase === "quiescing" ? { ...state, phase: "final-round", quiesceMs: t.durationMs } : refuse();
    case "commit-decided":
      return state.phase === "final-round" ? { ...state, phase: "committing-source" } : refuse();
    case "source-committed":
      return state.phase === "committing-source" ? { ...state, phase: "committing-target" } : refuse();
    case "target-committed":
      if (state.phase !== "committing-target") return refuse();
      return { phase: "committed", placement: state.placement, volumes: state.volumes, cutover: state.cutover, measuredDowntimeMs: t.measuredDowntimeMs };
    case "abort-decided":
      // Deciding again while already aborting changes nothing: resume and `theseus abort` may both ask.
      if (state.phase === "aborting") return state;
      return canAbort(state) ? { phase: "aborting", reason: t.reason, placement: placementOf(state) } : refuse();
    case "source-aborted":
      if (state.phase !== "committing-source" && !canAbort(state)) return refuse();
      return { phase: "aborting", reason: t.reason, placement: placementOf(state) };
    case "target-rolled-back":
      return state.phase === "committing-target" ? { phase: "aborting", reason: t.reason, placement: state.placement, rollback: true } : refuse();
    case "aborted":
      return state.phase === "aborting" ? { phase: "aborted", reason: state.reason, placement: state.placement, ...(state.rollback === true ? { rollback: true } : {}) } : refuse();
    case "finished":
      return state.phase === "committed" ? { phase: "finished", placement: state.placement } : refuse();
  }
}

function placementOf(state: MigrationState): Placement | undefined {
  return "placement" in state ? state.placement : undefined;
}

/**
 * What a coordinator that finds this state in the journal (after a crash) does: pre-cutover steps are idempotent and
 * pre-sync runs in the agents, so it carries on; a cutover interrupted before its decision is aborted (the source is
 * quiesced, and nothing yet says the copy is complete); once the decision is journaled it rolls forward.
 */
export type ResumeAction = "continue" | "abort" | "roll-forward" | "none";

export function resumeAction(state: MigrationState): ResumeAction {
  switch (state.phase) {
    case "planning":
    case "staging":
    case "beginning":
    case "presyncing":
      return "continue";
    case "preparing":
    case "quiescing":
    case "final-round":
    case "aborting":
      return "abort";
    case "committing-source":
    case "committing-target":
      return "roll-forward";
    case "committed":
    case "aborted":
    case "finished":
      return "none";
  }
}
