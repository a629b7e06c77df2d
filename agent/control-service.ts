// The agent's control service (AgentService), called by coordinators.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { TheseusError, createChannel } from "../common/index.js";
import type { Logger } from "../common/index.js";
import { createRpcClient, validateIdentityName } from "../rpc/index.js";
import type { Implementation, TlsMaterial } from "../rpc/index.js";
import type { AgentService, SyncVolumeResponseSchema } from "../proto/gen/theseus/v1/agent_pb.js";
import { TransferService } from "../proto/gen/theseus/v1/transfer_pb.js";
import { unpackVolume } from "./archive.js";
import type { UnpackStats } from "./archive.js";
import { SESSION_TOKEN_METADATA } from "./sessions.js";
import type { SessionRegistry } from "./sessions.js";
import type { VolumeRegistry } from "./volumes.js";

export interface ControlServiceDeps {
  readonly clusterName: string;
  readonly version: string;
  readonly volumes: VolumeRegistry;
  readonly sessions: SessionRegistry;
  readonly tls: TlsMaterial;
  readonly sessionTtlMs: number;
  readonly logger: Logger;
}

type SyncEvent = MessageInitShape<typeof SyncVolumeResponseSchema>;
const PROGRESS_INTERVAL_MS = 250;

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
      const log = deps.logger.child({ migrationId: request.migrationId, volume: request.volume, source: request.sourceCluster });
      const client = createRpcClient(TransferService, request.sourceAddress, { tls: deps.tls, expectedPeer: { role: "agent", name: request.sourceCluster } });
      const events = createChannel<SyncEvent>();
      const started = Date.now();
      let lastProgress = 0;
      const progress = (stats: UnpackStats): void => {
        if (Date.now() - lastProgress < PROGRESS_INTERVAL_MS) return;
        lastProgress = Date.now();
        events.push({ event: { case: "progress", value: { entries: BigInt(stats.entries), bytes: BigInt(stats.bytes), wireBytes: BigInt(stats.wireBytes) } } });
      };
      const chunks = async function* (): AsyncGenerator<Uint8Array> {
        const stream = client.pullArchive({ sessionId: request.sessionId }, { signal: ctx.signal, metadata: { [SESSION_TOKEN_METADATA]: request.token } });
        for await (const chunk of stream) yield chunk.data;
      };
      log.info("pulling volume from the source agent");
      unpackVolume(root, chunks(), ctx.signal, progress).then(
        (stats) => {
          const durationMs = Date.now() - started;
          log.info({ ...stats, durationMs }, "volume received");
          events.push({
            event: {
              case: "done",
              value: {
                round: request.round,
                entriesScanned: BigInt(stats.entries),
                entriesChanged: BigInt(stats.entries),
                bytesChanged: BigInt(stats.bytes),
                bytesRead: BigInt(stats.bytes),
                wireBytes: BigInt(stats.wireBytes),
                durationMs: BigInt(durationMs),
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
  };
}
