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

export interface TransferServiceDeps {
  readonly volumes: VolumeRegistry;
  readonly sessions: SessionRegistry;
  readonly logger: Logger;
  readonly syncSources: SyncSources;
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
        const root = await deps.volumes.root(session.volume);
        const source = deps.syncSources.get(session.volume, root);
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
        for await (const frame of source.serve(frames(), ctx.signal, round)) yield { frame };
      } finally {
        release();
      }
    },
  };
}
