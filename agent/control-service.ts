// The agent's control service (AgentService), called by coordinators.
import { statfs } from "node:fs/promises";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { TheseusError, createChannel } from "../common/index.js";
import type { Logger } from "../common/index.js";
import { validateIdentityName } from "../rpc/index.js";
import type { Implementation, TlsMaterial } from "../rpc/index.js";
import type { AgentService, SyncVolumeResponseSchema } from "../proto/gen/theseus/v1/agent_pb.js";
import { pullRound, pullRoundThroughMover, roundStatsOf } from "./migration/index.js";
import type { SyncSources } from "./sync/index.js";
import type { SessionRegistry } from "./migration/index.js";
import type { VolumeRegistry } from "./volumes.js";
import { moverLabels } from "./cluster/index.js";
import type { AppHandlers } from "./app-service.js";
import type { ArchiveHandlers } from "./archive-service.js";

export interface ControlServiceDeps {
  readonly clusterName: string;
  readonly version: string;
  readonly volumes: VolumeRegistry;
  readonly sessions: SessionRegistry;
  readonly tls: TlsMaterial;
  readonly sessionTtlMs: number;
  readonly logger: Logger;
  /** The agent's state directory (volumes' sync state: syncSources.stateDir). */
  readonly stateDir: string;
  readonly syncSources: SyncSources;
  /** The application-model handlers (agent/app-service.ts). */
  readonly app: AppHandlers;
  /** The fat-chart volume archive handlers (agent/archive-service.ts). */
  readonly archive: ArchiveHandlers;
}

type SyncEvent = MessageInitShape<typeof SyncVolumeResponseSchema>;

/** Bytes the agent's (unprivileged) user may still write on the filesystem of `root`, or undefined if unknown. */
async function freeBytesOf(root: string): Promise<number | undefined> {
  const fs = await statfs(root).catch(() => undefined);
  return fs === undefined ? undefined : fs.bavail * fs.bsize;
}

export function createControlService(deps: ControlServiceDeps): Implementation<typeof AgentService> {
  return {
    async getInfo() {
      // With each volume's free space: a mover's one volume is its claim's mount, and the target's Prepare vote
      // reads it from there (it has no directory of its own for a claim behind a mover).
      const volumes = await Promise.all(
        deps.volumes.names().map(async (name) => {
          const freeBytes = await deps.volumes.root(name).then(freeBytesOf, () => undefined);
          return freeBytes === undefined ? { name } : { name, freeBytes: BigInt(freeBytes) };
        }),
      );
      return { clusterName: deps.clusterName, version: deps.version, volumes };
    },

    async openSession(request, ctx) {
      // Checked, not opened: a claim behind a mover gets its pod only when a round runs.
      await deps.volumes.check(request.volume);
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
      if (request.sourceAddress === "") throw new TheseusError("invalid_argument", "the source agent's address is missing");
      validateIdentityName(request.sourceCluster, "source cluster");
      const log = deps.logger.child({ migrationId: request.migrationId, volume: request.volume, source: request.sourceCluster, round: request.round });
      // A claim behind a mover gets its pod for this round only; it is deleted when the round ends, however it ends.
      // (A coordinator's SyncVolume is a copy's, outside any migration: a migration's target pulls its own rounds.)
      const volume = await deps.volumes.open(request.volume, ctx.signal, moverLabels(request.migrationId));
      const events = createChannel<SyncEvent>();
      log.info("sync round: pulling changes from the source agent");
      const onProgress = (p: { entries: number; bytes: number; wireBytes: number }): void =>
        events.push({ event: { case: "progress", value: { entries: BigInt(p.entries), bytes: BigInt(p.bytes), wireBytes: BigInt(p.wireBytes) } } });
      const common = {
        sourceAddress: request.sourceAddress,
        sourceCluster: request.sourceCluster,
        sessionId: request.sessionId,
        token: request.token,
        bandwidthBytesPerSecond: Number(request.bandwidthBytesPerSecond),
        tls: deps.tls,
        logger: log,
        onProgress,
      };
      const round =
        volume.kind === "direct"
          ? pullRound({ ...common, root: volume.root, stateDir: deps.syncSources.stateDir("target", request.volume, volume.root), volume: request.volume }, ctx.signal)
          : pullRoundThroughMover({ ...common, mover: volume.mover, lost: volume.lost, migrationId: request.migrationId, round: request.round }, ctx.signal);
      round
        .finally(() => volume.release())
        .then(
          (result) => {
            events.push({ event: { case: "done", value: roundStatsOf(request.round, result) } });
            events.close();
          },
          (error: unknown) => events.fail(error),
        );
      yield* events;
    },

    async setBandwidth(request) {
      // A volume behind a mover keeps its limit in the registry: each relayed round hands it to its mover.
      if (await deps.volumes.isMover(request.volume)) deps.volumes.setMoverBandwidth(request.volume, Number(request.bytesPerSecond));
      else deps.syncSources.setBandwidth(request.volume, await deps.volumes.root(request.volume), Number(request.bytesPerSecond));
      deps.logger.info({ migrationId: request.migrationId, volume: request.volume, bytesPerSecond: Number(request.bytesPerSecond) }, "bandwidth limit changed");
      return {};
    },

    ...deps.app,
    ...deps.archive,
  };
}

