// The two participants of a migration as the coordinator dials them: MigrationService on each agent, with the
// agent's certificate checked for the cluster the registry names.
import type { GenService } from "@bufbuild/protobuf/codegenv2";
import { MigrationService } from "../../proto/gen/theseus/v1/migration_pb.js";
import { createRpcClient } from "../../rpc/index.js";
import type { RpcClient, TlsMaterial } from "../../rpc/index.js";
import type { AgentTarget } from "../agents/index.js";

export type ParticipantClient = typeof MigrationService extends GenService<infer S> ? RpcClient<S> : never;

export function dialParticipant(target: AgentTarget, tls: TlsMaterial): ParticipantClient {
  return createRpcClient(MigrationService, target.address, {
    tls,
    expectedPeer: target.cluster === undefined ? { role: "agent" } : { role: "agent", name: target.cluster },
  });
}
