// The transfer service (TransferService), called by the peer agent of an active session: the source side of a copy.
import type { Logger } from "../common/index.js";
import type { Implementation } from "../rpc/index.js";
import type { TransferService } from "../proto/gen/theseus/v1/transfer_pb.js";
import { packVolume } from "./archive.js";
import { SESSION_TOKEN_METADATA } from "./sessions.js";
import type { SessionRegistry } from "./sessions.js";
import type { VolumeRegistry } from "./volumes.js";

export interface TransferServiceDeps {
  readonly volumes: VolumeRegistry;
  readonly sessions: SessionRegistry;
  readonly logger: Logger;
}

export function createTransferService(deps: TransferServiceDeps): Implementation<typeof TransferService> {
  return {
    async *pullArchive(request, ctx) {
      const session = deps.sessions.authorize(request.sessionId, ctx.metadata[SESSION_TOKEN_METADATA], ctx.peer);
      const root = await deps.volumes.root(session.volume);
      const log = deps.logger.child({ sessionId: session.id, migrationId: session.migrationId, volume: session.volume, peer: ctx.peer.name });
      log.info("streaming volume to the peer agent");
      let wireBytes = 0;
      for await (const data of packVolume(root, ctx.signal)) {
        wireBytes += data.length;
        yield { data };
      }
      log.info({ wireBytes }, "volume streamed");
    },
  };
}
