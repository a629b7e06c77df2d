// One sync round pulled by the target agent from the source agent's TransferService (or, for a claim behind a mover
// pod, by the mover: the agent image in mover mode, which runs the same round where the claim is mounted and carries
// the agent's own identity), and its statistics as the wire's RoundStats. Shared by the migration's background pre-sync and the coordinator-driven SyncVolume call.
import { create } from "@bufbuild/protobuf";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { Logger } from "../../common/index.js";
import { TheseusError } from "../../common/index.js";
import { createRpcClient } from "../../rpc/index.js";
import type { TlsMaterial } from "../../rpc/index.js";
import { AgentService, RoundStatsSchema } from "../../proto/gen/theseus/v1/agent_pb.js";
import type { RoundStats } from "../../proto/gen/theseus/v1/agent_pb.js";
import { TransferService } from "../../proto/gen/theseus/v1/transfer_pb.js";
import type { SyncUpSchema } from "../../proto/gen/theseus/v1/transfer_pb.js";
import { SESSION_TOKEN_METADATA } from "./sessions.js";
import { runTargetRound } from "../sync/index.js";
import type { RoundProgress, RoundResult, SyncConnect } from "../sync/index.js";
import type { MoverEndpoint } from "../cluster/index.js";

export interface PullRoundOptions {
  readonly root: string;
  /** The volume's sync state directory for the target role (SyncSources.stateDir: in the volume where it can be). */
  readonly stateDir: string;
  readonly volume: string;
  readonly sourceAddress: string;
  readonly sourceCluster: string;
  readonly sessionId: string;
  readonly token: string;
  /** What the source's token bucket applies to this round; 0 = unlimited. */
  readonly bandwidthBytesPerSecond: number;
  readonly tls: TlsMaterial;
  readonly logger: Logger;
  readonly onProgress?: (progress: RoundProgress) => void;
}

export async function pullRound(options: PullRoundOptions, signal: AbortSignal): Promise<RoundResult> {
  const client = createRpcClient(TransferService, options.sourceAddress, { tls: options.tls, expectedPeer: { role: "agent", name: options.sourceCluster } });
  // The engine's frames ride in SyncUp/SyncDown messages; the session and the round's limit in the first one.
  const connect: SyncConnect = (up) => {
    const requests = async function* (): AsyncGenerator<MessageInitShape<typeof SyncUpSchema>> {
      let first = true;
      for await (const frame of up) {
        yield first ? { sessionId: options.sessionId, bandwidthBytesPerSecond: BigInt(options.bandwidthBytesPerSecond), frame } : { frame };
        first = false;
      }
    };
    const stream = client.sync(requests(), { signal, metadata: { [SESSION_TOKEN_METADATA]: options.token } });
    return (async function* () {
      for await (const message of stream) yield message.frame;
    })();
  };
  try {
    return await runTargetRound(
      {
        root: options.root,
        stateDir: options.stateDir,
        logger: options.logger,
        ...(options.onProgress === undefined ? {} : { onProgress: options.onProgress }),
      },
      connect,
      signal,
    );
  } finally {
    client.close();
  }
}

/** A round's statistics as the wire carries them: each side's own digest (the source's from its end record). */
export function roundStatsOf(round: number, result: RoundResult): RoundStats {
  const s = result.source;
  return create(RoundStatsSchema, {
    round,
    entriesScanned: BigInt(s.entriesScanned),
    entriesChanged: BigInt(s.entriesChanged),
    entriesDeleted: BigInt(s.entriesDeleted),
    bytesRead: BigInt(s.bytesRead),
    bytesChanged: BigInt(s.bytesChanged),
    wireBytes: BigInt(s.wireBytes),
    durationMs: BigInt(result.durationMs),
    dirtyBytesPerSecond: result.dirtyBytesPerSecond,
    sourceDigest: Buffer.from(result.sourceDigest, "hex"),
    targetDigest: Buffer.from(result.digest, "hex"),
    rawBytes: BigInt(s.rawBytes),
    targetBytesRead: BigInt(result.targetBytesRead),
    bytesWritten: BigInt(result.bytesWritten),
    ownersNotPreserved: BigInt(s.ownersNotPreserved),
    specialFilesSkipped: BigInt(s.specialFilesSkipped),
    firstSpecialFile: s.firstSpecialFile,
    vouchedUnverified: BigInt(s.vouchedUnverified),
    vouchedUnverifiedBytes: BigInt(s.vouchedUnverifiedBytes),
    targetVouchedUnverified: BigInt(result.targetVouchedUnverified),
  });
}

