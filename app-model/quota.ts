// Fitting the target namespace's ResourceQuotas and LimitRanges: the seed's descriptor rewriting. A source sized for
// a large cluster may not fit a smaller namespace; rather than fail at activation (pods refused by quota admission),
// the plan scales the app's CPU and memory requests and limits down proportionally, clamps them to a LimitRange's
// maximum, and says so. Counts and storage cannot be scaled (a claim smaller than its data is no fix): they are checks.
import type { KubeObject, Problem } from "./types.js";
import type { JsonMap } from "./json.js";
import { isMap, listAt, mapAt, stringAt } from "./json.js";
import { containersOf, podCountOf, podSpecOf } from "./pod-templates.js";
import { formatBytesQuantity, formatCpu, parseQuantity } from "./quantity.js";
import { describeRef, groupResourceOf, refOf } from "./refs.js";
import type { ServedResource } from "./types.js";

/** A ResourceQuota that will apply in the target namespace; `existing` ones already charge what their status.used says. */
export interface ApplicableQuota {
  readonly object: KubeObject;
  readonly existing: boolean;
}

type Dimension = "requests.cpu" | "requests.memory" | "limits.cpu" | "limits.memory";
const DIMENSIONS: readonly Dimension[] = ["requests.cpu", "requests.memory", "limits.cpu", "limits.memory"];
// A quota's bare "cpu" and "memory" mean the requests.
const ALIASES: Readonly<Record<string, Dimension>> = { cpu: "requests.cpu", memory: "requests.memory" };

function split(dimension: Dimension): { section: "requests" | "limits"; resource: "cpu" | "memory" } {
  const [section, resource] = dimension.split(".") as ["requests" | "limits", "cpu" | "memory"];
  return { section, resource };
}

function format(resource: "cpu" | "memory", value: number): string {
  return resource === "cpu" ? formatCpu(value) : formatBytesQuantity(value);
}

function show(resource: "cpu" | "memory", value: number): string {
  return resource === "cpu" ? `${Math.round(value * 1000)}m CPU` : `${formatBytesQuantity(value)} memory`;
}

/** Scopes and scope selectors charge only some pods, which the plan cannot tell apart: such quotas are reported, not fitted. */
function isScoped(quota: KubeObject): boolean {
  const spec = mapAt(quota, "spec");
  return listAt(spec, "scopes").length > 0 || mapAt(spec, "scopeSelector") !== undefined;
}

function remaining(quota: ApplicableQuota, key: string): number | undefined {
  const hard = mapAt(quota.object, "spec", "hard") ?? {};
  const hardValue = parseQuantity(hard[key]);
  if (hardValue === undefined) return undefined;
  const used = quota.existing ? (parseQuantity(mapAt(quota.object, "status", "used")?.[key]) ?? 0) : 0;
  return hardValue - used;
}

function available(quotas: readonly ApplicableQuota[], dimension: Dimension): { value: number; quota: KubeObject } | undefined {
  let best: { value: number; quota: KubeObject } | undefined;
  for (const quota of quotas) {
    for (const key of [dimension, ...Object.keys(ALIASES).filter((k) => ALIASES[k] === dimension)]) {
      const value = remaining(quota, key);
      if (value !== undefined && (best === undefined || value < best.value)) best = { value, quota: quota.object };
    }
  }
  return best;
}

/** One pod's charge: the larger of its containers' sum and its largest init container, as quota admission counts. */
function podCharge(spec: JsonMap | undefined, dimension: Dimension): number {
  const { section, resource } = split(dimension);
  const value = (c: unknown): number => parseQuantity(mapAt(c, "resources", section)?.[resource]) ?? 0;
  const sum = listAt(spec, "containers").reduce<number>((total, c) => total + value(c), 0);
  const init = listAt(spec, "initContainers").reduce<number>((max, c) => Math.max(max, value(c)), 0);
  return Math.max(sum, init);
}

/**
 * Rewrites the workloads in place so that they fit; returns the Problems that say what was scaled and what cannot
 * fit. `objects` are the rewritten objects that will move.
 */
