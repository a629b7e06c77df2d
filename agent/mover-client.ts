// The agent's side of a mover (agent/cluster/movers.ts): the mover is the agent image in mover mode, serving one
// claim as the static volume "data" with the agent's own identity, so the agent drives it with the RPCs agents
// already speak:
// - target: the mover's SyncVolume pulls the round from the source agent itself (its certificate names this cluster,
//   as the source's session demands); the agent passes the progress and the statistics on (migration/rounds.ts,
//   pullRoundThroughMover).
// - source: the peer's TransferService.Sync stream is relayed to the mover's TransferService.Sync, frames passed
//   through without decoding, under a session the agent opens on the mover for itself. The peer sees one endpoint
//   per cluster, as with direct access, and the mover applies the round's bandwidth limit.
import { TheseusError } from "../common/index.js";
import type { Logger } from "../common/index.js";
import { createRpcClient } from "../rpc/index.js";
import type { TlsMaterial } from "../rpc/index.js";
import { AgentService } from "../proto/gen/theseus/v1/agent_pb.js";
import { TransferService } from "../proto/gen/theseus/v1/transfer_pb.js";
import type { MoverEndpoint } from "./cluster/index.js";
import { SESSION_TOKEN_METADATA } from "./migration/index.js";

export interface RelayOptions {
  readonly mover: MoverEndpoint;
  readonly lost: AbortSignal;
  readonly tls: TlsMaterial;
  readonly migrationId: string;
  /** This agent's cluster name: the session on the mover is for the agent itself. */
  readonly clusterName: string;
  readonly bandwidthBytesPerSecond: number;
  readonly logger: Logger;
}

/** The source side of a round served by a mover: the peer's frames in, the mover's frames out, none decoded. */
export async function* relayToMover(options: RelayOptions, frames: AsyncIterable<Uint8Array>, signal: AbortSignal): AsyncGenerator<Uint8Array> {
  const { mover } = options;
  const peer = { tls: options.tls, expectedPeer: { role: "agent" as const, name: mover.clusterName } };
  const control = createRpcClient(AgentService, mover.address, peer);
  const transfer = createRpcClient(TransferService, mover.address, peer);
  const both = AbortSignal.any([signal, options.lost]);
  let sessionId = "";
  try {
    const opened = await control.openSession({ migrationId: options.migrationId, volume: mover.volume, peerCluster: options.clusterName, ttlSeconds: 3600 }, { signal: both });
    sessionId = opened.sessionId;
    options.logger.info({ mover: mover.pod, address: mover.address }, "sync round relayed to a mover pod");
    const requests = async function* (): AsyncGenerator<{ sessionId?: string; bandwidthBytesPerSecond?: bigint; frame: Uint8Array }> {
      let first = true;
      for await (const frame of frames) {
        yield first ? { sessionId, bandwidthBytesPerSecond: BigInt(options.bandwidthBytesPerSecond), frame } : { frame };
        first = false;
      }
    };
    for await (const message of transfer.sync(requests(), { signal: both, metadata: { [SESSION_TOKEN_METADATA]: opened.token } })) yield message.frame;
  } catch (error) {
    throw lostOr(options.lost, error);
  } finally {
    if (sessionId !== "") await control.closeSession({ sessionId }, { signal: AbortSignal.timeout(5000) }).catch(() => undefined);
    control.close();
    transfer.close();
  }
}

/** A lost mover explains a cancelled call better than the cancellation does. */
function lostOr(lost: AbortSignal, error: unknown): TheseusError {
  if (lost.aborted) return TheseusError.from(lost.reason);
  return TheseusError.from(error);
}

