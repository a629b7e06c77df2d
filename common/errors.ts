// One error type for the whole project (STYLE.md habit 4): a stable `code` a program can branch on, a message a person
// can act on, an optional `hint` that says what to do, and the original `cause`. Everything thrown at a boundary is
// normalised with TheseusError.from() so that the CLI can print the message and the fix instead of a stack.

export type ErrorCode =
  | "invalid_argument" // the caller asked for something malformed: fix the input
  | "not_found" // a named thing (volume, session, file) does not exist
  | "already_exists"
  | "permission_denied" // authenticated, but not allowed (wrong role, wrong session, EACCES)
  | "unauthenticated" // no or untrusted certificate
  | "failed_precondition" // the system is not in a state that allows this (wrong phase, digest mismatch)
  | "unavailable" // the peer cannot be reached now; retrying may help
  | "deadline_exceeded"
  | "cancelled"
  | "resource_exhausted" // disk full, limits exceeded
  | "data_loss" // integrity check failed: hashes differ, truncated stream
  | "protocol" // the peer sent something the protocol forbids (hostile or broken peer)
  | "internal";

export interface TheseusErrorOptions {
  readonly cause?: unknown;
  /** What the user should do about it, printed by the CLI under the message. */
  readonly hint?: string | undefined;
}

export class TheseusError extends Error {
  override readonly name = "TheseusError";
  readonly code: ErrorCode;
  readonly hint: string | undefined;

  constructor(code: ErrorCode, message: string, options: TheseusErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.hint = options.hint;
  }

  /** Normalises anything thrown into a TheseusError, mapping Node's system errors to codes a user can act on. */
  static from(reason: unknown, fallback: ErrorCode = "internal"): TheseusError {
    if (reason instanceof TheseusError) return reason;
    // AbortSignal.timeout() aborts with a TimeoutError: a deadline passed, which is not the user cancelling.
    if (reason instanceof Error && reason.name === "TimeoutError") {
      return new TheseusError("deadline_exceeded", reason.message || "the operation timed out", { cause: reason });
    }
    if (isAbortError(reason)) return new TheseusError("cancelled", "the operation was cancelled", { cause: reason });
    if (reason instanceof Error) {
      const sys = systemErrorCode(reason);
      if (sys !== undefined) {
        const mapped = SYSTEM_CODES[sys];
        if (mapped !== undefined) return new TheseusError(mapped.code, reason.message, { cause: reason, hint: mapped.hint });
      }
      return new TheseusError(fallback, reason.message, { cause: reason });
    }
    return new TheseusError(fallback, String(reason));
  }
}

const SYSTEM_CODES: Readonly<Record<string, { code: ErrorCode; hint?: string }>> = {
  ENOENT: { code: "not_found" },
  EEXIST: { code: "already_exists" },
  EACCES: { code: "permission_denied", hint: "check the file's owner and mode, or run the agent as a user that may read it" },
  EPERM: { code: "permission_denied", hint: "the operation needs privileges this process does not have" },
  ENOSPC: { code: "resource_exhausted", hint: "the disk is full: free space on the target volume or grow it, then resume" },
  EDQUOT: { code: "resource_exhausted", hint: "a disk quota is exhausted: raise it, then resume" },
  EMFILE: { code: "resource_exhausted", hint: "too many open files: raise the process's file descriptor limit" },
  ECONNREFUSED: { code: "unavailable", hint: "is the agent running and listening on that address?" },
  ECONNRESET: { code: "unavailable", hint: "the connection was reset; retry, and check the peer's log" },
  EPIPE: { code: "unavailable" },
  ETIMEDOUT: { code: "deadline_exceeded" },
  EADDRINUSE: { code: "already_exists", hint: "another process listens on that address: choose another port" },
  ENOTDIR: { code: "invalid_argument" },
  EISDIR: { code: "invalid_argument" },
  ELOOP: { code: "protocol", hint: "a path goes through a symbolic link, which is never followed" },
};

export function systemErrorCode(error: unknown): string | undefined {
  if (typeof error !== "object" || error === null || !("code" in error)) return undefined;
  const code = (error).code;
  return typeof code === "string" ? code : undefined;
}

export function isAbortError(error: unknown): boolean {
  return error instanceof Error && (error.name === "AbortError" || systemErrorCode(error) === "ABORT_ERR");
}

/** The one-line-per-cause text the CLI prints: message, then each cause, then the hint. */
export function describeError(error: unknown): string {
  const e = TheseusError.from(error);
  const lines = [`error (${e.code}): ${e.message}`];
  let cause: unknown = e.cause;
  for (let depth = 0; cause !== undefined && depth < 5; depth++) {
    const text = cause instanceof Error ? cause.message : typeof cause === "string" ? cause : JSON.stringify(cause);
    if (text !== "" && !lines.some((l) => l.includes(text))) lines.push(`  caused by: ${text}`);
    cause = cause instanceof Error ? cause.cause : undefined;
  }
  if (e.hint !== undefined) lines.push(`  hint: ${e.hint}`);
  return lines.join("\n");
}
