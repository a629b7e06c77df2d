// Dialling a resolved agent: the control service, with the agent's certificate checked for the cluster the registry
// names (a bare HOST:PORT accepts any agent of the installation, as `theseus copy` always has).
import type { GenService } from "@bufbuild/protobuf/codegenv2";
import { AgentService } from "../../proto/gen/theseus/v1/agent_pb.js";
import { createRpcClient } from "../../rpc/index.js";
import type { RpcClient, TlsMaterial } from "../../rpc/index.js";
import type { AgentTarget } from "./registry.js";

export type AgentClient = typeof AgentService extends GenService<infer S> ? RpcClient<S> : never;

export function dialAgent(target: AgentTarget, tls: TlsMaterial): AgentClient {
  return createRpcClient(AgentService, target.address, {
    tls,
    expectedPeer: target.cluster === undefined ? { role: "agent" } : { role: "agent", name: target.cluster },
    // Discover and DescribeCluster carry whole objects; a large ConfigMap alone may hold 1 MiB.
    maxReceiveMessageBytes: 64 * 1024 * 1024,
  });
}
