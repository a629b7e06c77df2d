// A participant's state: an explicit union, persisted as data in the agent's cluster, and the one pure function that
// says what an event does to it. Every side effect (quiesce, rounds, activation, unstage) happens around a transition
// that was first written by compare-and-swap, so that two racing writers (a Commit and the lease watchdog) cannot both
// win: the loser re-reads the record and applies its event to the winner's state, which refuses or ignores it.
import { TheseusError } from "../../common/index.js";
import type { ErrorCode } from "../../common/index.js";

export type ParticipantRole = "source" | "target";
export type MigrationMode = "move" | "copy";

export interface Failure {
  readonly code: ErrorCode;
  readonly message: string;
}

export interface QuiescedObject {
  readonly apiVersion: string;
  readonly kind: string;
  readonly namespace: string;
  readonly name: string;
}

export type ParticipantState =
  /** Source: serving rounds through its sessions. Target: pulling rounds on its own, one after another per volume. */
  | { readonly phase: "presyncing" }
  /** Voted yes; the target keeps pre-syncing until FinalRound. */
  | { readonly phase: "prepared" }
  /** Source: the lease counts from here; stopping the writers. */
  | { readonly phase: "quiescing" }
  | { readonly phase: "quiesced"; readonly quiesceMs: number; readonly changed: readonly QuiescedObject[] }
  /** Target: background rounds stopped, the final round running. */
  | { readonly phase: "final-round" }
  | { readonly phase: "synced"; readonly finalRoundMs: number }
  /**
   * Target: activating the staged application (the source has committed). `failure` says why the last activation did
   * not end ready in time; Commit tries again, or the coordinator rolls back (Abort with rollback) if nothing wrote.
   */
  | { readonly phase: "committing"; readonly failure?: Failure }
  /** Source: fenced, will never restore itself (the commit point). Target: activated and ready. */
  | { readonly phase: "committed"; readonly startupMs: number }
  /** Cleaning up: the target unstages, the source closes its sessions and unquiesces. */
  | { readonly phase: "aborting"; readonly failure: Failure }
  | { readonly phase: "aborted"; readonly failure: Failure }
  | { readonly phase: "finished"; readonly outcome: "committed" | "aborted" };

export type Phase = ParticipantState["phase"];

export type ParticipantEvent =
  | { readonly type: "prepared" }
  | { readonly type: "quiesce-started" }
  | { readonly type: "quiesced"; readonly quiesceMs: number; readonly changed: readonly QuiescedObject[] }
  | { readonly type: "final-round-started" }
  | { readonly type: "final-round-done"; readonly durationMs: number }
  /** leaseExpiresAtMs: the source's lease (undefined on the target). */
  | { readonly type: "commit"; readonly nowMs: number; readonly leaseExpiresAtMs: number | undefined }
  | { readonly type: "activated"; readonly startupMs: number }
  | { readonly type: "activation-failed"; readonly failure: Failure }
  | { readonly type: "lease-expired"; readonly nowMs: number; readonly leaseExpiresAtMs: number }
  /**
   * rollback: past the commit point, only when the target failed to become ready and has proved that it took no
   * write: the target (committing) gives up its activation, the fenced source (committed) restores itself after it.
   */
  | { readonly type: "abort"; readonly failure: Failure; readonly rollback?: boolean }
  | { readonly type: "cleaned-up" }
  | { readonly type: "finish" };

/** The next state, and whether it differs (an event already applied is a retry: same state, nothing to write). */
export type Transition = { readonly ok: true; readonly state: ParticipantState; readonly changed: boolean } | { readonly ok: false; readonly error: TheseusError };

/** Phases after which the participant does nothing more on its own. */
export const END_PHASES: ReadonlySet<Phase> = new Set(["committed", "aborted", "finished"]);

/** Phases in which the target pulls background rounds. */
export const PRESYNC_PHASES: ReadonlySet<Phase> = new Set(["presyncing", "prepared"]);

/** Phases in which a source's lease counts. */
export const LEASED_PHASES: ReadonlySet<Phase> = new Set(["quiescing", "quiesced"]);

const BEFORE_COMMIT: ReadonlySet<Phase> = new Set(["presyncing", "prepared", "quiescing", "quiesced", "final-round", "synced"]);

export const LEASE_EXPIRED_MESSAGE = "the source's lease expired before Commit: it restored the application itself";

