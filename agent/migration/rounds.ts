// One sync round pulled by the target agent from the source agent's TransferService, and its statistics as the wire's
// RoundStats. Shared by the migration's background pre-sync and the coordinator-driven SyncVolume call.
import { create } from "@bufbuild/protobuf";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { Logger } from "../../common/index.js";
import { createRpcClient } from "../../rpc/index.js";
import type { TlsMaterial } from "../../rpc/index.js";
import { RoundStatsSchema } from "../../proto/gen/theseus/v1/agent_pb.js";
import type { RoundStats } from "../../proto/gen/theseus/v1/agent_pb.js";
import { TransferService } from "../../proto/gen/theseus/v1/transfer_pb.js";
import type { SyncUpSchema } from "../../proto/gen/theseus/v1/transfer_pb.js";
import { SESSION_TOKEN_METADATA } from "./sessions.js";
import { runTargetRound, syncStateDir } from "../sync/index.js";
import type { RoundProgress, RoundResult, SyncConnect } from "../sync/index.js";

export interface PullRoundOptions {
  readonly root: string;
  /** The agent's state directory; the volume's sync state lives below it. */
  readonly agentStateDir: string;
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
        stateDir: syncStateDir(options.agentStateDir, "target", options.volume),
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
  });
}
