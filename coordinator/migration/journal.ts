// The durable journal of one migration: append-only JSON lines under THESEUS_HOME/migrations/<id>/journal.jsonl,
// each record fsync'd before the caller acts on it, so that a coordinator killed at any instant finds on restart
// every decision it had started to carry out. Other processes (`theseus cutover ID`, `abort ID`) append requests to
// the same file; O_APPEND keeps small lines whole, and the driver polls for them.
import { mkdir, open, readFile, readdir, stat } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { join } from "node:path";
import type { JsonValue } from "@bufbuild/protobuf";
import { TheseusError, sleep, systemErrorCode } from "../../common/index.js";
import type { AgentTarget } from "../agents/index.js";
import type { PlanInput } from "../plan/index.js";
import type { Transition } from "./phases.js";

/** Everything the migration was asked to do, journaled first: resume needs nothing else (but the TLS identity). */
export interface MigrationSpec {
  readonly id: string;
  readonly from: AgentTarget;
  readonly to: AgentTarget;
  readonly plan: PlanInput;
  readonly mode: "move" | "copy";
  readonly bandwidthBytesPerSecond: number;
  readonly autoCutover: boolean;
  readonly maxDowntimeMs: number;
  readonly cutoverAtMs: number | undefined;
  readonly leaseMs: number;
  readonly quiesceEstimateMs: number;
  readonly startupEstimateMs: number;
  /** How long the target may take to become ready after its Commit (absent in older journals: 5 minutes). */
  readonly readyTimeoutMs?: number;
}

export type JournalNote =
  | { readonly type: "created"; readonly spec: MigrationSpec }
  /** A finished round as the target reported it (RoundStats in protobuf JSON); `final` for the cutover's round. */
  | { readonly type: "round"; readonly volume: string; readonly final: boolean; readonly round: JsonValue }
  | { readonly type: "request"; readonly request: "cutover" }
  | { readonly type: "request"; readonly request: "abort"; readonly reason: string }
  | { readonly type: "rate"; readonly bytesPerSecond: number };

export type JournalRecord = { readonly atMs: number } & (Transition | JournalNote);

export interface Journal {
  readonly id: string;
  readonly path: string;
  /** Appends one record and fsyncs it; resolves only when it is on disk. */
  append(record: Transition | JournalNote): Promise<JournalRecord>;
  close(): Promise<void>;
}

export function migrationsDir(home: string): string {
  return join(home, "migrations");
}

export function journalPath(home: string, id: string): string {
  return join(migrationsDir(home), id, "journal.jsonl");
}

/** Opens (creating when absent) the journal of a migration for appending. */
export async function openJournal(home: string, id: string): Promise<Journal> {
  const dir = join(migrationsDir(home), id);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const path = journalPath(home, id);
  const handle = await open(path, "a", 0o600);
  // The directory entry must be durable too, or a crash right after creation loses the whole file.
  await syncDirectory(dir);
  let tail: Promise<unknown> = Promise.resolve();
  return {
    id,
    path,
    append(entry) {
      const record = { atMs: Date.now(), ...entry } as JournalRecord;
      const written = tail.then(() => writeDurably(handle, record));
      tail = written.catch(() => undefined);
      return written.then(() => record);
    },
    async close() {
      await tail;
      await handle.close();
    },
  };
}

async function writeDurably(handle: FileHandle, record: JournalRecord): Promise<void> {
  await handle.write(`${JSON.stringify(record)}\n`);
  await handle.sync();
}

async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Appends one record from outside the driver (a request to it, a new rate, the finish), durably. */
export async function appendToJournal(home: string, id: string, entry: Transition | JournalNote): Promise<void> {
  await readJournal(home, id); // refuses an unknown id before creating anything
  const journal = await openJournal(home, id);
  try {
    await journal.append(entry);
  } finally {
    await journal.close();
  }
}

/** Every record of a migration's journal, in order. */
export async function readJournal(home: string, id: string): Promise<JournalRecord[]> {
  return (await readJournalFrom(home, id, 0)).records;
}

/**
 * The records from a byte offset on, and the offset after the last whole line. A last line without its newline is
 * a write the crash interrupted: it was never acknowledged, so it is left for the next read, not an error.
 */
export async function readJournalFrom(home: string, id: string, offset: number): Promise<{ records: JournalRecord[]; offset: number }> {
  const path = journalPath(home, id);
  let text: Buffer;
  try {
    text = await readFile(path);
  } catch (error) {
    if (systemErrorCode(error) === "ENOENT") {
      throw new TheseusError("not_found", `no migration ${id} in ${migrationsDir(home)}`, { hint: "list the migrations with `theseus list` (is THESEUS_HOME the same?)" });
    }
    throw TheseusError.from(error);
  }
  const end = text.lastIndexOf(0x0a) + 1;
  if (end <= offset) return { records: [], offset };
  const records = text
    .subarray(offset, end)
    .toString("utf8")
    .split("\n")
    .filter((line) => line !== "")
    .map((line, index) => parseRecord(line, path, index));
  return { records, offset: end };
}

function parseRecord(line: string, path: string, index: number): JournalRecord {
  try {
    const value: unknown = JSON.parse(line);
    if (typeof value === "object" && value !== null && "type" in value && "atMs" in value) return value as JournalRecord;
  } catch {
    // reported below
  }
  throw new TheseusError("data_loss", `the journal ${path} has a damaged record (the ${index + 1}. new one)`, {
    hint: "the file was edited or the disk damaged it; the agents' own records still hold each participant's state (theseus status ID)",
  });
}

/** Follows a journal: the new records as they are appended, polled, until the signal fires. */
export async function* followJournal(home: string, id: string, fromOffset: number, pollMs: number, signal: AbortSignal): AsyncGenerator<JournalRecord> {
  let offset = fromOffset;
  while (!signal.aborted) {
    const { size } = await stat(journalPath(home, id));
    if (size > offset) {
      const next = await readJournalFrom(home, id, offset);
      offset = next.offset;
      yield* next.records;
    }
    try {
      await sleep(pollMs, signal);
    } catch {
      return;
    }
  }
}

/** The ids of every journaled migration, oldest first. */
export async function listMigrationIds(home: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(migrationsDir(home));
  } catch (error) {
    if (systemErrorCode(error) === "ENOENT") return [];
    throw TheseusError.from(error);
  }
  const withTimes = await Promise.all(
    names.map(async (name) => {
      try {
        return { name, atMs: (await stat(journalPath(home, name))).birthtimeMs };
      } catch {
        return undefined;
      }
    }),
  );
  return withTimes.filter((e) => e !== undefined).sort((a, b) => a.atMs - b.atMs).map((e) => e.name);
}