export function fitQuotas(objects: readonly KubeObject[], quotas: readonly ApplicableQuota[], limitRanges: readonly KubeObject[], namespace: string): Problem[] {
  const problems: Problem[] = [];
  const workloads = objects.filter((o) => podSpecOf(o) !== undefined);
  for (const range of limitRanges) problems.push(...clampToLimitRange(workloads, range));
  const fitted = quotas.filter((q) => !isScoped(q.object));
  for (const quota of quotas.filter((q) => isScoped(q.object))) {
    problems.push({
      severity: "warning",
      check: "quota",
      object: refOf(quota.object),
      message: `${describeRef(refOf(quota.object))} has scopes, which charge only some pods: the plan did not fit the app to it`,
      hint: "compare the quota with the app's requests and limits by hand",
    });
  }
  for (const dimension of DIMENSIONS) {
    const limit = available(fitted, dimension);
    if (limit === undefined) continue;
    const { section, resource } = split(dimension);
    const total = workloads.reduce((sum, w) => sum + podCountOf(w) * podCharge(podSpecOf(w), dimension), 0);
    problems.push(...missingValues(workloads, dimension, limit.quota, limitRanges));
    if (total <= limit.value || total === 0) continue;
    const quotaName = describeRef(refOf(limit.quota));
    if (limit.value <= 0) {
      problems.push({
        severity: "error",
        check: "quota",
        object: refOf(limit.quota),
        message: `${quotaName} has no ${dimension} left in ${namespace} (the app needs ${show(resource, total)})`,
        hint: `raise the quota's ${dimension} or free some in ${namespace}`,
      });
      continue;
    }
    const factor = limit.value / total;
    for (const workload of workloads) {
      for (const container of containersOf(podSpecOf(workload))) {
        const values = mapAt(container, "resources", section);
        const value = parseQuantity(values?.[resource]);
        if (values !== undefined && value !== undefined) values[resource] = format(resource, value * factor);
      }
    }
    problems.push({
      severity: "warning",
      check: "quota",
      object: refOf(limit.quota),
      message: `the app's ${dimension} (${show(resource, total)}) exceed what ${quotaName} leaves (${show(resource, limit.value)}): every container's ${dimension} is scaled to ${Math.floor(factor * 100)}%`,
      hint: `raise the quota's ${dimension} to keep the source's sizes`,
    });
  }
  for (const workload of workloads) keepRequestsWithinLimits(workload);
  return problems;
}

/** Quota admission refuses a pod that does not state a quota'd resource, unless a LimitRange defaults it. */
function missingValues(workloads: readonly KubeObject[], dimension: Dimension, quota: KubeObject, limitRanges: readonly KubeObject[]): Problem[] {
  const { section, resource } = split(dimension);
  const defaulted = limitRanges.some((range) =>
    listAt(mapAt(range, "spec"), "limits").some(
      (item) =>
        stringAt(item, "type") === "Container" &&
        (mapAt(item, section === "requests" ? "defaultRequest" : "default")?.[resource] !== undefined ||
          (section === "requests" && mapAt(item, "default")?.[resource] !== undefined)),
    ),
  );
  if (defaulted) return [];
  const problems: Problem[] = [];
  for (const workload of workloads) {
    const bare = containersOf(podSpecOf(workload)).filter((c) => mapAt(c, "resources", section)?.[resource] === undefined);
    if (bare.length === 0) continue;
    const names = bare.map((c) => stringAt(c, "name") ?? "?").join(", ");
    problems.push({
      severity: "error",
      check: "quota",
      object: refOf(workload),
      message: `${describeRef(refOf(quota))} limits ${dimension}, but container ${names} of ${describeRef(refOf(workload))} sets none: the target would refuse its pods`,
      hint: `set resources.${section}.${resource} with a rules file, or add a LimitRange default in the target namespace`,
    });
  }
  return problems;
}

function clampToLimitRange(workloads: readonly KubeObject[], range: KubeObject): Problem[] {
  const problems: Problem[] = [];
  for (const item of listAt(mapAt(range, "spec"), "limits")) {
    if (stringAt(item, "type") !== "Container") continue;
    const max = mapAt(item, "max") ?? {};
    const min = mapAt(item, "min") ?? {};
    for (const workload of workloads) {
      for (const container of containersOf(podSpecOf(workload))) {
        for (const section of ["requests", "limits"] as const) {
          const values = mapAt(container, "resources", section);
          if (values === undefined) continue;
          for (const resource of ["cpu", "memory"] as const) {
            const value = parseQuantity(values[resource]);
            if (value === undefined) continue;
            const ceiling = parseQuantity(max[resource]);
            const floor = parseQuantity(min[resource]);
            const where = `container ${stringAt(container, "name") ?? "?"} of ${describeRef(refOf(workload))}`;
            if (ceiling !== undefined && value > ceiling) {
              values[resource] = format(resource, ceiling);
              problems.push({
                severity: "warning",
                check: "quota",
                object: refOf(workload),
                message: `${where}: ${section}.${resource} ${show(resource, value)} is above ${describeRef(refOf(range))}'s max, lowered to ${show(resource, ceiling)}`,
                hint: "raise the LimitRange's max to keep the source's sizes",
              });
            } else if (floor !== undefined && value < floor) {
              problems.push({
                severity: "error",
                check: "quota",
                object: refOf(workload),
                message: `${where}: ${section}.${resource} ${show(resource, value)} is below ${describeRef(refOf(range))}'s min ${show(resource, floor)}: the target would refuse its pods`,
                hint: "raise the container's value with a rules file, or lower the LimitRange's min",
              });
            }
          }
        }
      }
    }
  }
  return problems;
}

