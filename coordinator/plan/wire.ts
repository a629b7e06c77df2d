// Between the agent's wire messages and app-model's plain data: objects travel as JSON strings, sizes as uint64.
import type { ClaimInfo, KubeObject, ObjectRef, ServedResource } from "../../app-model/index.js";
import { TheseusError } from "../../common/index.js";
import type {
  ClaimInfo as WireClaim,
  ObjectRef as WireRef,
  ServedResource as WireResource,
} from "../../proto/gen/theseus/v1/agent_pb.js";

/** Parses one object the agent sent; a malformed one is the agent's fault, not the user's. */
export function parseObject(json: string, from: string): KubeObject {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch (error) {
    throw new TheseusError("protocol", `agent ${from} sent an object that is not JSON`, { cause: error });
  }
  const object = value as Partial<KubeObject> | null;
  if (typeof object !== "object" || object === null || typeof object.apiVersion !== "string" || typeof object.kind !== "string" || typeof object.metadata !== "object") {
    throw new TheseusError("protocol", `agent ${from} sent an object without apiVersion, kind and metadata`);
  }
  return object as KubeObject;
}

export function claimFromWire(claim: WireClaim): ClaimInfo {
  return {
    namespace: claim.namespace,
    name: claim.name,
    storageClass: claim.storageClass,
    requestedBytes: Number(claim.requestedBytes),
    capacityBytes: Number(claim.capacityBytes),
    usedBytes: Number(claim.usedBytes),
    volumeName: claim.volumeName,
    accessModes: [...claim.accessModes],
    access: claim.access,
    reason: claim.reason,
    volume: claim.volume,
  };
}

export function resourceFromWire(resource: WireResource): ServedResource {
  return {
    group: resource.group,
    version: resource.version,
    kind: resource.kind,
    resource: resource.resource,
    namespaced: resource.namespaced,
    verbs: [...resource.verbs],
    preferred: resource.preferred,
  };
}

export function refFromWire(ref: WireRef | undefined): ObjectRef {
  return { apiVersion: ref?.apiVersion ?? "", kind: ref?.kind ?? "", namespace: ref?.namespace ?? "", name: ref?.name ?? "" };
}
