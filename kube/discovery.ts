// API discovery: every resource the API server serves, in every served version, core and /apis groups, custom
// resources included, never a hard-coded list (users run 1.25-1.34, the local clusters 1.20). A group version that
// fails (typically an aggregated API whose backend is down) is a warning, not a failure: the rest is still served.
import type { ServedResource } from "../app-model/index.js";
import { describeError } from "../common/index.js";
import { mapConcurrent } from "./pool.js";
import type { KubeRest } from "./rest.js";

const DISCOVERY_CONCURRENCY = 6;

export interface Discovery {
  readonly serverVersion: string;
  readonly resources: readonly ServedResource[];
  /** Group versions that could not be read, with why. */
  readonly warnings: readonly string[];
}

interface ApiResourceList {
  readonly resources: ReadonlyArray<{ readonly name: string; readonly kind: string; readonly namespaced: boolean; readonly verbs?: readonly string[] }>;
}
interface ApiGroupList {
  readonly groups: ReadonlyArray<{
    readonly name: string;
    readonly versions: ReadonlyArray<{ readonly version: string }>;
    readonly preferredVersion?: { readonly version: string };
  }>;
}

export async function discoverResources(rest: KubeRest, signal?: AbortSignal): Promise<Discovery> {
  const [version, core, groups] = await Promise.all([
    rest.json<{ gitVersion?: string }>({ path: "/version", what: "read the API server's version", signal }),
    rest.json<{ versions: readonly string[] }>({ path: "/api", what: "discover the core API", signal }),
    rest.json<ApiGroupList>({ path: "/apis", what: "discover the API groups", signal }),
  ]);
  const wanted = [
    ...core.versions.map((v, i) => ({ group: "", version: v, path: `/api/${v}`, preferred: i === 0 })),
    ...groups.groups.flatMap((g) =>
      g.versions.map((v) => ({ group: g.name, version: v.version, path: `/apis/${g.name}/${v.version}`, preferred: (g.preferredVersion?.version ?? g.versions[0]?.version) === v.version })),
    ),
  ];
  const warnings: string[] = [];
  const lists = await mapConcurrent(wanted, DISCOVERY_CONCURRENCY, async (gv) => {
    try {
      return { gv, list: await rest.json<ApiResourceList>({ path: gv.path, what: `discover ${gv.group === "" ? "" : `${gv.group}/`}${gv.version}`, signal }) };
    } catch (error) {
      if (signal?.aborted === true) throw error;
      warnings.push(`${gv.group === "" ? "" : `${gv.group}/`}${gv.version}: discovery failed: ${describeError(error).split("\n")[0] ?? ""}`);
      return undefined;
    }
  });
  const resources: ServedResource[] = [];
  for (const entry of lists) {
    if (entry === undefined) continue;
    for (const r of entry.list.resources) {
      if (r.name.includes("/")) continue; // subresources (status, scale, log...) are not objects
      resources.push({ group: entry.gv.group, version: entry.gv.version, kind: r.kind, resource: r.name, namespaced: r.namespaced, verbs: r.verbs ?? [], preferred: entry.gv.preferred });
    }
  }
  return { serverVersion: version.gitVersion ?? "", resources, warnings: warnings.sort() };
}

export function apiVersionOf(resource: Pick<ServedResource, "group" | "version">): string {
  return resource.group === "" ? resource.version : `${resource.group}/${resource.version}`;
}

/** "deployments.apps", "pods": how kubectl and RBAC name a resource. */
export function groupResourceOf(resource: Pick<ServedResource, "group" | "resource">): string {
  return resource.group === "" ? resource.resource : `${resource.resource}.${resource.group}`;
}
