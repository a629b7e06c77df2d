// The plan and the staging, as calls across the two agents: Discover on the source, DescribeCluster on the target
// for what app-model's planLookups names, buildPlan; then Stage (or Unstage) on the target. The CLI prints what these
// return, and the transaction (a later issue) calls the same functions.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { buildPlan, planLookups, planObjectsToStage } from "../../app-model/index.js";
import type { ClaimInfo, ClusterFacts, Inventory, KubeObject, ObjectRef, Plan, PlanOptions, Problem } from "../../app-model/index.js";
import { TheseusError, throwIfAborted } from "../../common/index.js";
import { ConflictPolicy } from "../../proto/gen/theseus/v1/agent_pb.js";
import type { StageRequestSchema } from "../../proto/gen/theseus/v1/agent_pb.js";
import type { TlsMaterial } from "../../rpc/index.js";
import { dialAgent } from "../agents/index.js";
import type { AgentClient, AgentTarget } from "../agents/index.js";
import type { AppSelection } from "./options.js";
import { claimFromWire, parseObject, refFromWire, resourceFromWire } from "./wire.js";

export interface PlanRequest {
  readonly from: AgentTarget;
  readonly to: AgentTarget;
  readonly app: AppSelection;
  readonly options: PlanOptions;
  readonly tls: TlsMaterial;
  readonly signal?: AbortSignal;
}

export interface PlanResult {
  readonly plan: Plan;
  readonly inventory: Inventory;
  readonly facts: ClusterFacts;
}

export async function createPlan(request: PlanRequest): Promise<PlanResult> {
  const source = dialAgent(request.from, request.tls);
  const target = dialAgent(request.to, request.tls);
  try {
    const inventory = await naming(request.from, "source", discover(source, request.from, request.app, request.signal));
    const lookups = planLookups(inventory, request.options);
    const facts = await naming(request.to, "target", describeCluster(target, request.to, request.options.targetNamespace, lookups, request.signal));
    throwIfAborted(request.signal);
    return { plan: buildPlan(inventory, facts, request.options), inventory, facts };
  } finally {
    source.close();
    target.close();
  }
}

/** Discovery alone, on the source agent (`theseus export` plans without a target). */
export async function discoverInventory(from: AgentTarget, app: AppSelection, tls: TlsMaterial, signal?: AbortSignal): Promise<Inventory> {
  const source = dialAgent(from, tls);
  try {
    return await naming(from, "source", discover(source, from, app, signal));
  } finally {
    source.close();
  }
}

/** DescribeCluster alone, on the target agent (`theseus import` plans from an archive instead of a source). */
export async function describeTarget(to: AgentTarget, namespace: string, lookups: readonly ObjectRef[], tls: TlsMaterial, signal?: AbortSignal): Promise<ClusterFacts> {
  const target = dialAgent(to, tls);
  try {
    return await naming(to, "target", describeCluster(target, to, namespace, lookups, signal));
  } finally {
    target.close();
  }
}

export function planErrors(plan: Plan): Problem[] {
  return plan.problems.filter((p) => p.severity === "error");
}

async function discover(client: AgentClient, agent: AgentTarget, app: AppSelection, signal: AbortSignal | undefined): Promise<Inventory> {
  const objects: KubeObject[] = [];
  const claims: ClaimInfo[] = [];
  for await (const event of client.discover({ app }, callOptions(signal))) {
    switch (event.event.case) {
      case "objectJson":
        objects.push(parseObject(event.event.value, agent.name));
        break;
      case "claim":
        claims.push(claimFromWire(event.event.value));
        break;
      case "done": {
        const done = event.event.value;
        return {
          cluster: done.clusterName,
          serverVersion: done.serverVersion,
          objects,
          claims,
          resources: done.resources.map(resourceFromWire),
          warnings: [...done.warnings],
        };
      }
      case undefined:
        break;
    }
  }
  throw new TheseusError("protocol", `agent ${agent.name} ended discovery without its summary`, { hint: "the agent may have stopped; read its log and retry" });
}

