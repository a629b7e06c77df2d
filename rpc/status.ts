// TheseusError <-> gRPC status. The code and hint travel in trailing metadata so that a client rebuilds the very error
// the server raised (code, message, hint), not a generic "13 INTERNAL".
import { Metadata, status } from "@grpc/grpc-js";
import type { ServiceError, StatusObject } from "@grpc/grpc-js";
import { TheseusError } from "../common/index.js";
import type { ErrorCode } from "../common/index.js";

const CODE_KEY = "theseus-error-code";
const HINT_KEY = "theseus-error-hint";

const TO_STATUS: Readonly<Record<ErrorCode, status>> = {
  invalid_argument: status.INVALID_ARGUMENT,
  not_found: status.NOT_FOUND,
  already_exists: status.ALREADY_EXISTS,
  permission_denied: status.PERMISSION_DENIED,
  unauthenticated: status.UNAUTHENTICATED,
  failed_precondition: status.FAILED_PRECONDITION,
  unavailable: status.UNAVAILABLE,
  deadline_exceeded: status.DEADLINE_EXCEEDED,
  cancelled: status.CANCELLED,
  resource_exhausted: status.RESOURCE_EXHAUSTED,
  data_loss: status.DATA_LOSS,
  protocol: status.INVALID_ARGUMENT,
  internal: status.INTERNAL,
};

const FROM_STATUS: Readonly<Partial<Record<status, ErrorCode>>> = {
  [status.INVALID_ARGUMENT]: "invalid_argument",
  [status.NOT_FOUND]: "not_found",
  [status.ALREADY_EXISTS]: "already_exists",
  [status.PERMISSION_DENIED]: "permission_denied",
  [status.UNAUTHENTICATED]: "unauthenticated",
  [status.FAILED_PRECONDITION]: "failed_precondition",
  [status.UNAVAILABLE]: "unavailable",
  [status.DEADLINE_EXCEEDED]: "deadline_exceeded",
  [status.CANCELLED]: "cancelled",
  [status.RESOURCE_EXHAUSTED]: "resource_exhausted",
  [status.DATA_LOSS]: "data_loss",
};

export function toStatus(reason: unknown): Partial<StatusObject> {
  const error = TheseusError.from(reason);
  const metadata = new Metadata();
  metadata.set(CODE_KEY, error.code);
  if (error.hint !== undefined) metadata.set(HINT_KEY, error.hint);
  return { code: TO_STATUS[error.code], details: error.message, metadata };
}

export function fromServiceError(reason: unknown, context: string): TheseusError {
  if (reason instanceof TheseusError) return reason;
  if (isLostStatus(reason)) {
    return new TheseusError(
      "protocol",
      `${context}: the peer sent a message compressed in a way this side does not accept (the compressed flag without a grpc-encoding, or an unknown encoding)`,
      { cause: reason, hint: "Theseus agents never compress at the gRPC level: the peer is not a Theseus agent of this version, or is broken or hostile" },
    );
  }
  if (!isServiceError(reason)) return TheseusError.from(reason);
  const sentCode = reason.metadata?.get(CODE_KEY)[0];
  const sentHint = reason.metadata?.get(HINT_KEY)[0];
  const code = typeof sentCode === "string" && sentCode in TO_STATUS ? (sentCode as ErrorCode) : (FROM_STATUS[reason.code] ?? "internal");
  const hint = typeof sentHint === "string" ? sentHint : defaultHint(reason.code);
  return new TheseusError(code, `${context}: ${reason.details || reason.message}`, { cause: reason, hint });
}

function defaultHint(code: status): string | undefined {
  if (code === status.UNAVAILABLE) return "is the agent running, and is its address and port reachable from here?";
  if (code === status.UNAUTHENTICATED) return "check that both sides hold certificates issued by the same `theseus certs init` CA";
  return undefined;
}

/**
 * grpc-js's client fails a message whose compression it refuses (its compression filter) by rejecting with a plain
 * Error where a status is expected, and then builds the call's error from that as if it were one: code, name and
 * details all undefined, and the original text lost ("undefined undefined: undefined"). Only its compression filter
 * does that, so this is what the shape means.
 */
function isLostStatus(reason: unknown): boolean {
  return reason instanceof Error && (reason as Partial<ServiceError>).code === undefined && reason.message.startsWith("undefined undefined: undefined");
}

function isServiceError(reason: unknown): reason is ServiceError {
  return reason instanceof Error && typeof (reason as Partial<ServiceError>).code === "number" && "details" in reason;
}
