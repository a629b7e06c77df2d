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
import type { SyncSources } from "./sync/index.js";
import type { SessionRegistry } from "./migration/index.js";
import type { VolumeRegistry } from "./volumes.js";
import { relayToMover } from "./mover-client.js";
import type { TlsMaterial } from "../rpc/index.js";

export interface TransferServiceDeps {
  readonly volumes: VolumeRegistry;
  readonly sessions: SessionRegistry;
  readonly logger: Logger;
  readonly syncSources: SyncSources;
  /** For a volume behind a mover pod: this agent's name and material, which the mover carries too. */
  readonly mover?: { readonly clusterName: string; readonly tls: TlsMaterial };
}

/** Resolves the iterator's next message, or rejects as soon as the call is cancelled (a peer that never sends). */
async function nextOrAbort<T>(it: AsyncIterator<T>, signal: AbortSignal): Promise<IteratorResult<T>> {
  if (signal.aborted) throw signal.reason;
  let onAbort: (() => void) | undefined;
  try {
    return await Promise.race([
      it.next(),
      new Promise<never>((_, reject) => {
        onAbort = () => reject(signal.reason as Error);
        signal.addEventListener("abort", onAbort, { once: true });
      }),
    ]);
  } finally {
    if (onAbort !== undefined) signal.removeEventListener("abort", onAbort);
  }
}

export function createTransferService(deps: TransferServiceDeps): Implementation<typeof TransferService> {
  return {
    async *sync(requests, ctx) {
      const it = requests[Symbol.asyncIterator]();
      const first = await nextOrAbort(it, ctx.signal);
      if (first.done === true) throw new TheseusError("protocol", "the sync stream closed before its first message");
      const session = deps.sessions.authorize(first.value.sessionId, ctx.metadata[SESSION_TOKEN_METADATA], ctx.peer);
      const release = deps.sessions.track(session.id, (reason) => ctx.cancel(reason));
      try {
        const log = deps.logger.child({ sessionId: session.id, migrationId: session.migrationId, volume: session.volume, peer: ctx.peer.name });
        log.info("sync round requested by the peer agent");
        const frames = async function* (): AsyncGenerator<Uint8Array> {
          yield first.value.frame;
          for (;;) {
            const next = await nextOrAbort(it, ctx.signal);
            if (next.done === true) return;
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
      } finally {
        release();
      }
    },
  };
}

/** A round of a volume behind a mover: its pod started for this round, the frames relayed, the pod deleted after. */
async function* relayRound(
  deps: TransferServiceDeps,
  self: { readonly clusterName: string; readonly tls: TlsMaterial },
  session: { readonly volume: string; readonly migrationId: string },
  requested: number,
  frames: AsyncIterable<Uint8Array>,
  signal: AbortSignal,
  logger: Logger,
): AsyncGenerator<{ frame: Uint8Array }> {
  const labels: Record<string, string> = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(session.migrationId) ? { "theseus.io/migration": session.migrationId } : {};
  const volume = await deps.volumes.open(session.volume, signal, labels);
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
