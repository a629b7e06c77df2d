// The transfer service (TransferService), called by the peer agent of an active session: the source side of a sync round.
//
// The session is checked when the call starts and stays in charge while it runs: closing or expiring it cancels the
// call (SessionRegistry.track, CallContext.cancel), whatever the peer is doing. Nothing a call asks for is applied
// before the call is accepted: the bandwidth the peer names in its first message limits only its own round, once the
// round is running, and never more than the coordinator's limit for the volume (SetBandwidth), which it cannot raise.
import { TheseusError } from "../common/index.js";
import type { Logger } from "../common/index.js";
import type { Implementation } from "../rpc/index.js";
import type { TransferService } from "../proto/gen/theseus/v1/transfer_pb.js";
import { SESSION_TOKEN_METADATA } from "./migration/index.js";
import { nextWithin, syncTimeouts } from "./sync/index.js";
import type { SyncSources, SyncTimeouts } from "./sync/index.js";
import type { SessionRegistry } from "./migration/index.js";
import type { VolumeRegistry } from "./volumes.js";
import { relayToMover } from "./mover-client.js";
import { moverLabels } from "./cluster/index.js";
import type { TlsMaterial } from "../rpc/index.js";

export interface TransferServiceDeps {
  readonly volumes: VolumeRegistry;
  readonly sessions: SessionRegistry;
  readonly logger: Logger;
  readonly syncSources: SyncSources;
  /** Default: from the environment (sync/idle.ts). */
  readonly timeouts?: SyncTimeouts;
  /** For a volume behind a mover pod: this agent's name and material, which the mover carries too. */
  readonly mover?: { readonly clusterName: string; readonly tls: TlsMaterial };
  /**
   * A mover's: end the call only once the peer has ended its stream. The target sends load reports until its round
   * ends, after ours; a directly connected target's late frames are simply dropped, but the agent relaying them into
   * a finished mover stream fails the write, and grpc-js then cancels the call and drops the round's last frames.
   */
  readonly awaitPeerEnd?: boolean;
}

export function createTransferService(deps: TransferServiceDeps): Implementation<typeof TransferService> {
  const timeouts = deps.timeouts ?? syncTimeouts();
  return {
    async *sync(requests, ctx) {
      const it = requests[Symbol.asyncIterator]();
      // A peer that says nothing is ended, at once and whatever it reads: before its first message (no session is
      // needed to open a call), and when it falls silent mid-round (its round then releases the volume).
      const silent = (what: string, ms: number) => (): TheseusError => {
        const e = new TheseusError("deadline_exceeded", `the peer sent ${what} for ${Math.round(ms / 1000)} s`, { hint: "the peer agent is stuck or its link is down" });
        ctx.cancel(e);
        return e;
      };
      const first = await nextWithin(it, timeouts.firstMessageMs, silent("no first message", timeouts.firstMessageMs), ctx.signal);
      if (first.done === true) throw new TheseusError("protocol", "the sync stream closed before its first message");
      const session = deps.sessions.authorize(first.value.sessionId, ctx.metadata[SESSION_TOKEN_METADATA], ctx.peer);
      const release = deps.sessions.track(session.id, (reason) => ctx.cancel(reason));
      try {
        const log = deps.logger.child({ sessionId: session.id, migrationId: session.migrationId, volume: session.volume, peer: ctx.peer.name });
        log.info("sync round requested by the peer agent");
        let peerEnded: () => void = () => undefined;
        const ended = new Promise<void>((resolve) => (peerEnded = resolve));
        const frames = async function* (): AsyncGenerator<Uint8Array> {
          yield first.value.frame;
          for (;;) {
            const next = await nextWithin(it, timeouts.idleMs, silent("nothing", timeouts.idleMs), ctx.signal);
            if (next.done === true) {
              peerEnded();
              return;
            }
            yield next.value.frame;
          }
        };
        const round = { bandwidthBytesPerSecond: Number(first.value.bandwidthBytesPerSecond) };
        if (deps.mover !== undefined && (await deps.volumes.isMover(session.volume, ctx.signal))) {
          yield* relayRound(deps, deps.mover, session, round.bandwidthBytesPerSecond, frames(), ctx.signal, log);
          return;
        }
        const root = await deps.volumes.root(session.volume);
        const source = deps.syncSources.get(session.volume, root);
        for await (const frame of source.serve(frames(), ctx.signal, round)) yield { frame };
        // The source drains the peer's stream in the background after the index; wait for its end (or the call's).
        if (deps.awaitPeerEnd === true) await Promise.race([ended, new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve(), { once: true }))]);
      } finally {
        release();
      }
    },
  };
}

/**
 * A round of a volume behind a mover, its frames relayed. A migration's rounds share the migration's mover (its
 * participant deletes it when the migration ends); a copy's round gets a pod of its own, deleted after.
 */
async function* relayRound(
  deps: TransferServiceDeps,
  self: { readonly clusterName: string; readonly tls: TlsMaterial },
  session: { readonly volume: string; readonly migrationId: string; readonly ofMigration?: boolean },
  requested: number,
  frames: AsyncIterable<Uint8Array>,
  signal: AbortSignal,
  logger: Logger,
): AsyncGenerator<{ frame: Uint8Array }> {
  const volume = await deps.volumes.open(session.volume, signal, moverLabels(session.migrationId), session.ofMigration === true ? session.migrationId : undefined);
  try {
    if (volume.kind !== "mover") throw new TheseusError("internal", `volume ${session.volume} was expected behind a mover`);
    const relay = relayToMover(
      { mover: volume.mover, lost: volume.lost, tls: self.tls, migrationId: session.migrationId, clusterName: self.clusterName, bandwidthBytesPerSecond: deps.volumes.moverBandwidth(session.volume, requested), logger },
      frames,
      signal,
    );
    for await (const frame of relay) yield { frame };
  } finally {
    await volume.release();
  }
}
