// Transfer sessions: the source agent lets one named peer agent read one volume, with a secret token, for a while.
// The token is compared in constant time and never logged; the peer's certificate must also name the expected cluster,
// so a stolen token is useless without that agent's key. Authority is checked when a call starts and revoked while it
// runs: closing a session, or its expiry, cancels every call in flight that it authorised (the proto promises that
// the token stops working at once, and a stream lasts as long as the peer likes).
import { randomBytes, randomUUID, timingSafeEqual } from "node:crypto";
import { TheseusError } from "../../common/index.js";
import type { PeerIdentity } from "../../rpc/index.js";

export interface TransferSession {
  readonly id: string;
  readonly migrationId: string;
  readonly volume: string;
  readonly peerCluster: string;
  readonly expiresAtMs: number;
  /**
   * Opened by a migration's participant (not by a coordinator's OpenSession, as a copy's is): its rounds share one
   * mover per claim, which the migration's end deletes.
   */
  readonly ofMigration?: boolean;
}

export const SESSION_TOKEN_METADATA = "theseus-session-token";

/** How a call in flight is stopped when its session ends. */
export type RevokeCall = (reason: TheseusError) => void;

interface Entry {
  session: TransferSession;
  token: Buffer;
  calls: Set<RevokeCall>;
  timer: NodeJS.Timeout | undefined;
}

export class SessionRegistry {
  readonly #sessions = new Map<string, Entry>();
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  #add(session: TransferSession, token: Buffer): void {
    // Restoring the same session again (same token) keeps its calls; anything else under that id ends them.
    const old = this.#sessions.get(session.id);
    let calls = new Set<RevokeCall>();
    if (old !== undefined && old.token.equals(token)) {
      clearTimeout(old.timer);
      calls = old.calls;
      this.#sessions.delete(session.id);
    } else this.#end(session.id, "replaced");
    const entry: Entry = { session, token, calls, timer: undefined };
    this.#sessions.set(session.id, entry);
    this.#arm(entry);
  }

  /** Expiry cancels the calls at the expiry instant, not at the next lookup. Timers are re-armed past setTimeout's range. */
  #arm(entry: Entry): void {
    const delay = Math.max(0, entry.session.expiresAtMs - this.#now());
    entry.timer = setTimeout(() => {
      if (this.#now() >= entry.session.expiresAtMs) this.#end(entry.session.id, "expired");
      else this.#arm(entry);
    }, Math.min(delay, 2 ** 31 - 1));
    entry.timer.unref();
  }

  #end(id: string, why: "closed" | "expired" | "replaced"): void {
    const entry = this.#sessions.get(id);
    if (entry === undefined) return;
    this.#sessions.delete(id);
    clearTimeout(entry.timer);
    const reason = new TheseusError("permission_denied", `transfer session "${id}" was ${why}: its calls in flight are cancelled`, {
      hint: "sessions end with their migration or expire; let the coordinator open a new one",
    });
    for (const revoke of entry.calls) revoke(reason);
    entry.calls.clear();
  }

  /**
   * Registers a call in flight under the session that authorised it, so that closing or expiring the session cancels
   * it. Returns the function that unregisters it when the call ends. A session already gone revokes at once.
   */
  track(id: string, revoke: RevokeCall): () => void {
    const entry = this.#sessions.get(id);
    if (entry === undefined || entry.session.expiresAtMs <= this.#now()) {
      revoke(new TheseusError("permission_denied", `transfer session "${id}" is no longer active`));
      return () => undefined;
    }
    entry.calls.add(revoke);
    return () => entry.calls.delete(revoke);
  }

  open(request: { migrationId: string; volume: string; peerCluster: string; ttlMs: number; ofMigration?: boolean }): { session: TransferSession; token: string } {
    this.#expire();
    const token = randomBytes(32);
    const session: TransferSession = {
      id: randomUUID(),
      migrationId: request.migrationId,
      volume: request.volume,
      peerCluster: request.peerCluster,
      expiresAtMs: this.#now() + request.ttlMs,
      ...(request.ofMigration === true ? { ofMigration: true } : {}),
    };
    this.#add(session, token);
    return { session, token: token.toString("base64url") };
  }

  /**
   * Registers a session again under its id and token: a migration's sessions outlive an agent restart, because the
   * peer keeps pulling rounds with the token it was given and cannot ask for a new one (only coordinators may).
   */
  restore(session: TransferSession, token: string): void {
    this.#add(session, Buffer.from(token, "base64url"));
  }

  /** Ends a session: its token stops working and its calls in flight are cancelled. */
  close(id: string): void {
    this.#end(id, "closed");
  }

  /** The session a transfer call may use, or a permission error that does not reveal which check failed first. */
  authorize(id: string, token: string | undefined, peer: PeerIdentity): TransferSession {
    this.#expire();
    const entry = this.#sessions.get(id);
    const presented = Buffer.from(token ?? "", "base64url");
    const tokenOk = entry !== undefined && presented.length === entry.token.length && timingSafeEqual(presented, entry.token);
    if (entry === undefined || !tokenOk || peer.role !== "agent" || peer.name !== entry.session.peerCluster) {
      throw new TheseusError("permission_denied", `no active transfer session "${id}" for agent "${peer.name}" with that token`, {
        hint: "sessions expire and close after use: let the coordinator open a new one",
      });
    }
    return entry.session;
  }

  #expire(): void {
    const now = this.#now();
    for (const [id, entry] of this.#sessions) if (entry.session.expiresAtMs <= now) this.#end(id, "expired");
  }
}
