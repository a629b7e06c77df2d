// Kubernetes API failures as TheseusErrors: the API server's Status says what went wrong (reason, message, causes);
// this turns it into a code a program can branch on and a hint a person can act on. `what` names the operation
// ("create deployments.apps shop/web"), so that a 403 says which RBAC rule the agent lacks.
import { ApiException } from "@kubernetes/client-node";
import { TheseusError, isAbortError, systemErrorCode } from "../common/index.js";
import type { ErrorCode } from "../common/index.js";

/** The parts of a metav1.Status the messages use. */
interface KubeStatus {
  readonly message?: string;
  readonly reason?: string;
  readonly details?: { readonly causes?: ReadonlyArray<{ readonly field?: string; readonly message?: string; readonly reason?: string }> };
}

const UNREACHABLE = new Set(["ECONNREFUSED", "ECONNRESET", "ENOTFOUND", "EHOSTUNREACH", "ENETUNREACH", "ETIMEDOUT", "EAI_AGAIN", "EPIPE"]);

export function kubeError(error: unknown, what: string): TheseusError {
  if (error instanceof TheseusError) return error;
  if (isAbortError(error)) return new TheseusError("cancelled", `${what}: cancelled`, { cause: error });
  if (error instanceof ApiException) return fromStatus(error.code, statusOf(error.body), what, error);
  const sys = systemErrorCode(error) ?? systemErrorCode(error instanceof Error ? error.cause : undefined);
  if (sys !== undefined && UNREACHABLE.has(sys)) {
    return new TheseusError("unavailable", `${what}: cannot reach the Kubernetes API server (${sys})`, {
      cause: error,
      hint: "check the kubeconfig's server address and that the API server is running",
    });
  }
  return new TheseusError("internal", `${what}: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
}

function fromStatus(code: number, status: KubeStatus, what: string, cause: unknown): TheseusError {
  const detail = status.message ?? `HTTP ${code}`;
  const make = (errorCode: ErrorCode, message: string, hint?: string): TheseusError => new TheseusError(errorCode, message, { cause, hint });
  switch (code) {
    case 401:
      return make("unauthenticated", `${what}: the API server did not accept the agent's credentials`, "check the kubeconfig's user (token or client certificate), or the pod's service-account token");
    case 403:
      return make("permission_denied", `${what}: ${detail}`, `the agent's service account needs RBAC for ${what}`);
    case 404:
      return make("not_found", `${what}: ${detail}`);
    case 409:
      return status.reason === "AlreadyExists"
        ? make("already_exists", `${what}: ${detail}`)
        : make("failed_precondition", `${what}: ${detail}`, "the object changed meanwhile: read it again and retry");
    case 422: {
      const causes = (status.details?.causes ?? []).map((c) => `${c.field ?? "?"}: ${c.message ?? c.reason ?? ""}`);
      const message = causes.length === 0 || causes.every((c) => detail.includes(c)) ? detail : `${detail} (${causes.join("; ")})`;
      return make("invalid_argument", `${what}: the API server refused the object: ${message}`, "fix the object (or the plan's rules that produced it) and retry");
    }
    case 400:
      return make("invalid_argument", `${what}: ${detail}`);
    case 410:
      return make("failed_precondition", `${what}: ${detail}`, "the resource version expired: list again");
    case 429:
      return make("unavailable", `${what}: the API server is throttling requests`, "retry later");
    default:
      if (code >= 500) return make("unavailable", `${what}: the API server failed (HTTP ${code}): ${detail}`, "retry; check the API server's health if it persists");
      return make("internal", `${what}: HTTP ${code}: ${detail}`);
  }
}

function statusOf(body: unknown): KubeStatus {
  if (typeof body === "string") {
    try {
      return statusOf(JSON.parse(body));
    } catch {
      return body.trim() === "" ? {} : { message: body.trim().slice(0, 500) };
    }
  }
  return typeof body === "object" && body !== null ? body : {};
}
