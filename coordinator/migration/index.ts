// The transaction, coordinator side: the durable journal, the phases, the driver, and the prediction that decides
// when to cut over. The CLI (`theseus migrate|status|cutover|abort|resume|list|set-bandwidth|finish`) and the demo
// call only what is exported here.
export { COORDINATOR_FAILPOINTS } from "./driver.js";
export type { MigrationEvent, MigrationHandle, MigrationOutcome } from "./driver.js";
export {
  createMigration,
  finishMigration,
  followMigration,
  listMigrations,
  migrationStatus,
  readMigration,
  requestMigration,
  resumeMigration,
  setMigrationRate,
  startMigration,
  watchTarget,
} from "./migration.js";
export type { MigrationStatusReport, MigrationSummary, ParticipantReport, ResumeOptions } from "./migration.js";
export { journalPath, migrationsDir } from "./journal.js";
export type { JournalRecord, MigrationSpec } from "./journal.js";
export type { MigrateOptions } from "./options.js";
export { PHASES, canAbort, isEnded, resumeAction, transition } from "./phases.js";
export type { CutoverDecision, MigrationState, Phase, Placement, ResumeAction, Transition, VolumePairRef } from "./phases.js";
export { DEFAULT_ALLOWANCES, cutoverCosts, startToReadyMs } from "./costs.js";
export type { CostAllowances, CostInputs, CostSource, CostTerm, CutoverCosts } from "./costs.js";
export { decideAfterRound, dirtyRate, fitRoundCost, predict } from "./prediction.js";
export type { Convergence, CutoverPolicy, Prediction, PredictionInputs, PresyncDecision, RoundObservation } from "./prediction.js";
export { combineConvergence, decidePresync, predictMigration } from "./presync.js";
export type { MigrationPredictionInputs, ObservedRound, PresyncPolicy } from "./presync.js";
export { replay } from "./replay.js";
export type { MigrationView, TimelineEntry } from "./replay.js";
