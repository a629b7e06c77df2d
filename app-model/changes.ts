// Every change the plan makes is recorded by diffing each step's input and output, so that no step can change an
// object without saying so, and rendered as one readable line for the plan's text diff.
import type { Change, KubeObject } from "./types.js";
import { isDeepEqual, isMap, pointer } from "./json.js";

/** The changes between two versions of an object, attributed to `why`. Arrays of changed length are replaced whole. */
export function diffObjects(before: KubeObject, after: KubeObject, why: string): Change[] {
  const changes: Change[] = [];
  walk(before, after, [], changes, why);
  return before.kind === "Secret" || after.kind === "Secret" ? changes.map(redactSecret) : changes;
}

function walk(a: unknown, b: unknown, path: (string | number)[], out: Change[], why: string): void {
  if (isDeepEqual(a, b)) return;
  if (isMap(a) && isMap(b)) {
    for (const key of Object.keys(a)) {
      if (key in b) walk(a[key], b[key], [...path, key], out, why);
      else if (isKeyed(path, key)) walk(a[key], {}, [...path, key], out, why);
      else out.push({ path: pointer([...path, key]), op: "remove", before: a[key], why });
    }
    for (const key of Object.keys(b)) {
      if (key in a) continue;
      if (isKeyed(path, key)) walk({}, b[key], [...path, key], out, why);
      else out.push({ path: pointer([...path, key]), op: "add", after: b[key], why });
    }
    return;
  }
  if (Array.isArray(a) && Array.isArray(b) && a.length === b.length) {
    a.forEach((x, i) => walk(x, b[i], [...path, i], out, why));
    return;
  }
  out.push({ path: pointer(path), op: "replace", before: a, after: b, why });
}

/** Labels and annotations are told key by key, even when the last one goes and the map with it. */
function isKeyed(path: readonly (string | number)[], key: string): boolean {
  return path.length === 1 && path[0] === "metadata" && (key === "labels" || key === "annotations");
}

// A plan is printed and saved: a Secret's values (and its last-applied copy of them) never appear in it.
const SECRET_PATHS = /^\/(data|stringData)(\/|$)|^\/metadata\/annotations\/kubectl\.kubernetes\.io~1last-applied-configuration$/;

function redactSecret(change: Change): Change {
  if (!SECRET_PATHS.test(change.path)) return change;
  const redacted: { -readonly [K in keyof Change]: Change[K] } = { ...change };
  if ("before" in change) redacted.before = "(secret)";
  if ("after" in change) redacted.after = "(secret)";
  return redacted;
}

const MAX_VALUE_CHARS = 80;

/** `~ /spec/replicas: 3 → 0 (replicas)`, `- /metadata/uid: "…" (sanitise)`, `+ /metadata/labels/x: "y" (rules.yaml:4)`. */
export function describeChange(change: Change): string {
  const sign = change.op === "add" ? "+" : change.op === "remove" ? "-" : "~";
  const value =
    change.op === "add"
      ? show(change.after)
      : change.op === "remove"
        ? show(change.before)
        : `${show(change.before)} → ${show(change.after)}`;
  return `${sign} ${change.path === "" ? "/" : change.path}: ${value} (${change.why})`;
}

function show(value: unknown): string {
  const text = value === undefined ? "(none)" : JSON.stringify(value);
  return text.length > MAX_VALUE_CHARS ? `${text.slice(0, MAX_VALUE_CHARS - 1)}…` : text;
}
