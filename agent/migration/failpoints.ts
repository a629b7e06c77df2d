// The agent's step boundaries in a migration, each reachable from a test with THESEUS_FAILPOINTS (common/failpoints).
import { defineFailpoints } from "../../common/index.js";

export const MIGRATION_FAILPOINTS = {
  sourceBeginAfter: "source.begin.after",
  targetBeginAfter: "target.begin.after",
  targetRoundAfter: "target.round.after",
  sourcePrepareBeforeVote: "source.prepare.before-vote",
  targetPrepareBeforeVote: "target.prepare.before-vote",
  sourceQuiesceBefore: "source.quiesce.before",
  sourceQuiesceAfterWritersStopped: "source.quiesce.after-writers-stopped",
  targetFinalRoundBefore: "target.final-round.before",
  targetFinalRoundAfter: "target.final-round.after",
  sourceCommitBefore: "source.commit.before",
  sourceCommitBeforeAck: "source.commit.before-ack",
  targetCommitBeforeActivate: "target.commit.before-activate",
  targetCommitAfterActivate: "target.commit.after-activate",
  sourceLeaseExpiredBeforeRestore: "source.lease-expired.before-restore",
  sourceAbortBeforeDone: "source.abort.before-done",
  targetAbortBeforeDone: "target.abort.before-done",
} as const;

defineFailpoints("agent", Object.values(MIGRATION_FAILPOINTS));
