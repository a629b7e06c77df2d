// Plain-JSON helpers for objects whose kinds are not typed (types.ts says why): narrowing, deep copies, pointers.

export type JsonMap = Record<string, unknown>;

export function isMap(value: unknown): value is JsonMap {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The map at `key` of `parent`, or undefined when it is absent or not a map. */
export function mapAt(parent: unknown, ...keys: string[]): JsonMap | undefined {
  let node: unknown = parent;
  for (const key of keys) {
    if (!isMap(node)) return undefined;
    node = node[key];
  }
  return isMap(node) ? node : undefined;
}

export function listAt(parent: unknown, key: string): unknown[] {
  const value = isMap(parent) ? parent[key] : undefined;
  return Array.isArray(value) ? value : [];
}

export function stringAt(parent: unknown, key: string): string | undefined {
  const value = isMap(parent) ? parent[key] : undefined;
  return typeof value === "string" ? value : undefined;
}

export function numberAt(parent: unknown, key: string): number | undefined {
  const value = isMap(parent) ? parent[key] : undefined;
  return typeof value === "number" ? value : undefined;
}

/**
 * A deep copy through JSON: objects are JSON anyway, and unlike structuredClone this never carries shared references
 * over (one labels map under both metadata and a selector, as code that builds objects can make), which a patch
 * of one would otherwise change in both.
 */
export function clone<T>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T;
}

function escapePointer(segment: string): string {
  return segment.replaceAll("~", "~0").replaceAll("/", "~1");
}

export function pointer(segments: readonly (string | number)[]): string {
  return segments.map((s) => "/" + escapePointer(String(s))).join("");
}

/** The value at an RFC 6901 pointer, or undefined. */
export function valueAtPointer(root: unknown, path: string): unknown {
  if (path === "") return root;
  if (!path.startsWith("/")) return undefined;
  let node: unknown = root;
  for (const raw of path.slice(1).split("/")) {
    const key = raw.replaceAll("~1", "/").replaceAll("~0", "~");
    if (Array.isArray(node)) node = node[Number(key)];
    else if (isMap(node)) node = node[key];
    else return undefined;
  }
  return node;
}

/** Removes `key` from the map and the map itself from its parent when that leaves it empty (labels, annotations). */
export function deleteKey(parent: JsonMap, mapKey: string, key: string): void {
  const map = mapAt(parent, mapKey);
  if (map === undefined || !(key in map)) return;
  delete map[key];
  if (Object.keys(map).length === 0) delete parent[mapKey];
}

export function isDeepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x, i) => isDeepEqual(x, b[i]));
  }
  if (!isMap(a) || !isMap(b)) return false;
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((k) => k in b && isDeepEqual(a[k], b[k]));
}
