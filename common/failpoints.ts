// Named failpoints at every step boundary of a migration, as etcd's gofail does: inert unless the process was started
// with THESEUS_FAILPOINTS naming them, so that a test can crash, hang or fail any one step of the real code path by
// setting an environment variable on the child process, and nothing else changes in production.
//
//   THESEUS_FAILPOINTS="source.commit.before-ack=crash,target.final-round.after=error"
//
// crash exits at once without cleanup (as kill -9 would: no finally blocks, no flushing); hang never resolves, so the
// step stays in flight until the process dies; error throws TheseusError("internal").
import { TheseusError } from "./errors.js";

export type FailpointAction = "crash" | "hang" | "error";

const ACTIONS: readonly FailpointAction[] = ["crash", "hang", "error"];

/** The exit status of a crash failpoint: what a shell reports for a process killed by SIGKILL. */
export const FAILPOINT_CRASH_EXIT_CODE = 137;

const registry = new Map<string, string>();

/**
 * Registers a component's failpoint names so that allFailpoints() can list every one (issue 9's crash matrix walks
 * them all). Returns the names, so a component can keep them as a typed constant.
 */
export function defineFailpoints<const N extends string>(component: string, names: readonly N[]): readonly N[] {
  for (const name of names) registry.set(name, component);
  return names;
}

/** Every registered failpoint with the component that defined it, sorted by name. */
export function allFailpoints(): readonly { readonly name: string; readonly component: string }[] {
  return [...registry].map(([name, component]) => ({ name, component })).sort((a, b) => a.name.localeCompare(b.name));
}

/** Parses a THESEUS_FAILPOINTS value; a malformed entry throws, so that a test's typo never passes as "inert". */
export function parseFailpoints(value: string | undefined): ReadonlyMap<string, FailpointAction> {
  const parsed = new Map<string, FailpointAction>();
  for (const entry of (value ?? "").split(",")) {
    const trimmed = entry.trim();
    if (trimmed === "") continue;
    const eq = trimmed.indexOf("=");
    const name = eq < 0 ? "" : trimmed.slice(0, eq).trim();
    const action = eq < 0 ? "" : trimmed.slice(eq + 1).trim();
    if (name === "" || !isAction(action)) {
      throw new TheseusError("invalid_argument", `THESEUS_FAILPOINTS entry "${trimmed}" is not NAME=crash|hang|error`, {
        hint: "separate entries with commas, e.g. source.commit.before-ack=crash,target.final-round.after=error",
      });
    }
    parsed.set(name, action);
  }
  return parsed;
}

function isAction(value: string): value is FailpointAction {
  return (ACTIONS as readonly string[]).includes(value);
}

// Read once: the environment is the child process's configuration, fixed when it starts.
let enabled: ReadonlyMap<string, FailpointAction> | undefined;

function enabledFailpoints(): ReadonlyMap<string, FailpointAction> {
  enabled ??= parseFailpoints(process.env["THESEUS_FAILPOINTS"]);
  return enabled;
}

/** Passes at once unless THESEUS_FAILPOINTS names this failpoint; then crashes, hangs or throws as it says. */
export async function failpoint(name: string): Promise<void> {
  const action = enabledFailpoints().get(name);
  if (action === undefined) return;
  switch (action) {
    case "crash":
      process.exit(FAILPOINT_CRASH_EXIT_CODE);
      break;
    case "hang":
      // A bare pending promise would let an otherwise idle process exit; a referenced timer keeps it (and the step)
      // alive until something kills it.
      await new Promise<never>(() => setInterval(() => undefined, 60_000));
      break;
    case "error":
      throw new TheseusError("internal", `failpoint ${name}`, { hint: "THESEUS_FAILPOINTS enabled it; unset it to run normally" });
  }
}
