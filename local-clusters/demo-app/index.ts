// The demo app of the local clusters: a small database-like HTTP service (records.log + pages.db on its volume), the
// load client that writes to it and records every ack, and the verifier that proves the acks on a volume. The emulated
// kubelet runs `main.js serve`; the demo and the end-to-end tests call these functions in-process.
export { startDemoServer } from "./server.js";
export type { DemoServer, DemoServerOptions, DemoServerState, DemoServerStats } from "./server.js";
export { runLoad } from "./load.js";
export type { AckLine, LoadOptions, LoadProgress, LoadSummary } from "./load.js";
export { formatVerifyReport, verifyVolume } from "./verify.js";
export type { Problem, ProblemKind, VerifyOptions, VerifyReport } from "./verify.js";
export { CLEAN_SHUTDOWN_FILE, PAGES_FILE, RECORDS_FILE, RecordStore, SEGMENT_FILE, logFiles, segmentFileName } from "./record-store.js";
export type { AppendResult, RecordStoreOptions, RecoveryReport, StoreState, StoreStats } from "./record-store.js";
export { LOCK_FILE } from "./lock.js";
export { payloadFromSeed } from "./payload.js";
export { encodeRecord, RECORD_HEADER_BYTES } from "./record-log.js";
