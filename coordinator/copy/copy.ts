// `theseus copy`: one volume from a source agent to a target agent. The coordinator only brokers: it opens a session
// on the source for the target's identity, then asks the target to pull; the data never passes through here.
import { randomUUID } from "node:crypto";
import { TheseusError } from "../../common/index.js";
import { createRpcClient } from "../../rpc/index.js";
import type { TlsMaterial } from "../../rpc/index.js";
import { AgentService } from "../../proto/gen/theseus/v1/agent_pb.js";
import type { RoundStats, SyncProgress } from "../../proto/gen/theseus/v1/agent_pb.js";

export interface CopyRequest {
  /** host:port of the source agent, as this machine reaches it. */
  readonly from: string;
  readonly to: string;
  readonly volume: string;
  /** Target volume name; defaults to the source volume's name. */
  readonly targetVolume?: string;
  /** host:port of the source agent as the target agent reaches it; defaults to `from`. */
  readonly sourceAddressForTarget?: string;
  readonly tls: TlsMaterial;
  readonly signal?: AbortSignal;
  readonly onProgress?: (progress: SyncProgress) => void;
  /** Sender-side bandwidth limit for the round, 0 or absent = unlimited. */
  readonly bandwidthBytesPerSecond?: number;
  /** Round number (0 = the first full copy); only reported back. */
  readonly round?: number;
}

export interface CopyResult {
  readonly migrationId: string;
  readonly sourceCluster: string;
  readonly targetCluster: string;
  readonly stats: RoundStats;
}

export async function copyVolume(request: CopyRequest): Promise<CopyResult> {
  const source = createRpcClient(AgentService, request.from, { tls: request.tls, expectedPeer: { role: "agent" } });
  const target = createRpcClient(AgentService, request.to, { tls: request.tls, expectedPeer: { role: "agent" } });
  const call = request.signal === undefined ? {} : { signal: request.signal };
  try {
    const [sourceInfo, targetInfo] = await Promise.all([source.getInfo({}, call), target.getInfo({}, call)]);
    if (sourceInfo.clusterName === targetInfo.clusterName && request.from === request.to) {
      throw new TheseusError("invalid_argument", "the source and the target are the same agent", { hint: "name two different agents with --from and --to" });
    }
    const migrationId = randomUUID();
    const session = await source.openSession({ migrationId, volume: request.volume, peerCluster: targetInfo.clusterName }, call);
    try {
      let stats: RoundStats | undefined;
      const events = target.syncVolume(
        {
          migrationId,
          volume: request.targetVolume ?? request.volume,
          sourceAddress: request.sourceAddressForTarget ?? request.from,
          sourceCluster: sourceInfo.clusterName,
          sessionId: session.sessionId,
          token: session.token,
          round: request.round ?? 0,
          bandwidthBytesPerSecond: BigInt(request.bandwidthBytesPerSecond ?? 0),
        },
        call,
      );
      for await (const event of events) {
        if (event.event.case === "progress") request.onProgress?.(event.event.value);
        else if (event.event.case === "done") stats = event.event.value;
      }
      if (stats === undefined) throw new TheseusError("protocol", "the target agent ended the sync without reporting its statistics");
      return { migrationId, sourceCluster: sourceInfo.clusterName, targetCluster: targetInfo.clusterName, stats };
    } finally {
      // Best effort: an expired or already closed session is fine, and a failure here must not hide the real error.
      await source.closeSession({ sessionId: session.sessionId }, { timeoutMs: 5000 }).catch(() => undefined);
    }
  } finally {
    source.close();
    target.close();
  }
}

/**
 * The line that says what a round did not copy (fifos, sockets, devices are not data), or undefined when it copied
 * everything: text output must never skip silently what --json reports.
 */
export function skippedNotice(stats: { readonly specialFilesSkipped: number | bigint; readonly firstSpecialFile: string }): string | undefined {
  const n = Number(stats.specialFilesSkipped);
  if (n === 0) return undefined;
  const what = n === 1 ? "1 special file (fifo, socket or device) was" : `${n} special files (fifos, sockets or devices) were`;
  return `not copied: ${what} skipped, ${n === 1 ? "" : "the first "}${JSON.stringify(stats.firstSpecialFile)}; they hold no data, recreate them on the target if the app needs them`;
}
