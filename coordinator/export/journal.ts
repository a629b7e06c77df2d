// The import's small journal, THESEUS_HOME/imports/<id>.json, rewritten atomically at each step: an interrupted import
// (Ctrl-C, a crash, an agent gone) is resumed by running the same command (the id is derived from the archive, the
// target and the namespace, staging is idempotent, and volumes already verified are not restored again) or undone
// with --undo. A finished import is kept as done, so that a re-run never empties the volumes of a running app.
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { TheseusError } from "../../common/index.js";

export type ImportPhase = "planned" | "staged" | "restored" | "done";

export interface ImportJournal {
  readonly id: string;
  readonly archive: string;
  readonly target: string;
  readonly namespace: string;
  readonly phase: ImportPhase;
  /** Staged claim name -> the target agent's volume reference. */
  readonly volumes: Readonly<Record<string, string>>;
  /** Claims restored and verified. */
  readonly restored: readonly string[];
  readonly updatedAt: string;
}

export function importsDir(home = process.env["THESEUS_HOME"] ?? join(homedir(), ".theseus")): string {
  return join(home, "imports");
}

export async function readJournal(id: string, dir = importsDir()): Promise<ImportJournal | undefined> {
  let text: string;
  try {
    text = await readFile(join(dir, `${id}.json`), "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw TheseusError.from(error);
  }
  try {
    return JSON.parse(text) as ImportJournal;
  } catch (error) {
    throw new TheseusError("data_loss", `the import journal ${join(dir, `${id}.json`)} is damaged`, { cause: error, hint: "undo the import with --undo, or delete the file" });
  }
}

export async function writeJournal(journal: Omit<ImportJournal, "updatedAt">, dir = importsDir()): Promise<ImportJournal> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const full = { ...journal, updatedAt: new Date().toISOString() };
  const path = join(dir, `${journal.id}.json`);
  await writeFile(`${path}.tmp`, `${JSON.stringify(full, null, 2)}\n`, { mode: 0o600 });
  await rename(`${path}.tmp`, path);
  return full;
}

export async function removeJournal(id: string, dir = importsDir()): Promise<void> {
  await rm(join(dir, `${id}.json`), { force: true });
}
