// The crash matrix as data: one case per failpoint registered with allFailpoints(), crashed in the process that owns
// it, plus the cases that let a lease expire instead of restarting at once. A failpoint whose step is reached only on
// some path (an abort, a lease expiry) names the coordinator failpoint that takes the migration down that path.
//
// The owner is read from the name (coordinator.*, source.*, target.*): a failpoint with any other prefix belongs to no
// process the matrix knows, and `uncovered` reports it, so a new step without a case fails the coverage test.
import { allFailpoints } from "../../common/index.js";
// Imported for their side effect too: defining the failpoints registers them.
import { MIGRATION_FAILPOINTS } from "../../agent/migration/index.js";
import { COORDINATOR_FAILPOINTS } from "../../coordinator/migration/index.js";

export type Owner = "coordinator" | "source" | "target";
export type Recovery = "restart" | "lease";
export type Outcome = "committed" | "aborted";

export interface MatrixCase {
  readonly failpoint: string;
  readonly owner: Owner;
  /** restart: the crashed process comes back at once; lease: only after the source's lease has run out. */
  readonly recovery: Recovery;
  /** THESEUS_FAILPOINTS entries for the coordinator that lead to the failpoint's step (empty: the plain path). */
  readonly trigger: string;
  /** What the protocol must end in; undefined when either end is correct. */
  readonly expect: Outcome | undefined;
  readonly why: string;
}

/** Makes the coordinator fail its pre-sync step once a round is seen: the driver decides to abort. */
const ABORT_TRIGGER = "coordinator.presync.after-round=error";
/** Kills the coordinator with the source quiesced: nobody renews the lease. */
const SILENCE_TRIGGER = "coordinator.before-final-round=crash";

interface Special {
  readonly trigger: string;
  readonly expect?: Outcome;
  readonly why: string;
}

const SPECIAL: Readonly<Record<string, Special>> = {
  "coordinator.before-abort": { trigger: ABORT_TRIGGER, expect: "aborted", why: "an abort decided (pre-sync step failed), the coordinator dies before undoing; resume undoes" },
  "source.abort.before-done": { trigger: ABORT_TRIGGER, expect: "aborted", why: "the source dies after unquiescing, before recording the end of its abort" },
  "target.abort.before-done": { trigger: ABORT_TRIGGER, expect: "aborted", why: "the target dies after unstaging, before recording the end of its abort" },
  "source.lease-expired.before-restore": { trigger: SILENCE_TRIGGER, expect: "aborted", why: "the coordinator dies with the source quiesced; the lease runs out and the source dies before restoring" },
};

/** What the design says a crash there must end in, for the plain path (undefined: either is correct). */
const EXPECTED: Readonly<Record<string, Outcome>> = {
  // Before the cutover a resumed coordinator carries on.
  "coordinator.before-stage": "committed",
  "coordinator.before-begin": "committed",
  "coordinator.presync.after-round": "committed",
  // A cutover interrupted before its decision is aborted by resume.
  "coordinator.before-prepare": "aborted",
  "coordinator.before-quiesce": "aborted",
  "coordinator.before-final-round": "aborted",
  "coordinator.before-commit-decision": "aborted",
  // After the decision: roll forward.
  "coordinator.after-commit-decision": "committed",
  "coordinator.after-source-commit": "committed",
  "coordinator.after-target-commit": "committed",
  // The source acknowledged (or recorded) its commit: the commit point is behind.
  "source.commit.before-ack": "committed",
  "target.commit.before-activate": "committed",
  "target.commit.after-activate": "committed",
};

/** Crash points where the coordinator's silence leaves the source quiesced: also run with the lease running out first. */
const LEASE_VARIANTS: readonly string[] = ["coordinator.before-final-round", "coordinator.before-commit-decision", "coordinator.after-commit-decision"];

export function ownerOf(failpoint: string): Owner | undefined {
  const prefix = failpoint.split(".")[0];
  return prefix === "coordinator" || prefix === "source" || prefix === "target" ? prefix : undefined;
}

/** Every failpoint the code defines (the imports above register both components' lists). */
export function definedFailpoints(): readonly string[] {
  // Referenced so that the imports cannot be elided as unused.
  void MIGRATION_FAILPOINTS;
  void COORDINATOR_FAILPOINTS;
  return allFailpoints().map((f) => f.name);
}

export function matrixCases(failpoints: readonly string[] = definedFailpoints()): MatrixCase[] {
  const cases: MatrixCase[] = [];
  for (const failpoint of failpoints) {
    const owner = ownerOf(failpoint);
    if (owner === undefined) continue; // uncovered() names it
    const special = SPECIAL[failpoint];
    cases.push({
      failpoint,
      owner,
      recovery: "restart",
      trigger: special?.trigger ?? "",
      expect: special?.expect ?? EXPECTED[failpoint],
      why: special?.why ?? `a crash at ${failpoint}, then ${owner === "coordinator" ? "`theseus resume`" : `the ${owner} agent restarted`}`,
    });
    if (LEASE_VARIANTS.includes(failpoint)) {
      cases.push({
        failpoint,
        owner,
        recovery: "lease",
        trigger: "",
        // After the decision the source's record decides: expired before Commit reached it, it restored itself.
        expect: "aborted",
        why: `a crash at ${failpoint}, resumed only after the source's lease ran out (the source restores itself)`,
      });
    }
  }
  return cases;
}

/** Failpoints no case crashes in their owner's process. */
export function uncovered(failpoints: readonly string[], cases: readonly MatrixCase[]): string[] {
  return failpoints.filter((f) => !cases.some((c) => c.failpoint === f && c.owner === ownerOf(f) && c.recovery === "restart"));
}

export function caseName(c: MatrixCase): string {
  return `${c.failpoint} (${c.owner}${c.recovery === "lease" ? ", lease expiry" : ""})`;
}