export interface MoverRoundOptions {
  readonly mover: MoverEndpoint;
  /** Fires when the mover's pod is gone mid-round. */
  readonly lost: AbortSignal;
  readonly tls: TlsMaterial;
  readonly migrationId: string;
  readonly round: number;
  readonly sourceAddress: string;
  readonly sourceCluster: string;
  readonly sessionId: string;
  readonly token: string;
  readonly bandwidthBytesPerSecond: number;
  readonly logger: Logger;
  readonly onProgress?: (progress: RoundProgress) => void;
}

/** A target round run by the mover that mounts the claim; the result as the agent's own round would give it. */
export async function pullRoundThroughMover(options: MoverRoundOptions, signal: AbortSignal): Promise<RoundResult> {
  const { mover } = options;
  const client = createRpcClient(AgentService, mover.address, { tls: options.tls, expectedPeer: { role: "agent", name: mover.clusterName } });
  const both = AbortSignal.any([signal, options.lost]);
  options.logger.info({ mover: mover.pod, address: mover.address }, "sync round through a mover pod");
  try {
    const events = client.syncVolume(
      {
        migrationId: options.migrationId,
        volume: mover.volume,
        sourceAddress: options.sourceAddress,
        sourceCluster: options.sourceCluster,
        sessionId: options.sessionId,
        token: options.token,
        round: options.round,
        bandwidthBytesPerSecond: BigInt(options.bandwidthBytesPerSecond),
      },
      { signal: both },
    );
    for await (const event of events) {
      if (event.event.case === "progress") {
        const p = event.event.value;
        options.onProgress?.({ entries: Number(p.entries), bytes: Number(p.bytes), wireBytes: Number(p.wireBytes) });
      } else if (event.event.case === "done") {
        return roundResultOf(event.event.value);
      }
    }
    throw new TheseusError("protocol", `the mover ${mover.pod} ended the round without its statistics`);
  } catch (error) {
    throw lostOr(options.lost, error);
  } finally {
    client.close();
  }
}

/** A lost mover explains a cancelled call better than the cancellation does. */
function lostOr(lost: AbortSignal, error: unknown): TheseusError {
  if (lost.aborted) return TheseusError.from(lost.reason);
  return TheseusError.from(error);
}

/** The wire's statistics back in the engine's result shape (what the caller reads of it: roundStatsOf). */
function roundResultOf(s: RoundStats): RoundResult {
  const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");
  return {
    source: {
      entriesScanned: Number(s.entriesScanned),
      entriesChanged: Number(s.entriesChanged),
      entriesDeleted: Number(s.entriesDeleted),
      bytesRead: Number(s.bytesRead),
      bytesChanged: Number(s.bytesChanged),
      wireBytes: Number(s.wireBytes),
      rawBytes: Number(s.rawBytes),
      ownersNotPreserved: Number(s.ownersNotPreserved),
      specialFilesSkipped: Number(s.specialFilesSkipped),
      firstSpecialFile: s.firstSpecialFile,
      previousRoundEndMs: 0,
      // Not on the wire (RoundStats); the mover's log names it.
      setidStripped: 0,
      vouchedUnverified: Number(s.vouchedUnverified),
      vouchedUnverifiedBytes: Number(s.vouchedUnverifiedBytes),
      // Not on the wire either: the source's "sync round sent" log line counts them.
      listsReceived: 0,
      listBytesReceived: 0,
    },
    entriesApplied: Number(s.entriesChanged) + Number(s.entriesDeleted),
    bytesWritten: Number(s.bytesWritten),
    targetBytesRead: Number(s.targetBytesRead),
    targetEntries: Number(s.entriesScanned),
    durationMs: Number(s.durationMs),
    digest: hex(s.targetDigest),
    sourceDigest: hex(s.sourceDigest),
    dirtyBytesPerSecond: s.dirtyBytesPerSecond,
    compressionRatio: Number(s.wireBytes) === 0 ? 1 : Number(s.rawBytes) / Number(s.wireBytes),
    ownersPreserved: Number(s.ownersNotPreserved) === 0,
    setidStripped: 0,
    targetVouchedUnverified: Number(s.targetVouchedUnverified),
  };
}

/**
 * Free bytes on the claim a running mover mounts (its GetInfo's statfs of the mount), or undefined when the mover
 * does not say (an older image).
 */
export async function moverFreeBytes(mover: MoverEndpoint, lost: AbortSignal, tls: TlsMaterial, signal: AbortSignal): Promise<number | undefined> {
  const client = createRpcClient(AgentService, mover.address, { tls, expectedPeer: { role: "agent", name: mover.clusterName } });
  try {
    const info = await client.getInfo({}, { signal: AbortSignal.any([signal, lost]) });
    const free = info.volumes.find((v) => v.name === mover.volume)?.freeBytes;
    return free === undefined ? undefined : Number(free);
  } catch (error) {
    throw lostOr(lost, error);
  } finally {
    client.close();
  }
}