export function transition(role: ParticipantRole, state: ParticipantState, event: ParticipantEvent): Transition {
  const to = (next: ParticipantState): Transition => ({ ok: true, state: next, changed: true });
  const same: Transition = { ok: true, state, changed: false };
  // A participant that aborted on its own (its lease ran out) says why, so that a coordinator coming back after a
  // partition reports the lease and not a bare phase name.
  const refuse = (what: string, hint?: string): Transition => ({
    ok: false,
    error:
      state.phase === "aborting" || state.phase === "aborted"
        ? new TheseusError("failed_precondition", `the ${role} cannot ${what}: it has aborted: ${state.failure.message}`, { hint: "the migration is over; `theseus status ID` says how it ended" })
        : new TheseusError("failed_precondition", `the ${role} cannot ${what} in phase ${state.phase}`, { hint }),
  });
  const only = (wanted: ParticipantRole, what: string): Transition | undefined =>
    role === wanted ? undefined : { ok: false, error: new TheseusError("invalid_argument", `${what} is for the ${wanted}, and this agent is the ${role}`) };

  switch (event.type) {
    case "prepared":
      if (state.phase === "presyncing") return to({ phase: "prepared" });
      if (state.phase === "prepared") return same;
      return refuse("prepare", "Prepare belongs before the cutover, while pre-sync runs");

    case "quiesce-started":
      return (
        only("source", "Quiesce") ??
        (state.phase === "prepared" ? to({ phase: "quiescing" }) : state.phase === "quiescing" || state.phase === "quiesced" ? same : refuse("quiesce", "call Prepare first"))
      );

    case "quiesced":
      return (
        only("source", "Quiesce") ??
        (state.phase === "quiescing" ? to({ phase: "quiesced", quiesceMs: event.quiesceMs, changed: event.changed }) : state.phase === "quiesced" ? same : refuse("finish quiescing"))
      );

    case "final-round-started":
      return (
        only("target", "FinalRound") ??
        (state.phase === "prepared" ? to({ phase: "final-round" }) : state.phase === "final-round" || state.phase === "synced" ? same : refuse("run the final round", "call Prepare first"))
      );

    case "final-round-done":
      return (
        only("target", "FinalRound") ??
        (state.phase === "final-round" ? to({ phase: "synced", finalRoundMs: event.durationMs }) : state.phase === "synced" ? same : refuse("finish the final round"))
      );

    case "commit":
      if (role === "source") {
        if (state.phase === "quiesced") {
          // The lease decides, not the watchdog's timer: a Commit arriving after expiry loses even if the timer is late.
          if (event.leaseExpiresAtMs !== undefined && event.nowMs >= event.leaseExpiresAtMs) return to({ phase: "aborting", failure: leaseFailure() });
          return to({ phase: "committed", startupMs: 0 });
        }
        // Already decided either way: the answer is the state (a coordinator told "aborted" aborts the target).
        if (state.phase === "committed" || state.phase === "aborting" || state.phase === "aborted" || (state.phase === "finished")) return same;
        return refuse("commit", "the source commits once quiesced");
      }
      if (state.phase === "synced") return to({ phase: "committing" });
      if (state.phase === "committing" || state.phase === "committed" || (state.phase === "finished" && state.outcome === "committed")) return same;
      // Rolled back after a failed activation: the answer is the state, and the coordinator finishes the rollback.
      if (state.phase === "aborting" || state.phase === "aborted") return same;
      return refuse("commit", "the target commits after its final round, once the source has committed");

    case "activated":
      return only("target", "activation") ?? (state.phase === "committing" ? to({ phase: "committed", startupMs: event.startupMs }) : state.phase === "committed" ? same : refuse("finish activating"));

    case "activation-failed":
      return only("target", "activation") ?? (state.phase === "committing" ? to({ phase: "committing", failure: event.failure }) : refuse("fail activating"));

    case "lease-expired":
      if (role !== "source" || !LEASED_PHASES.has(state.phase) || event.nowMs < event.leaseExpiresAtMs) return same;
      return to({ phase: "aborting", failure: leaseFailure() });

    case "abort":
      if (BEFORE_COMMIT.has(state.phase)) return to({ phase: "aborting", failure: event.failure });
      if (event.rollback === true && ((role === "target" && state.phase === "committing") || (role === "source" && state.phase === "committed"))) {
        return to({ phase: "aborting", failure: event.failure });
      }
      if (state.phase === "aborting" || state.phase === "aborted" || (state.phase === "finished" && state.outcome === "aborted")) return same;
      return refuse("abort", "the migration is past its commit point: it can only roll forward");

    case "cleaned-up":
      return state.phase === "aborting" ? to({ phase: "aborted", failure: state.failure }) : state.phase === "aborted" ? same : refuse("end an abort");

    case "finish":
      if (state.phase === "committed") return to({ phase: "finished", outcome: "committed" });
      if (state.phase === "aborted") return to({ phase: "finished", outcome: "aborted" });
      if (state.phase === "finished") return same;
      return refuse("finish", "Finish follows a commit or an abort");
  }
}

function leaseFailure(): Failure {
  return { code: "deadline_exceeded", message: LEASE_EXPIRED_MESSAGE };
}
