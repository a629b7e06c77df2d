// Foundations shared by every component: the error type, logging, AbortSignal helpers and units.
export { TheseusError, describeError, isAbortError, systemErrorCode } from "./errors.js";
export type { ErrorCode, TheseusErrorOptions } from "./errors.js";
export { createLogger, silentLogger } from "./log.js";
export type { Logger, LogLevel, LoggerOptions } from "./log.js";
export { createChannel } from "./channel.js";
export type { Channel } from "./channel.js";
export { abortReason, anySignal, sleep, throwIfAborted } from "./signals.js";
export { formatBytes, formatDuration, parseBytes, parseRate } from "./units.js";
export { VERSION } from "./version.js";
export { FAILPOINT_CRASH_EXIT_CODE, allFailpoints, defineFailpoints, failpoint, parseFailpoints } from "./failpoints.js";
export type { FailpointAction } from "./failpoints.js";
