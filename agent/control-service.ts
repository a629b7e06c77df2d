// The agent's control service (AgentService), called by coordinators.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { TheseusError, createChannel } from "../common/index.js";
import type { Logger } from "../common/index.js";
import { createRpcClient, validateIdentityName } from "../rpc/index.js";
import type { Implementation, TlsMaterial } from "../rpc/index.js";
import type { AgentService, SyncVolumeResponseSchema } from "../proto/gen/theseus/v1/agent_pb.js";
import { TransferService } from "../proto/gen/theseus/v1/transfer_pb.js";
import type { SyncUpSchema } from "../proto/gen/theseus/v1/transfer_pb.js";
import { runTargetRound, syncStateDir } from "./sync/index.js";
import type { SyncConnect, SyncSources } from "./sync/index.js";
import { SESSION_TOKEN_METADATA } from "./sessions.js";
import type { SessionRegistry } from "./sessions.js";
import type { VolumeRegistry } from "./volumes.js";
import type { AppHandlers } from "./app-service.js";

export interface ControlServiceDeps {
  readonly clusterName: string;
  readonly version: string;
  readonly volumes: VolumeRegistry;
  readonly sessions: SessionRegistry;
  readonly tls: TlsMaterial;
  readonly sessionTtlMs: number;
  readonly logger: Logger;
  /** The agent's state directory: sync indexes live below it, never in a volume. */
  readonly stateDir: string;
  readonly syncSources: SyncSources;
  /** The application-model handlers (agent/app-service.ts). */
  readonly app: AppHandlers;
}

type SyncEvent = MessageInitShape<typeof SyncVolumeResponseSchema>;

export function createControlService(deps: ControlServiceDeps): Implementation<typeof AgentService> {
  return {
    async getInfo() {
      return { clusterName: deps.clusterName, version: deps.version, volumes: deps.volumes.names().map((name) => ({ name })) };
    },

    async openSession(request, ctx) {
      await deps.volumes.root(request.volume);
      validateIdentityName(request.peerCluster, "peer cluster");
      const ttlMs = request.ttlSeconds > 0 ? request.ttlSeconds * 1000 : deps.sessionTtlMs;
      const { session, token } = deps.sessions.open({ migrationId: request.migrationId, volume: request.volume, peerCluster: request.peerCluster, ttlMs });
      deps.logger.info({ sessionId: session.id, migrationId: session.migrationId, volume: session.volume, peer: session.peerCluster, by: ctx.peer.name }, "transfer session opened");
      return { sessionId: session.id, token, expiresAtUnixMs: BigInt(session.expiresAtMs) };
    },

    async closeSession(request) {
      deps.sessions.close(request.sessionId);
      return {};
    },

    async *syncVolume(request, ctx) {
      const root = await deps.volumes.root(request.volume);
      if (request.sourceAddress === "") throw new TheseusError("invalid_argument", "the source agent's address is missing");
      validateIdentityName(request.sourceCluster, "source cluster");
      const log = deps.logger.child({ migrationId: request.migrationId, volume: request.volume, source: request.sourceCluster, round: request.round });
      const client = createRpcClient(TransferService, request.sourceAddress, { tls: deps.tls, expectedPeer: { role: "agent", name: request.sourceCluster } });
      const events = createChannel<SyncEvent>();
      // The engine's frames ride in SyncUp/SyncDown messages; the session and the initial limit in the first one.
      const connect: SyncConnect = (up) => {
        const requests = async function* (): AsyncGenerator<MessageInitShape<typeof SyncUpSchema>> {
          let first = true;
          for await (const frame of up) {
            if (first) yield { sessionId: request.sessionId, bandwidthBytesPerSecond: request.bandwidthBytesPerSecond, frame };
            else yield { frame };
            first = false;
          }
        };
        const stream = client.sync(requests(), { signal: ctx.signal, metadata: { [SESSION_TOKEN_METADATA]: request.token } });
        return (async function* () {
          for await (const message of stream) yield message.frame;
        })();
      };
      log.info("sync round: pulling changes from the source agent");
      runTargetRound(
        { root, stateDir: syncStateDir(deps.stateDir, "target", request.volume), logger: log, onProgress: (p) => events.push({ event: { case: "progress", value: { entries: BigInt(p.entries), bytes: BigInt(p.bytes), wireBytes: BigInt(p.wireBytes) } } }) },
        connect,
        ctx.signal,
      ).then(
        (result) => {
          const s = result.source;
          const digest = Buffer.from(result.digest, "hex");
          events.push({
            event: {
              case: "done",
              value: {
                round: request.round,
                entriesScanned: BigInt(s.entriesScanned),
                entriesChanged: BigInt(s.entriesChanged),
                entriesDeleted: BigInt(s.entriesDeleted),
                bytesRead: BigInt(s.bytesRead),
                bytesChanged: BigInt(s.bytesChanged),
                wireBytes: BigInt(s.wireBytes),
                durationMs: BigInt(result.durationMs),
                dirtyBytesPerSecond: result.dirtyBytesPerSecond,
                // The target checked them equal before reporting; a mismatch fails the round instead.
                sourceDigest: digest,
                targetDigest: digest,
                rawBytes: BigInt(s.rawBytes),
                targetBytesRead: BigInt(result.targetBytesRead),
                bytesWritten: BigInt(result.bytesWritten),
                ownersNotPreserved: BigInt(s.ownersNotPreserved),
                specialFilesSkipped: BigInt(s.specialFilesSkipped),
                firstSpecialFile: s.firstSpecialFile,
              },
            },
          });
          events.close();
        },
        (error: unknown) => events.fail(error),
      );
      try {
        yield* events;
      } finally {
        client.close();
      }
    },

    async setBandwidth(request) {
      const root = await deps.volumes.root(request.volume);
      deps.syncSources.setBandwidth(request.volume, root, Number(request.bytesPerSecond));
      deps.logger.info({ migrationId: request.migrationId, volume: request.volume, bytesPerSecond: Number(request.bytesPerSecond) }, "bandwidth limit changed");
      return {};
    },

    ...deps.app,
  };
}

