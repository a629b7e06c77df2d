// A claim as the plan needs it: sizes from the API server, used bytes measured through volume access.
import { parseQuantity } from "../../app-model/index.js";
import type { ClaimInfo, KubeObject } from "../../app-model/index.js";
import { TheseusError } from "../../common/index.js";
import type { ClusterAccess } from "./cluster.js";
import { measureUsedBytes } from "./volume-access.js";
import type { VolumeHandle } from "./volume-access.js";

/** Bytes of a storage quantity, rounded up as the API server rounds storage requests; 0 for an absent one. */
function quantityBytes(quantity: string | undefined): number {
  if (quantity === undefined || quantity === "") return 0;
  const value = parseQuantity(quantity);
  if (value === undefined) throw new TheseusError("invalid_argument", `"${quantity}" is not a Kubernetes quantity`, { hint: "for example 64Mi, 1Gi or 500M" });
  return Math.ceil(value);
}

/** The volume reference the sync engine and transfer sessions take for a claim. */
export const claimVolumeRef = (namespace: string, name: string): string => `${namespace}/${name}`;

export async function claimInfo(cluster: ClusterAccess, pvc: KubeObject, signal?: AbortSignal): Promise<{ info: ClaimInfo; measureWarning?: string }> {
  const namespace = pvc.metadata.namespace ?? "";
  const name = pvc.metadata.name ?? "";
  const spec = (pvc["spec"] ?? {}) as { storageClassName?: string; volumeName?: string; accessModes?: string[]; resources?: { requests?: Record<string, string> } };
  const status = (pvc["status"] ?? {}) as { capacity?: Record<string, string> };
  const base = {
    namespace,
    name,
    storageClass: spec.storageClassName ?? "",
    requestedBytes: quantityBytes(spec.resources?.requests?.["storage"]),
    capacityBytes: quantityBytes(status.capacity?.["storage"]),
    volumeName: spec.volumeName ?? "",
    accessModes: spec.accessModes ?? [],
    volume: claimVolumeRef(namespace, name),
  };
  let handle: VolumeHandle;
  try {
    handle = await cluster.volumes.resolve({ namespace, name }, signal);
  } catch (error) {
    return { info: { ...base, usedBytes: 0, access: "", reason: TheseusError.from(error).message } };
  }
  if (handle.kind === "mover") {
    // Measuring would start a mover for every claim of every Discover; the claim's capacity bounds what moves.
    await handle.release();
    return { info: { ...base, usedBytes: 0, access: "mover", reason: "" }, measureWarning: `claim ${base.volume}: reached through a mover pod, used bytes not measured (reported as 0)` };
  }
  try {
    const used = await measureUsedBytes(handle.root, signal);
    const info = { ...base, usedBytes: used.complete ? used.bytes : 0, access: "direct", reason: "" };
    return used.complete ? { info } : { info, measureWarning: `claim ${base.volume}: too many files to measure its used bytes (reported as 0, at least ${used.bytes} bytes)` };
  } finally {
    await handle.release();
  }
}
