// Generic reads and writes of any object by apiVersion and kind, custom resources included: the resource (plural,
// scope) comes from API discovery, cached and refreshed when a kind is not found (Stage creates CRDs as it goes).
import type { KubeObject, ObjectRef, ServedResource } from "../app-model/index.js";
import { TheseusError } from "../common/index.js";
import { apiVersionOf, discoverResources, groupResourceOf } from "./discovery.js";
import type { Discovery } from "./discovery.js";
import type { KubeRest } from "./rest.js";

export interface ListOptions {
  /** Omitted: across the cluster (or cluster-scoped objects). */
  readonly namespace?: string | undefined;
  readonly labelSelector?: string | undefined;
}

export interface KubeObjects {
  readonly rest: KubeRest;
  /** Served resources; cached, `refresh` reads them again. */
  discovery(signal?: AbortSignal, refresh?: boolean): Promise<Discovery>;
  /** The served resource behind apiVersion+kind; not_found when the API server does not serve it. */
  resourceFor(apiVersion: string, kind: string, signal?: AbortSignal): Promise<ServedResource>;
  /** Every object of the resource (paginated), each with its apiVersion and kind set (list items lack them). */
  list(resource: ServedResource, options: ListOptions, signal?: AbortSignal): Promise<KubeObject[]>;
  /** undefined when absent. */
  get(ref: ObjectRef, signal?: AbortSignal): Promise<KubeObject | undefined>;
  create(object: KubeObject, signal?: AbortSignal): Promise<KubeObject>;
  /** JSON merge patch (RFC 7386): null removes a field. */
  mergePatch(ref: ObjectRef, patch: Record<string, unknown>, signal?: AbortSignal): Promise<KubeObject>;
  /** false when it was already gone. Background propagation: dependents are collected by the garbage collector. */
  delete(ref: ObjectRef, signal?: AbortSignal): Promise<boolean>;
}

const PAGE = "500";

export function createKubeObjects(rest: KubeRest): KubeObjects {
  let cached: Promise<Discovery> | undefined;
  const discovery = (signal?: AbortSignal, refresh = false): Promise<Discovery> => {
    if (cached === undefined || refresh) {
      const next = discoverResources(rest, signal);
      cached = next;
      next.catch(() => {
        if (cached === next) cached = undefined;
      });
    }
    return cached;
  };
  const find = (d: Discovery, apiVersion: string, kind: string): ServedResource | undefined => d.resources.find((r) => apiVersionOf(r) === apiVersion && r.kind === kind);
  const resourceFor = async (apiVersion: string, kind: string, signal?: AbortSignal): Promise<ServedResource> => {
    const found = find(await discovery(signal), apiVersion, kind) ?? find(await discovery(signal, true), apiVersion, kind);
    if (found === undefined) {
      throw new TheseusError("not_found", `the API server does not serve ${kind} in ${apiVersion}`, { hint: "install its CRD or convert the object to a served version" });
    }
    return found;
  };
  const objectPath = (r: ServedResource, namespace: string | undefined, name?: string): string => {
    const base = r.group === "" ? `/api/${r.version}` : `/apis/${r.group}/${r.version}`;
    const ns = r.namespaced && namespace !== undefined && namespace !== "" ? `/namespaces/${encodeURIComponent(namespace)}` : "";
    return `${base}${ns}/${r.resource}${name === undefined ? "" : `/${encodeURIComponent(name)}`}`;
  };
  const named = (r: ServedResource, ref: { namespace?: string | undefined; name?: string | undefined }): string =>
    `${groupResourceOf(r)} ${ref.namespace === undefined || ref.namespace === "" ? "" : `${ref.namespace}/`}${ref.name ?? ""}`;

  return {
    rest,
    discovery,
    resourceFor,
    async list(resource, options, signal) {
      const items: KubeObject[] = [];
      let continueToken: string | undefined;
      const where = options.namespace === undefined ? "" : ` in namespace ${options.namespace}`;
      do {
        const page = await rest.json<{ items: KubeObject[] | null; metadata?: { continue?: string } }>({
          path: objectPath(resource, options.namespace),
          query: { labelSelector: options.labelSelector === "" ? undefined : options.labelSelector, limit: PAGE, continue: continueToken },
          what: `list ${groupResourceOf(resource)}${where}`,
          signal,
        });
        for (const item of page.items ?? []) items.push({ ...item, apiVersion: apiVersionOf(resource), kind: resource.kind });
        continueToken = page.metadata?.continue === "" ? undefined : page.metadata?.continue;
      } while (continueToken !== undefined);
      return items;
    },
    async get(ref, signal) {
      const r = await resourceFor(ref.apiVersion, ref.kind, signal);
      try {
        return await rest.json<KubeObject>({ path: objectPath(r, ref.namespace, ref.name), what: `get ${named(r, ref)}`, signal });
      } catch (error) {
        if (error instanceof TheseusError && error.code === "not_found") return undefined;
        throw error;
      }
    },
    async create(object, signal) {
      const r = await resourceFor(object.apiVersion, object.kind, signal);
      return rest.json<KubeObject>({ method: "POST", path: objectPath(r, object.metadata.namespace), body: object, what: `create ${named(r, object.metadata)}`, signal });
    },
    async mergePatch(ref, patch, signal) {
      const r = await resourceFor(ref.apiVersion, ref.kind, signal);
      return rest.json<KubeObject>({
        method: "PATCH",
        path: objectPath(r, ref.namespace, ref.name),
        body: patch,
        contentType: "application/merge-patch+json",
        what: `patch ${named(r, ref)}`,
        signal,
      });
    },
    async delete(ref, signal) {
      const r = await resourceFor(ref.apiVersion, ref.kind, signal);
      try {
        await rest.json<unknown>({
          method: "DELETE",
          path: objectPath(r, ref.namespace, ref.name),
          body: { kind: "DeleteOptions", apiVersion: "v1", propagationPolicy: "Background" },
          what: `delete ${named(r, ref)}`,
          signal,
        });
        return true;
      } catch (error) {
        if (error instanceof TheseusError && error.code === "not_found") return false;
        throw error;
      }
    },
  };
}
