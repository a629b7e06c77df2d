// The chart's values: what a user changes between clusters (namespace, storage classes, image registries, replicas,
// Route and Ingress hosts, resource scaling), and where in each object they go. One table of "slots" serves both
// readers of a fat chart, so that they cannot disagree: the chart writer turns each slot into a template expression
// for Helm, and `theseus import` puts the value in place itself (it needs no Helm).
import { REPLICATED_KINDS, containersOf, mapImage, parseQuantity, podSpecOf } from "../../app-model/index.js";
import type { KubeObject } from "../../app-model/index.js";
import { TheseusError } from "../../common/index.js";

export interface ChartValues {
  /** "" = the Helm release's namespace (`theseus import`: the archive's, or --to-namespace). */
  namespace: string;
  /** Source StorageClass -> the class to use. */
  storageClasses: Record<string, string>;
  /** Image prefix -> replacement (`quay.io/shop` -> `registry.example/shop`), as `--image-registry` in a plan. */
  imageRegistries: Record<string, string>;
  /** "Kind/name" -> replicas. */
  replicas: Record<string, number>;
  /** "Route/name" or "Ingress/name/RULE" -> host. */
  hosts: Record<string, string>;
  /** Multiplies every container's cpu, memory and ephemeral-storage requests and limits. */
  resourceScale: number;
}

type Holder = Record<string, unknown> | unknown[];

export type Slot =
  | { readonly type: "storageClass"; readonly holder: Holder; readonly at: string | number; readonly key: string }
  | { readonly type: "image"; readonly holder: Holder; readonly at: string | number; readonly image: string }
  | { readonly type: "replicas"; readonly holder: Holder; readonly at: string | number; readonly key: string }
  | { readonly type: "host"; readonly holder: Holder; readonly at: string | number; readonly key: string }
  | { readonly type: "cpu"; readonly holder: Holder; readonly at: string | number; readonly millicores: number }
  | { readonly type: "bytes"; readonly holder: Holder; readonly at: string | number; readonly bytes: number };

const isMap = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const mapOf = (v: unknown): Record<string, unknown> | undefined => (isMap(v) ? v : undefined);
const listOf = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

/** Every slot of an object (live references into it: set `holder[at]`). */
export function slotsOf(object: KubeObject): Slot[] {
  const slots: Slot[] = [];
  const name = object.metadata.name ?? "";
  const spec = mapOf(object["spec"]);
  if (object.kind === "PersistentVolumeClaim" && spec !== undefined && typeof spec["storageClassName"] === "string" && spec["storageClassName"] !== "") {
    slots.push({ type: "storageClass", holder: spec, at: "storageClassName", key: spec["storageClassName"] });
  }
  if (object.kind === "StatefulSet" && spec !== undefined) {
    for (const template of listOf(spec["volumeClaimTemplates"])) {
      const tspec = mapOf(mapOf(template)?.["spec"]);
      if (tspec !== undefined && typeof tspec["storageClassName"] === "string" && tspec["storageClassName"] !== "") {
        slots.push({ type: "storageClass", holder: tspec, at: "storageClassName", key: tspec["storageClassName"] });
      }
    }
  }
  if (REPLICATED_KINDS.has(object.kind) && spec !== undefined && typeof spec["replicas"] === "number") {
    slots.push({ type: "replicas", holder: spec, at: "replicas", key: `${object.kind}/${name}` });
  }
  if (object.kind === "Route" && spec !== undefined && typeof spec["host"] === "string" && spec["host"] !== "") {
    slots.push({ type: "host", holder: spec, at: "host", key: `Route/${name}` });
  }
  if (object.kind === "Ingress" && spec !== undefined) {
    const ruleHosts = new Map<string, string>();
    listOf(spec["rules"]).forEach((rule, i) => {
      const r = mapOf(rule);
      if (r !== undefined && typeof r["host"] === "string" && r["host"] !== "") {
        slots.push({ type: "host", holder: r, at: "host", key: `Ingress/${name}/${i}` });
        if (!ruleHosts.has(r["host"])) ruleHosts.set(r["host"], `Ingress/${name}/${i}`);
      }
    });
    // A TLS host that is a rule's host follows it; any other stays as it is.
    for (const tls of listOf(spec["tls"])) {
      const hosts = listOf(mapOf(tls)?.["hosts"]);
      hosts.forEach((host, k) => {
        const key = typeof host === "string" ? ruleHosts.get(host) : undefined;
        if (key !== undefined) slots.push({ type: "host", holder: hosts, at: k, key });
      });
    }
  }
  for (const container of containersOf(podSpecOf(object))) {
    if (typeof container["image"] === "string") slots.push({ type: "image", holder: container, at: "image", image: container["image"] });
    const resources = mapOf(container["resources"]);
    for (const group of ["requests", "limits"]) {
      const quantities = mapOf(resources?.[group]);
      if (quantities === undefined) continue;
      for (const [resource, value] of Object.entries(quantities)) {
        const parsed = parseQuantity(value);
        if (parsed === undefined) continue;
        if (resource === "cpu") slots.push({ type: "cpu", holder: quantities, at: resource, millicores: Math.ceil(parsed * 1000) });
        else if (resource === "memory" || resource === "ephemeral-storage") slots.push({ type: "bytes", holder: quantities, at: resource, bytes: Math.ceil(parsed) });
      }
    }
  }
  return slots;
}

