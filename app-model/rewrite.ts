// The built-in rewrites for the target, each a step that changes an object in place; the plan diffs around each step,
// so every change is recorded under the step's name. Order matters only where one step reads another's field.
import type { KubeObject, PlanOptions } from "./types.js";
import type { JsonMap } from "./json.js";
import { isMap, listAt, mapAt, stringAt } from "./json.js";
import { containersOf, podSpecOf, REPLICATED_KINDS } from "./pod-templates.js";

export interface RewriteContext {
  readonly options: PlanOptions;
  /** Names of the app's Services, whose DNS names move with the namespace. */
  readonly serviceNames: ReadonlySet<string>;
  /** The source's default StorageClass, which a claim without a class was given. */
  readonly sourceDefaultClass: string | undefined;
}

export interface RewriteStep {
  /** The Change.why of what it does. */
  readonly why: string;
  readonly apply: (object: KubeObject, context: RewriteContext) => void;
}

export const REWRITE_STEPS: readonly RewriteStep[] = [
  { why: "namespace", apply: mapNamespace },
  { why: "service-dns", apply: rewriteServiceDns },
  { why: "storage-class", apply: mapStorageClass },
  { why: "image-registry", apply: mapImages },
  { why: "replicas", apply: overrideReplicas },
  { why: "route-host", apply: mapRouteHost },
];

function mapNamespace(object: KubeObject, { options }: RewriteContext): void {
  const { sourceNamespace: from, targetNamespace: to } = options;
  if (from === to) return;
  if (object.metadata.namespace === from) object.metadata.namespace = to;
  if (object.kind === "Namespace" && object.metadata.name === from) object.metadata.name = to;
  if (object.kind === "RoleBinding" || object.kind === "ClusterRoleBinding") {
    for (const subject of listAt(object, "subjects")) {
      if (isMap(subject) && subject["kind"] === "ServiceAccount" && subject["namespace"] === from) subject["namespace"] = to;
    }
  }
}

function rewriteServiceDns(object: KubeObject, { options, serviceNames }: RewriteContext): void {
  const { sourceNamespace: from, targetNamespace: to } = options;
  if (!options.rewriteServiceDns || from === to || serviceNames.size === 0) return;
  const names = [...serviceNames].map(escapeRegExp).join("|");
  // NAME.NS, NAME.NS.svc, NAME.NS.svc.cluster.local, also behind a pod's name (db-0.db.NS.svc); never the middle of
  // a longer name: "web.shop.example.com" is not the Service web in shop.
  const pattern = new RegExp(`(?<![-a-z0-9])(${names})\\.${escapeRegExp(from)}(\\.svc(?:\\.cluster\\.local)?)?(?![-a-z0-9]|\\.[a-z0-9])`, "g");
  const rewrite = (text: string): string => text.replace(pattern, (_m, name: string, suffix: string | undefined) => `${name}.${to}${suffix ?? ""}`);
  if (object.kind === "ConfigMap") {
    const data = mapAt(object, "data");
    for (const key of Object.keys(data ?? {})) {
      const value = data?.[key];
      if (data !== undefined && typeof value === "string") data[key] = rewrite(value);
    }
  }
  for (const container of containersOf(podSpecOf(object))) {
    for (const env of listAt(container, "env")) {
      if (isMap(env) && typeof env["value"] === "string") env["value"] = rewrite(env["value"]);
    }
  }
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

function mapStorageClass(object: KubeObject, context: RewriteContext): void {
  if (object.kind === "PersistentVolumeClaim") mapClaimSpec(mapAt(object, "spec"), context);
  if (object.kind === "StatefulSet") {
    for (const template of listAt(mapAt(object, "spec"), "volumeClaimTemplates")) mapClaimSpec(mapAt(template, "spec"), context);
  }
}

function mapClaimSpec(spec: JsonMap | undefined, { options, sourceDefaultClass }: RewriteContext): void {
  if (spec === undefined) return;
  const current = spec["storageClassName"];
  // "" asks for no class (a statically bound volume), a choice the mapping leaves alone.
  const source = typeof current === "string" ? current : sourceDefaultClass;
  const mapped = source === undefined || current === "" ? undefined : options.storageClasses.get(source);
  if (mapped !== undefined) spec["storageClassName"] = mapped;
}

/** The mapped image, when a registry prefix (a whole path segment: `registry.eu/team`, never `registry.eu/te`) matches. */
export function mapImage(image: string, registries: ReadonlyMap<string, string>): string {
  let best: [string, string] | undefined;
  for (const [from, to] of registries) {
    const prefix = from.replace(/\/+$/, "");
    if ((image === prefix || image.startsWith(prefix + "/")) && (best === undefined || prefix.length > best[0].length)) best = [prefix, to.replace(/\/+$/, "")];
  }
  return best === undefined ? image : best[1] + image.slice(best[0].length);
}

function mapImages(object: KubeObject, { options }: RewriteContext): void {
  if (options.imageRegistries.size === 0) return;
  for (const container of containersOf(podSpecOf(object))) {
    const image = stringAt(container, "image");
    if (image !== undefined) container["image"] = mapImage(image, options.imageRegistries);
  }
}

function overrideReplicas(object: KubeObject, { options }: RewriteContext): void {
  const replicas = options.replicas.get(`${object.kind}/${object.metadata.name ?? ""}`);
  const spec = mapAt(object, "spec");
  if (replicas !== undefined && spec !== undefined && REPLICATED_KINDS.has(object.kind)) spec["replicas"] = replicas;
}

function mapRouteHost(object: KubeObject, { options }: RewriteContext): void {
  if (object.kind !== "Route" || options.routeHosts.size === 0) return;
  const spec = mapAt(object, "spec");
  const host = stringAt(spec, "host");
  if (spec === undefined || host === undefined) return;
  for (const [from, to] of options.routeHosts) {
    if (host === from || host.endsWith("." + from)) {
      spec["host"] = host.slice(0, host.length - from.length) + to;
      return;
    }
  }
}
