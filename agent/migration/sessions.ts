// Transfer sessions: the source agent lets one named peer agent read one volume, with a secret token, for a while.
// The token is compared in constant time and never logged; the peer's certificate must also name the expected cluster,
// so a stolen token is useless without that agent's key.
import { randomBytes, randomUUID, timingSafeEqual } from "node:crypto";
import { TheseusError } from "../../common/index.js";
import type { PeerIdentity } from "../../rpc/index.js";

export interface TransferSession {
  readonly id: string;
  readonly migrationId: string;
  readonly volume: string;
  readonly peerCluster: string;
  readonly expiresAtMs: number;
}

export const SESSION_TOKEN_METADATA = "theseus-session-token";

export class SessionRegistry {
  readonly #sessions = new Map<string, { session: TransferSession; token: Buffer }>();
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  open(request: { migrationId: string; volume: string; peerCluster: string; ttlMs: number }): { session: TransferSession; token: string } {
    this.#expire();
    const token = randomBytes(32);
    const session: TransferSession = {
      id: randomUUID(),
      migrationId: request.migrationId,
      volume: request.volume,
      peerCluster: request.peerCluster,
      expiresAtMs: this.#now() + request.ttlMs,
    };
    this.#sessions.set(session.id, { session, token });
    return { session, token: token.toString("base64url") };
  }

  /**
   * Registers a session again under its id and token: a migration's sessions outlive an agent restart, because the
   * peer keeps pulling rounds with the token it was given and cannot ask for a new one (only coordinators may).
   */
  restore(session: TransferSession, token: string): void {
    this.#sessions.set(session.id, { session, token: Buffer.from(token, "base64url") });
  }

  close(id: string): void {
    this.#sessions.delete(id);
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
    for (const [id, entry] of this.#sessions) if (entry.session.expiresAtMs <= now) this.#sessions.delete(id);
  }
}