function valueAt(holder: Holder, at: string | number): unknown {
  return Array.isArray(holder) ? holder[at as number] : holder[at as string];
}

export function setAt(holder: Holder, at: string | number, value: unknown): void {
  if (Array.isArray(holder)) holder[at as number] = value;
  else holder[at as string] = value;
}

/** The values a chart ships with: each slot's value as exported, so that the defaults reproduce the app. */
export function defaultValues(objects: readonly KubeObject[]): ChartValues {
  const values: ChartValues = { namespace: "", storageClasses: {}, imageRegistries: {}, replicas: {}, hosts: {}, resourceScale: 1 };
  for (const object of objects) {
    for (const slot of slotsOf(object)) {
      const current = valueAt(slot.holder, slot.at);
      if (slot.type === "storageClass") values.storageClasses[slot.key] = slot.key;
      else if (slot.type === "replicas" && typeof current === "number") values.replicas[slot.key] = current;
      else if (slot.type === "host" && typeof current === "string") values.hosts[slot.key] ??= current;
    }
  }
  return values;
}

/** Scales a quantity; whole results, rounded up, so that a request never shrinks to nothing. */
export function scaled(slot: Extract<Slot, { type: "cpu" | "bytes" }>, scale: number): string {
  return slot.type === "cpu" ? `${Math.ceil(slot.millicores * scale)}m` : `${Math.ceil(slot.bytes * scale)}`;
}

/** Puts the values into (copies of) the objects, as the chart's templates do. */
export function applyValues(objects: readonly KubeObject[], values: ChartValues): KubeObject[] {
  const registries = new Map(Object.entries(values.imageRegistries));
  return objects.map((original) => {
    const object = structuredClone(original);
    for (const slot of slotsOf(object)) {
      switch (slot.type) {
        case "storageClass":
          setAt(slot.holder, slot.at, values.storageClasses[slot.key] ?? slot.key);
          break;
        case "image":
          setAt(slot.holder, slot.at, mapImage(slot.image, registries));
          break;
        case "replicas":
          if (values.replicas[slot.key] !== undefined) setAt(slot.holder, slot.at, values.replicas[slot.key]);
          break;
        case "host":
          if (values.hosts[slot.key] !== undefined) setAt(slot.holder, slot.at, values.hosts[slot.key]);
          break;
        case "cpu":
        case "bytes":
          if (values.resourceScale !== 1) setAt(slot.holder, slot.at, scaled(slot, values.resourceScale));
          break;
      }
    }
    return object;
  });
}

/** Checks values read from a file or built from --set; a clear error names the key. */
export function validateValues(raw: unknown, where: string): ChartValues {
  const fail = (key: string, why: string): never => {
    throw new TheseusError("invalid_argument", `${where}: ${key} ${why}`, { hint: "see the chart's values.yaml for each value's form" });
  };
  if (!isMap(raw)) fail("the values", "are not a mapping");
  const map = raw as Record<string, unknown>;
  const strings = (key: string): Record<string, string> => {
    const v = map[key] ?? {};
    if (!isMap(v)) return fail(key, "is not a mapping");
    for (const [k, x] of Object.entries(v)) if (typeof x !== "string" || x === "") fail(`${key}.${k}`, "is not a non-empty string");
    return v as Record<string, string>;
  };
  const replicas = map["replicas"] ?? {};
  if (!isMap(replicas)) fail("replicas", "is not a mapping");
  for (const [k, x] of Object.entries(replicas as Record<string, unknown>)) if (typeof x !== "number" || !Number.isInteger(x) || x < 0) fail(`replicas.${k}`, "is not a whole number");
  const scale = map["resourceScale"] ?? 1;
  if (typeof scale !== "number" || !(scale > 0) || scale > 1000) fail("resourceScale", "is not a number above 0 (and at most 1000)");
  const namespace = map["namespace"] ?? "";
  if (typeof namespace !== "string" || (namespace !== "" && !/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(namespace))) fail("namespace", "is not a namespace name");
  return {
    namespace: namespace as string,
    storageClasses: strings("storageClasses"),
    imageRegistries: strings("imageRegistries"),
    replicas: replicas as Record<string, number>,
    hosts: strings("hosts"),
    resourceScale: scale as number,
  };
}

/** `--set a.b=c` on a copy of `values` (Helm's dotted keys; numbers and booleans typed, the rest strings). */
export function setValue(values: Record<string, unknown>, assignment: string): void {
  const eq = assignment.indexOf("=");
  if (eq <= 0) throw new TheseusError("invalid_argument", `--set "${assignment}" is not KEY=VALUE`, { hint: "for example --set replicas.Deployment/web=2" });
  const path = assignment.slice(0, eq).split(".");
  const text = assignment.slice(eq + 1);
  const value: unknown = /^-?\d+(\.\d+)?$/.test(text) ? Number(text) : text === "true" ? true : text === "false" ? false : text;
  let node: Record<string, unknown> = values;
  path.forEach((key, i) => {
    if (key === "" || key === "__proto__" || key === "constructor" || key === "prototype") throw new TheseusError("invalid_argument", `--set "${assignment}": "${key}" is not a key`);
    if (i === path.length - 1) {
      node[key] = value;
      return;
    }
    const next = node[key];
    if (!isMap(next)) node[key] = {};
    node = node[key] as Record<string, unknown>;
  });
}
