// The transfer service (TransferService), called by the peer agent of an active session: the source side of a sync round.
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

export function createTransferService(deps: TransferServiceDeps): Implementation<typeof TransferService> {
  return {
    async *sync(requests, ctx) {
      const it = requests[Symbol.asyncIterator]();
      const first = await it.next();
      if (first.done === true) throw new TheseusError("protocol", "the sync stream closed before its first message");
      const session = deps.sessions.authorize(first.value.sessionId, ctx.metadata[SESSION_TOKEN_METADATA], ctx.peer);
      const root = await deps.volumes.root(session.volume);
      const source = deps.syncSources.get(session.volume, root);
      source.setBandwidth(Number(first.value.bandwidthBytesPerSecond));
      const log = deps.logger.child({ sessionId: session.id, migrationId: session.migrationId, volume: session.volume, peer: ctx.peer.name });
      log.info("sync round requested by the peer agent");
      const frames = async function* (): AsyncGenerator<Uint8Array> {
        yield first.value.frame;
        for (;;) {
          const next = await it.next();
          if (next.done === true) return;
          yield next.value.frame;
        }
      };
      for await (const frame of source.serve(frames(), ctx.signal)) yield { frame };
    },
  };
}
