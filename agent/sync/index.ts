// The volume sync engine (the data plane): pre-copy rounds that send only what changed since the target's state.
//
// Design in brief (each file's comments say why in detail):
// - Both sides walk their volume in the same deterministic order (pre-order, names sorted), so the target's index and
//   the source's walk merge-join as two sorted streams: O(depth) memory, no per-file round trip. The target streams
//   its index up; the source answers with records for what differs; bulk data flows source -> target.
// - Each side keeps a stat-validated hash cache (inode, size, mtime, ctime) in the volume's reserved state directory
//   (registry.ts), rewritten each round as one sorted file: unchanged files are never re-read, a restarted agent loses
//   nothing, and a lost cache only costs a re-read (equal hashes are not resent). Not even that when the other side's
//   entry has the file's size, mtime and mode: like rsync's quick check, its hash is taken unread ("vouched") and
//   verified in later rounds within a budget (state.ts, VERIFY_BUDGET_*; the trade-off in docs/architecture.md).
// - Large files (>= 1 MiB) are hashed per 4 KiB block (the page databases rewrite in place; 1% of random 4 KiB pages
//   must cost ~1% on the wire, which any larger block breaks). A large file's hash is the sha256 of its block list,
//   so the target patches changed blocks in place and verifies the whole file without re-reading it; the source diffs
//   against the block list of the content the target reported, kept in blocks/<hash>; a source that lost its lists is
//   offered the target's (list-offers.ts). Appends are changed tail blocks.
//   Small files travel whole, many per ~256 KiB frame, compressed together when compression pays; one that grew by an
//   append (its first bytes hash to the target's copy) travels as its tail, checked by the target against its copy.
// - Integrity: the target verifies every file against the source's hash before it is renamed into place (staging in
//   <volume>/.theseus-partial: same filesystem, so rename is atomic; removed at the end of the round), and both sides
//   compute the same volume digest; a mismatch fails the round (data_loss).
// - Resume: files renamed into place are complete and indexed even when a round fails; a large file cut mid-transfer
//   keeps its verified first blocks (checkpointed every 256 MiB and on failure) and the next round sends the rest.
//   A file patched in place is journaled as torn until verified (torn.ts): never indexed or digested as complete, and
//   a cut patch costs only what it had left. Scratch files of killed rounds are swept (leftovers.ts).
// - Compression: zstd per frame, raw when it saves < 3%; "auto" picks the level from the bandwidth limit, or switches
//   zstd on when the peer drains slowly (a slow link), never on a fast one (CPU-bound on loopback).
// - Transport-independent: a round is `runTargetRound(options, connect)` where `connect(up)` carries the target's
//   frames to `source.serve(up)` and returns its frames (in memory in tests, TransferService.Sync between agents).
export { createSyncSource } from "./source.js";
export type { CompressionSetting, RoundOptions, SyncSource, SyncSourceOptions } from "./source.js";
export { runTargetRound, STAGING_DIR } from "./target.js";
export type { RoundProgress, RoundResult, SyncConnect, SyncTargetOptions } from "./target.js";
export type { RoundStatsWire } from "./codec.js";
export { LOCK_NAME } from "./volume-lock.js";
export { sweepAllLeftovers } from "./leftovers.js";
export { CACHE_DIR } from "./cache-dir.js";
export { TokenBucket } from "./throttle.js";
export type { Clock } from "./throttle.js";
export { SyncSources, syncStateDir } from "./registry.js";
export type { SyncStatePlacement } from "./registry.js";
export { KEEPALIVE_FRAME, nextWithin, syncTimeouts } from "./idle.js";
export type { SyncTimeouts } from "./idle.js";
export type { SyncRole } from "./registry.js";