async function describeCluster(
  client: AgentClient,
  agent: AgentTarget,
  namespace: string,
  lookups: readonly ObjectRef[],
  signal: AbortSignal | undefined,
): Promise<ClusterFacts> {
  const facts = await client.describeCluster({ namespace, lookup: [...lookups] }, callOptions(signal));
  return {
    cluster: facts.clusterName,
    serverVersion: facts.serverVersion,
    resources: facts.resources.map(resourceFromWire),
    objects: facts.objectsJson.map((json) => parseObject(json, agent.name)),
  };
}

export interface StageRequestOptions {
  readonly to: AgentTarget;
  readonly plan: Plan;
  readonly migrationId: string;
  readonly onConflict: PlanOptions["onConflict"];
  readonly tls: TlsMaterial;
  readonly signal?: AbortSignal;
}

export interface StagedObject {
  readonly ref: ObjectRef;
  /** "created", "adopted" or "unchanged" (staged by this migration before). */
  readonly action: string;
}

export interface StageResult {
  readonly migrationId: string;
  readonly objects: readonly StagedObject[];
  /** The staged claims, bound, with the volume reference the sync engine takes for each. */
  readonly claims: readonly ClaimInfo[];
}

/** Stages the plan's create and adopt objects on the target; refuses a plan with errors. */
export async function stagePlan(request: StageRequestOptions): Promise<StageResult> {
  const errors = planErrors(request.plan);
  if (errors.length > 0) {
    throw new TheseusError("failed_precondition", `the plan has ${errors.length} error${errors.length === 1 ? "" : "s"}, so nothing was staged: ${errors.map((e) => e.message).join("; ")}`, {
      hint: "see them with their fixes in `theseus plan` (same arguments), fix them, then stage again",
    });
  }
  const objects = planObjectsToStage(request.plan);
  const target = dialAgent(request.to, request.tls);
  try {
    const response = await naming(request.to, "target", target.stage(stageMessages(request, objects), callOptions(request.signal)));
    return {
      migrationId: request.migrationId,
      objects: response.objects.map((o) => ({ ref: refFromWire(o.ref), action: o.action })),
      claims: response.claims.map(claimFromWire),
    };
  } finally {
    target.close();
  }
}

async function* stageMessages(request: StageRequestOptions, objects: readonly KubeObject[]): AsyncGenerator<MessageInitShape<typeof StageRequestSchema>> {
  const header = {
    migrationId: request.migrationId,
    namespace: request.plan.target.namespace,
    onConflict: request.onConflict === "adopt" ? ConflictPolicy.ADOPT : ConflictPolicy.FAIL,
  };
  yield { item: { case: "header", value: header } };
  for (const object of objects) yield { item: { case: "objectJson", value: JSON.stringify(object) } };
}

export interface UnstageRequestOptions {
  readonly to: AgentTarget;
  readonly namespace: string;
  readonly migrationId: string;
  readonly tls: TlsMaterial;
  readonly signal?: AbortSignal;
}

/** Removes exactly what staging of the migration created on the target; adopted objects only lose its label. */
export async function unstageMigration(request: UnstageRequestOptions): Promise<StagedObject[]> {
  const target = dialAgent(request.to, request.tls);
  try {
    const response = await naming(request.to, "target", target.unstage({ migrationId: request.migrationId, namespace: request.namespace }, callOptions(request.signal)));
    return response.removed.map((o) => ({ ref: refFromWire(o.ref), action: o.action }));
  } finally {
    target.close();
  }
}

/** Says which agent failed (the RPC error only knows its address) and, when it cannot be reached, how to bring it back. */
async function naming<T>(agent: AgentTarget, role: "source" | "target", call: Promise<T>): Promise<T> {
  try {
    return await call;
  } catch (error) {
    const e = TheseusError.from(error);
    if (e.code === "cancelled") throw e;
    const known = agent.cluster === undefined ? "" : ` (check its address with \`theseus agents list\`; a local cluster's agent restarts with \`theseus local up ${agent.name}\`)`;
    throw new TheseusError(e.code, `the ${role} agent ${agent.name === agent.address ? agent.address : `"${agent.name}" (${agent.address})`}: ${e.message}`, {
      cause: error,
      hint: e.code === "unavailable" ? `${e.hint ?? "is the agent running?"}${known}` : e.hint,
    });
  }
}

function callOptions(signal: AbortSignal | undefined): { signal?: AbortSignal } {
  return signal === undefined ? {} : { signal };
}
