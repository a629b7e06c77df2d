// The application-model half of the AgentService: each handler maps the wire messages to agent/cluster/ and back.
// Objects cross the wire as JSON text, exactly as the API server returned them or as the plan rewrote them.
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { ClaimInfo, KubeObject, ObjectRef, ServedResource } from "../app-model/index.js";
import { TheseusError } from "../common/index.js";
import type { Logger } from "../common/index.js";
import type { Implementation } from "../rpc/index.js";
import { ConflictPolicy } from "../proto/gen/theseus/v1/agent_pb.js";
import type { AgentService, AppSelector, ClaimInfoSchema, ObjectRefSchema, ServedResourceSchema, StageHeader } from "../proto/gen/theseus/v1/agent_pb.js";
import { activateApp, describeCluster, discoverApp, quiesceApp, requireCluster, stageApp, unquiesceApp, unstageApp, validateMigrationId, validateNamespace } from "./cluster/index.js";
import type { AppSelection, ClusterAccess } from "./cluster/index.js";

export type AppHandlers = Pick<Implementation<typeof AgentService>, "discover" | "describeCluster" | "stage" | "unstage" | "quiesce" | "unquiesce" | "activate">;

export interface AppServiceDeps {
  readonly clusterName: string;
  readonly cluster: ClusterAccess | undefined;
  readonly logger: Logger;
  /** For calls whose request says 0 (binding claims, CRDs, pods going away, readiness, deletions). */
  readonly defaultTimeoutMs: number;
}

export function createAppService(deps: AppServiceDeps): AppHandlers {
  const logger = deps.logger.child({ component: "app-model" });
  const timeoutMs = (seconds: number): number => (seconds > 0 ? seconds * 1000 : deps.defaultTimeoutMs);
  return {
    async *discover(request, ctx) {
      const cluster = requireCluster(deps.cluster);
      for await (const item of discoverApp(cluster, selectionOf(request.app), logger, ctx.signal)) {
        if (item.type === "object") yield { event: { case: "objectJson", value: JSON.stringify(item.object) } };
        else if (item.type === "claim") yield { event: { case: "claim", value: claimToWire(item.claim) } };
        else yield { event: { case: "done", value: { clusterName: deps.clusterName, serverVersion: item.serverVersion, resources: item.resources.map(resourceToWire), warnings: [...item.warnings] } } };
      }
    },

    async describeCluster(request, ctx) {
      const cluster = requireCluster(deps.cluster);
      const lookups = request.lookup.map((r): ObjectRef => ({ apiVersion: r.apiVersion, kind: r.kind, namespace: r.namespace, name: r.name }));
      const facts = await describeCluster(cluster, validateNamespace(request.namespace), lookups, ctx.signal);
      return { clusterName: deps.clusterName, serverVersion: facts.serverVersion, resources: facts.resources.map(resourceToWire), objectsJson: facts.objects.map((o) => JSON.stringify(o)) };
    },

    async stage(requests, ctx) {
      const cluster = requireCluster(deps.cluster);
      let header: StageHeader | undefined;
      const objects: KubeObject[] = [];
      for await (const message of requests) {
        if (message.item.case === "header") {
          if (header !== undefined) throw new TheseusError("invalid_argument", "Stage: the header came twice");
          header = message.item.value;
        } else if (message.item.case === "objectJson") {
          if (header === undefined) throw new TheseusError("invalid_argument", "Stage: the first message must be the header");
          objects.push(parseObject(message.item.value, objects.length));
        }
      }
      if (header === undefined) throw new TheseusError("invalid_argument", "Stage: no header was sent");
      const result = await stageApp(
        cluster,
        {
          migrationId: validateMigrationId(header.migrationId),
          namespace: validateNamespace(header.namespace),
          onConflict: header.onConflict === ConflictPolicy.ADOPT ? "adopt" : "fail",
          timeoutMs: timeoutMs(header.timeoutSeconds),
          objects,
        },
        logger,
        ctx.signal,
      );
      return { objects: result.objects.map((o) => ({ ref: refToWire(o.ref), action: o.action })), claims: result.claims.map(claimToWire) };
    },

    async unstage(request, ctx) {
      const cluster = requireCluster(deps.cluster);
      const removed = await unstageApp(cluster, validateMigrationId(request.migrationId), validateNamespace(request.namespace), deps.defaultTimeoutMs, logger, ctx.signal);
      return { removed: removed.map((ref) => ({ ref: refToWire(ref), action: "deleted" })) };
    },

    async quiesce(request, ctx) {
      const cluster = requireCluster(deps.cluster);
      const result = await quiesceApp(cluster, validateMigrationId(request.migrationId), selectionOf(request.app), timeoutMs(request.timeoutSeconds), logger, ctx.signal);
      return { changed: result.changed.map(refToWire), durationMs: BigInt(result.durationMs) };
    },

    async unquiesce(request, ctx) {
      const cluster = requireCluster(deps.cluster);
      const restored = await unquiesceApp(cluster, validateMigrationId(request.migrationId), selectionOf(request.app), logger, ctx.signal);
      return { restored: restored.map(refToWire) };
    },

    async activate(request, ctx) {
      const cluster = requireCluster(deps.cluster);
      const result = await activateApp(
        cluster,
        validateMigrationId(request.migrationId),
        validateNamespace(request.namespace),
        { waitReady: request.waitReady, timeoutMs: timeoutMs(request.timeoutSeconds) },
        logger,
        ctx.signal,
      );
      return { activated: result.activated.map(refToWire), durationMs: BigInt(result.durationMs) };
    },
  };
}

function selectionOf(app: AppSelector | undefined): AppSelection {
  if (app === undefined) throw new TheseusError("invalid_argument", "the request names no application", { hint: "set app.namespace (and optionally a label selector or a Helm release)" });
  return { namespace: validateNamespace(app.namespace), labelSelector: app.labelSelector.trim(), helmRelease: app.helmRelease.trim() };
}

function parseObject(json: string, index: number): KubeObject {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch (error) {
    throw new TheseusError("invalid_argument", `Stage: object #${index + 1} is not valid JSON`, { cause: error });
  }
  if (typeof value !== "object" || value === null || Array.isArray(value) || typeof (value as { metadata?: unknown }).metadata !== "object") {
    throw new TheseusError("invalid_argument", `Stage: object #${index + 1} is not a Kubernetes object (apiVersion, kind, metadata)`);
  }
  return value as KubeObject;
}

const refToWire = (ref: ObjectRef): MessageInitShape<typeof ObjectRefSchema> => ({ apiVersion: ref.apiVersion, kind: ref.kind, namespace: ref.namespace, name: ref.name });

const resourceToWire = (r: ServedResource): MessageInitShape<typeof ServedResourceSchema> => ({ ...r, verbs: [...r.verbs] });

const claimToWire = (c: ClaimInfo): MessageInitShape<typeof ClaimInfoSchema> => ({
  ...c,
  requestedBytes: BigInt(c.requestedBytes),
  capacityBytes: BigInt(c.capacityBytes),
  usedBytes: BigInt(c.usedBytes),
  accessModes: [...c.accessModes],
});
