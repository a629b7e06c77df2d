// API-version conversion for a target that does not serve the object's version of its kind: a newer source's
// batch/v1 CronJob into a 1.20 target, or an old manifest's v1beta1 into a target that removed it. Only pairs whose
// schemas are the same, or whose differing fields are converted here, are listed; any other object gets a Problem
// with the reason, never a silent drop.
import type { KubeObject } from "./types.js";
import type { JsonMap } from "./json.js";
import { clone, isMap, listAt, mapAt } from "./json.js";

interface Conversion {
  readonly kind: string;
  readonly from: string;
  readonly to: string;
  /** Converts in place; returns why it cannot when a field has no equivalent in the target version. */
  readonly convert?: (object: KubeObject) => string | undefined;
}

const INGRESS_V1BETA1 = ["networking.k8s.io/v1beta1", "extensions/v1beta1"];

const CONVERSIONS: readonly Conversion[] = [
  { kind: "CronJob", from: "batch/v1", to: "batch/v1beta1", convert: refuseFields(["spec", "timeZone"]) },
  { kind: "CronJob", from: "batch/v1beta1", to: "batch/v1" },
  { kind: "PodDisruptionBudget", from: "policy/v1", to: "policy/v1beta1", convert: pdbToV1beta1 },
  { kind: "PodDisruptionBudget", from: "policy/v1beta1", to: "policy/v1" },
  { kind: "HorizontalPodAutoscaler", from: "autoscaling/v2", to: "autoscaling/v2beta2" },
  { kind: "HorizontalPodAutoscaler", from: "autoscaling/v2beta2", to: "autoscaling/v2" },
  { kind: "IngressClass", from: "networking.k8s.io/v1", to: "networking.k8s.io/v1beta1" },
  { kind: "IngressClass", from: "networking.k8s.io/v1beta1", to: "networking.k8s.io/v1" },
  ...INGRESS_V1BETA1.map((to) => ({ kind: "Ingress", from: "networking.k8s.io/v1", to, convert: ingressToV1beta1 })),
  ...INGRESS_V1BETA1.map((from) => ({ kind: "Ingress", from, to: "networking.k8s.io/v1", convert: ingressToV1 })),
  { kind: "Ingress", from: "extensions/v1beta1", to: "networking.k8s.io/v1beta1" },
  { kind: "Ingress", from: "networking.k8s.io/v1beta1", to: "extensions/v1beta1" },
];

/** Kinds the target may serve in another version than the source: a lookup for them must match any version. */
export const CONVERTIBLE_KINDS: ReadonlySet<string> = new Set(CONVERSIONS.map((c) => c.kind));

export type ConversionResult =
  | { readonly converted: KubeObject }
  | { readonly refused: string }
  | { readonly unknown: true };

/** Converts `object` to the first listed version `serves` accepts. */
export function convertApiVersion(object: KubeObject, serves: (apiVersion: string) => boolean): ConversionResult {
  const refusals: string[] = [];
  for (const conversion of CONVERSIONS) {
    if (conversion.kind !== object.kind || conversion.from !== object.apiVersion || !serves(conversion.to)) continue;
    const converted = clone(object);
    converted.apiVersion = conversion.to;
    const refusal = conversion.convert?.(converted);
    if (refusal === undefined) return { converted };
    refusals.push(`${conversion.to}: ${refusal}`);
  }
  return refusals.length > 0 ? { refused: refusals.join("; ") } : { unknown: true };
}

function refuseFields(...paths: string[][]): (object: KubeObject) => string | undefined {
  return (object) => {
    for (const path of paths) {
      const parent = mapAt(object, ...path.slice(0, -1));
      const leaf = path[path.length - 1] ?? "";
      if (parent?.[leaf] !== undefined) return `${path.join(".")} has no equivalent in that version`;
    }
    return undefined;
  };
}

function pdbToV1beta1(object: KubeObject): string | undefined {
  const spec = mapAt(object, "spec");
  if (spec?.["unhealthyPodEvictionPolicy"] !== undefined) return "spec.unhealthyPodEvictionPolicy has no equivalent in that version";
  // policy/v1 reads an empty selector as every pod, v1beta1 as none: the same text would protect nothing.
  const selector = mapAt(spec, "selector");
  if (selector !== undefined && Object.keys(selector).every((k) => isEmpty(selector[k]))) {
    return "an empty spec.selector selects every pod in policy/v1 but none in v1beta1";
  }
  return undefined;
}

function isEmpty(value: unknown): boolean {
  return value === undefined || (Array.isArray(value) && value.length === 0) || (isMap(value) && Object.keys(value).length === 0);
}

// networking.k8s.io/v1 renamed spec.backend to spec.defaultBackend and nested serviceName/servicePort under service.
function ingressToV1beta1(object: KubeObject): string | undefined {
  const spec = mapAt(object, "spec");
  if (spec === undefined) return undefined;
  if (spec["defaultBackend"] !== undefined) {
    spec["backend"] = backendToV1beta1(spec["defaultBackend"]);
    delete spec["defaultBackend"];
  }
  for (const path of ingressPaths(spec)) path["backend"] = backendToV1beta1(path["backend"]);
  return undefined;
}

function ingressToV1(object: KubeObject): string | undefined {
  const spec = mapAt(object, "spec");
  if (spec === undefined) return undefined;
  if (spec["backend"] !== undefined) {
    spec["defaultBackend"] = backendToV1(spec["backend"]);
    delete spec["backend"];
  }
  for (const path of ingressPaths(spec)) {
    path["backend"] = backendToV1(path["backend"]);
    // v1 requires pathType; ImplementationSpecific is what v1beta1 meant by leaving it out.
    path["pathType"] ??= "ImplementationSpecific";
  }
  return undefined;
}

function ingressPaths(spec: JsonMap): JsonMap[] {
  return listAt(spec, "rules").flatMap((rule) => listAt(mapAt(rule, "http"), "paths").filter(isMap));
}

function backendToV1beta1(backend: unknown): unknown {
  const service = mapAt(backend, "service");
  if (service === undefined) return backend;
  const port = mapAt(service, "port");
  return { serviceName: service["name"], servicePort: port?.["number"] ?? port?.["name"] };
}

function backendToV1(backend: unknown): unknown {
  if (!isMap(backend) || backend["serviceName"] === undefined) return backend;
  const port = backend["servicePort"];
  return { service: { name: backend["serviceName"], port: typeof port === "number" ? { number: port } : { name: port } } };
}
