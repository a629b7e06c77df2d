// Which objects make up an application on this cluster: every namespaced kind the API server serves (API discovery,
// preferred versions, custom resources included) listed in the namespace, narrowed server-side by a label selector or
// to one Helm release. Kinds that cannot be listed (forbidden, a failing aggregated API) become warnings, so that the
// plan reports them instead of silently moving a partial application.
import { isMoverObject } from "./movers.js";
import { parseLabelSelector } from "../../app-model/index.js";
import type { KubeObject, ServedResource } from "../../app-model/index.js";
import { TheseusError, describeError } from "../../common/index.js";
import { groupResourceOf, mapConcurrent } from "../../kube/index.js";
import type { Discovery, KubeObjects } from "../../kube/index.js";

export interface AppSelection {
  readonly namespace: string;
  readonly labelSelector: string;
  readonly helmRelease: string;
}

export interface Listing {
  readonly discovery: Discovery;
  /** The resources listed. */
  readonly listed: readonly ServedResource[];
  readonly objects: readonly KubeObject[];
  readonly warnings: readonly string[];
}

const HELM_RELEASE_ANNOTATION = "meta.helm.sh/release-name";
const LIST_CONCURRENCY = 4;

/**
 * Resources worth listing for objects: one version per kind of each group, with `list`: the group's preferred version,
 * or, for a kind the preferred version does not serve (batch/v1beta1 CronJob beside batch/v1 Job on 1.20), the first
 * version discovery lists for it (the API server orders a group's versions by priority).
 */
export function listableResources(discovery: Discovery, namespaced: boolean): ServedResource[] {
  const chosen = new Map<string, ServedResource>();
  for (const r of discovery.resources) {
    if (r.namespaced !== namespaced || !r.verbs.includes("list")) continue;
    const key = `${r.group}/${r.kind}`;
    const current = chosen.get(key);
    if (current === undefined || (r.preferred && !current.preferred)) chosen.set(key, r);
  }
  // A legacy group serving the same objects as their new home (extensions/v1beta1 Ingress next to networking.k8s.io)
  // goes last, so that deduplication by uid keeps the current group's form.
  const legacy = (r: ServedResource): number => (r.group === "extensions" ? 1 : 0);
  return [...chosen.values()].sort((a, b) => legacy(a) - legacy(b));
}

/** Narrows a listing: only these kinds, from the cached discovery (quiesce runs while the app is down). */
export interface ListAppOptions {
  readonly kinds?: ReadonlySet<string>;
  /** Refresh API discovery first (default true: the plan must see a CRD created a moment ago). */
  readonly refreshDiscovery?: boolean;
}

export async function listApp(objects: KubeObjects, selection: AppSelection, signal?: AbortSignal, options: ListAppOptions = {}): Promise<Listing> {
  if (selection.labelSelector !== "" && selection.helmRelease !== "") {
    throw new TheseusError("invalid_argument", "choose a label selector or a Helm release, not both");
  }
  // Checked here, so that a typo is one error naming the selector rather than one per kind from the API server.
  if (selection.labelSelector !== "") parseLabelSelector(selection.labelSelector);
  const discovery = await objects.discovery(signal, options.refreshDiscovery ?? true);
  const kinds = options.kinds;
  const resources = listableResources(discovery, true).filter((r) => kinds === undefined || kinds.has(r.kind));
  const found = await listEach(objects, resources, { namespace: selection.namespace, labelSelector: selection.labelSelector }, signal);
  // A round's mover pod and its Secret (the agent's key) are Theseus's, not the application's: never planned or moved.
  found.objects = found.objects.filter((o) => !isMoverObject(o));
  const release = selection.helmRelease;
  const secretName = new RegExp(`^sh\\.helm\\.release\\.v1\\.${release.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\.v\\d+$`);
  const selected =
    release === ""
      ? found.objects
      : found.objects.filter(
          (o) => o.metadata.annotations?.[HELM_RELEASE_ANNOTATION] === release || (o.apiVersion === "v1" && o.kind === "Secret" && secretName.test(o.metadata.name ?? "")),
        );
  return { discovery, listed: found.listed, objects: selected, warnings: [...discovery.warnings, ...found.warnings] };
}

/**
 * Lists each resource with the same options, a few at a time; deduplicates objects served by two groups (by uid).
 * A malformed selector fails the whole listing; a kind that cannot be listed is a warning.
 */
export async function listEach(
  objects: KubeObjects,
  resources: readonly ServedResource[],
  options: { readonly namespace?: string; readonly labelSelector?: string },
  signal?: AbortSignal,
): Promise<{ listed: ServedResource[]; objects: KubeObject[]; warnings: string[] }> {
  const warnings: string[] = [];
  const results = await mapConcurrent(resources, LIST_CONCURRENCY, async (resource): Promise<KubeObject[] | undefined> => {
    try {
      return await objects.list(resource, options, signal);
    } catch (error) {
      if (signal?.aborted === true || (error instanceof TheseusError && error.code === "invalid_argument")) throw error;
      warnings.push(`${groupResourceOf(resource)}: cannot be listed: ${describeError(error).split("\n")[0] ?? ""}`);
      return undefined;
    }
  });
  const seen = new Set<string>();
  const out: KubeObject[] = [];
  const listed: ServedResource[] = [];
  resources.forEach((resource, i) => {
    const items = results[i];
    if (items === undefined) return;
    listed.push(resource);
    for (const item of items) {
      const key = item.metadata.uid ?? `${item.apiVersion}/${item.kind}/${item.metadata.namespace ?? ""}/${item.metadata.name ?? ""}`;
      if (seen.has(key)) continue;
      seen.add(key);
      out.push(item);
    }
  });
  return { listed, objects: out, warnings: warnings.sort() };
}
