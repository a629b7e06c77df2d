// Shared by the local-clusters tests: a private THESEUS_HOME per test file, start-up that fails loudly (naming the
// build script) when the control-plane binaries are missing, and polling helpers.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TheseusError, describeError, sleep } from "../common/index.js";

/** Points THESEUS_HOME at a fresh temp dir, so tests never touch the developer's own clusters. */
export function privateTheseusHome(): string {
  const home = mkdtempSync(join(tmpdir(), "theseus-lc-test-"));
  process.env["THESEUS_HOME"] = home;
  return home;
}

/** Re-throws with the hint in the message, so that ava shows what to do (e.g. run the build script). */
export function withHint(error: unknown): Error {
  const e = TheseusError.from(error);
  return new Error(`${e.message}${e.hint === undefined ? "" : `\nwhat to do: ${e.hint}`}`, { cause: error });
}

export async function eventually<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last === undefined ? "" : `: ${describeError(last)}`}`);
    await sleep(300);
  }
}
