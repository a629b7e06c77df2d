// The agent's side of the transaction: a participant per migration id (its state union and transitions, its record
// in the agent's cluster, the target's background pre-sync, the source's lease), and the sync round both it and the
// coordinator-driven SyncVolume pull from a source agent.
export { createMigrations } from "./migrations.js";
export type { Migrations, MigrationsOptions, VolumeRoots } from "./migrations.js";
export { END_PHASES, LEASED_PHASES, LEASE_EXPIRED_MESSAGE, PRESYNC_PHASES, transition } from "./state.js";
export type { Failure, MigrationMode, ParticipantEvent, ParticipantRole, ParticipantState, Phase, QuiescedObject, Transition } from "./state.js";
export { MIGRATION_FAILPOINTS } from "./failpoints.js";
export { pullRound, pullRoundThroughMover, roundStatsOf } from "./rounds.js";
export type { MoverRoundOptions } from "./rounds.js";
export type { PullRoundOptions } from "./rounds.js";
export { SESSION_TOKEN_METADATA, SessionRegistry } from "./sessions.js";
export type { TransferSession } from "./sessions.js";
