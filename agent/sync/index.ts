// The volume sync engine (the data plane): pre-copy rounds that send only what changed since the target's state.
//
// Design in brief (docs: the comments of each file say why):
// - Both sides walk their volume in the same deterministic order (pre-order, names sorted), so the target's index and
//   the source's walk merge-join as two sorted streams: O(depth) memory, no per-file round trip.
// - Each side keeps a stat-validated hash cache in its state directory (outside the volume), rewritten each round as
//   a sorted file: unchanged files are never re-read, and a restarted agent loses nothing.
// - Large files (>= 1 MiB) are hashed per 4 KiB block (the page size databases rewrite in place); the file's hash is
//   the sha256 of its block list, so the target patches changed blocks in place and verifies the whole file without
//   re-reading it. Small files travel whole, many per ~256 KiB frame, compressed together when compression pays.
// - The target verifies every file against the source's hash before it is renamed into place, and both sides compute
//   the same volume digest; a mismatch fails the round.
// - Transport-independent: a round is `runTargetRound(options, connect)` where `connect(up)` carries the target's
//   frames to `source.serve(up)` and returns its frames (in memory in tests, a gRPC bidi stream between agents).
export { createSyncSource } from "./source.js";
export type { CompressionSetting, SyncSource, SyncSourceOptions } from "./source.js";
export { runTargetRound, STAGING_DIR } from "./target.js";
export type { RoundProgress, RoundResult, SyncConnect, SyncTargetOptions } from "./target.js";
export type { RoundStatsWire } from "./codec.js";
export { TokenBucket } from "./throttle.js";
export type { Clock } from "./throttle.js";
export { SyncSources, syncStateDir } from "./registry.js";
export type { SyncRole } from "./registry.js";