/** Scaling limits alone can put them under the requests, which the API server refuses. */
function keepRequestsWithinLimits(workload: KubeObject): void {
  for (const container of containersOf(podSpecOf(workload))) {
    const requests = mapAt(container, "resources", "requests");
    const limits = mapAt(container, "resources", "limits");
    if (requests === undefined || limits === undefined) continue;
    for (const resource of ["cpu", "memory"]) {
      const request = parseQuantity(requests[resource]);
      const limit = parseQuantity(limits[resource]);
      if (request !== undefined && limit !== undefined && request > limit) requests[resource] = limits[resource];
    }
  }
}

/** What the app adds to a quota's counted and storage keys, by key (`pods`, `requests.storage`, `count/deployments.apps`...). */
function countCharges(objects: readonly KubeObject[], resources: readonly ServedResource[]): Map<string, number> {
  const charges = new Map<string, number>();
  const add = (key: string, amount: number): void => void charges.set(key, (charges.get(key) ?? 0) + amount);
  for (const object of objects) {
    const groupResource = groupResourceOf(object, resources);
    add(`count/${groupResource}`, 1);
    add("pods", podCountOf(object));
    const legacy = LEGACY_COUNTS[object.kind];
    if (legacy !== undefined && !groupResource.includes(".")) add(legacy, 1);
    if (object.kind === "Service") {
      const type = stringAt(mapAt(object, "spec"), "type");
      if (type === "LoadBalancer") add("services.loadbalancers", 1);
      if (type === "LoadBalancer" || type === "NodePort") add("services.nodeports", listAt(mapAt(object, "spec"), "ports").filter(isMap).length);
    }
    if (object.kind === "PersistentVolumeClaim") {
      const bytes = parseQuantity(mapAt(object, "spec", "resources", "requests")?.["storage"]) ?? 0;
      const storageClass = stringAt(mapAt(object, "spec"), "storageClassName");
      add("requests.storage", bytes);
      if (storageClass !== undefined) {
        add(`${storageClass}.storageclass.storage.k8s.io/requests.storage`, bytes);
        add(`${storageClass}.storageclass.storage.k8s.io/persistentvolumeclaims`, 1);
      }
    }
  }
  return charges;
}

const LEGACY_COUNTS: Readonly<Record<string, string>> = {
  PersistentVolumeClaim: "persistentvolumeclaims",
  Service: "services",
  ConfigMap: "configmaps",
  Secret: "secrets",
  ReplicationController: "replicationcontrollers",
  ResourceQuota: "resourcequotas",
};

/** Errors for every counted or storage key the app's objects would push over a quota. */
export function checkQuotaCounts(objects: readonly KubeObject[], quotas: readonly ApplicableQuota[], resources: readonly ServedResource[], namespace: string): Problem[] {
  const charges = countCharges(objects, resources);
  const problems: Problem[] = [];
  for (const quota of quotas) {
    if (isScoped(quota.object)) continue;
    for (const key of Object.keys(mapAt(quota.object, "spec", "hard") ?? {})) {
      const charge = charges.get(key);
      const left = remaining(quota, key);
      if (charge === undefined || charge === 0 || left === undefined || charge <= left) continue;
      const storage = key.endsWith("requests.storage");
      const amount = (n: number): string => (storage ? formatBytesQuantity(n) : String(n));
      problems.push({
        severity: "error",
        check: "quota",
        object: refOf(quota.object),
        message: `${describeRef(refOf(quota.object))} allows ${amount(Math.max(0, left))} more ${key} in ${namespace}, the app needs ${amount(charge)}`,
        hint: `raise the quota's ${key}, or move fewer objects (--selector)`,
      });
    }
  }
  return problems;
}
