// The migration as the CLI and the demo call it: start, resume, and the operations on a journaled migration that do
// not need its driver (status, list, set-bandwidth, finish) or ask it (cutover, abort).
import { toJson } from "@bufbuild/protobuf";
import type { JsonValue } from "@bufbuild/protobuf";
import { TheseusError, createChannel, silentLogger, sleep } from "../../common/index.js";
import type { Logger } from "../../common/index.js";
import { RoundStatsSchema } from "../../proto/gen/theseus/v1/agent_pb.js";
import { ParticipantStatusSchema } from "../../proto/gen/theseus/v1/migration_pb.js";
import type { ParticipantStatus } from "../../proto/gen/theseus/v1/migration_pb.js";
import type { TlsMaterial } from "../../rpc/index.js";
import { acquireDriverLock, liveDriver } from "./driver-lock.js";
import { startDriver } from "./driver.js";
import type { MigrationEvent, MigrationHandle } from "./driver.js";
import { appendToJournal, followJournal, listMigrationIds, openJournal, readJournal, readJournalFrom } from "./journal.js";
import type { MigrationSpec } from "./journal.js";
import { migrationSpec } from "./options.js";
import type { MigrateOptions } from "./options.js";
import { isEnded, resumeAction, transition } from "./phases.js";
import type { MigrationState, Phase } from "./phases.js";
import { dialParticipant } from "./participants.js";
import type { ParticipantClient } from "./participants.js";
import { replay } from "./replay.js";
import type { MigrationView, TimelineEntry } from "./replay.js";

export type ResumeOptions = Pick<MigrateOptions, "tls" | "home" | "signal" | "logger">;

/** Journals a new migration's spec without driving it (for `--detach`, whose background process resumes it). */
export async function createMigration(options: MigrateOptions): Promise<MigrationSpec> {
  const spec = migrationSpec(options);
  const exists = await readJournal(options.home, spec.id).then(
    () => true,
    (error: unknown) => {
      if (TheseusError.from(error).code === "not_found") return false;
      throw error;
    },
  );
  if (exists) {
    throw new TheseusError("already_exists", `migration ${spec.id} exists already`, { hint: `follow it with \`theseus status ${spec.id} -w\`, or resume it with \`theseus resume ${spec.id}\`` });
  }
  const journal = await openJournal(options.home, spec.id);
  try {
    await journal.append({ type: "created", spec });
  } finally {
    await journal.close();
  }
  return spec;
}

export async function startMigration(options: MigrateOptions): Promise<MigrationHandle> {
  const spec = await createMigration(options);
  return resumeMigration(spec.id, options);
}

/**
 * Drives a journaled migration from where its journal stands. A cutover interrupted before its decision is aborted
 * (the decision to abort journaled first); one interrupted after it rolls forward; anything earlier carries on.
 */
export async function resumeMigration(id: string, options: ResumeOptions): Promise<MigrationHandle> {
  await readJournal(options.home, id); // an unknown id says so before any lock is taken
  const lock = await acquireDriverLock(options.home, id);
  try {
    const journal = await openJournal(options.home, id);
    const { records } = await readJournalFrom(options.home, id, 0);
    let view = replay(records);
    if (resumeAction(view.state) === "abort" && view.state.phase !== "aborting") {
      const decided = await journal.append({ type: "abort-decided", reason: `the coordinator stopped during the cutover (phase ${view.state.phase}), before its decision; resumed by aborting` });
      view = replay([...records, decided]);
    }
    const { offset } = await readJournalFrom(options.home, id, 0);
    return startDriver({
      journal,
      lock,
      view,
      journalOffset: offset,
      tls: options.tls,
      home: options.home,
      signal: options.signal,
      logger: options.logger ?? silentLogger(),
    });
  } catch (error) {
    await lock.release();
    throw error;
  }
}

export async function readMigration(home: string, id: string): Promise<MigrationView> {
  return replay(await readJournal(home, id));
}

export interface MigrationSummary {
  readonly id: string;
  readonly phase: Phase;
  readonly from: string;
  readonly to: string;
  readonly namespace: string;
  readonly mode: "move" | "copy";
  readonly createdAtMs: number;
  readonly updatedAtMs: number;
  readonly reason?: string;
  /** The pid of the process driving it now, if any. */
  readonly driverPid?: number;
}

export async function listMigrations(home: string): Promise<MigrationSummary[]> {
  const summaries: MigrationSummary[] = [];
  for (const id of await listMigrationIds(home)) {
    let view: MigrationView;
    try {
      view = await readMigration(home, id);
    } catch {
      continue; // a directory without a readable journal is not a migration
    }
    summaries.push(await summary(home, view));
  }
  return summaries.sort((a, b) => a.createdAtMs - b.createdAtMs);
}

async function summary(home: string, view: MigrationView): Promise<MigrationSummary> {
  const pid = await liveDriver(home, view.spec.id);
  const state = view.state;
  return {
    id: view.spec.id,
    phase: state.phase,
    from: view.spec.from.name,
    to: view.spec.to.name,
    namespace: view.spec.plan.namespace ?? "",
    mode: view.spec.mode,
    createdAtMs: view.createdAtMs,
    updatedAtMs: view.updatedAtMs,
    ...(state.phase === "aborting" || state.phase === "aborted" ? { reason: state.reason } : {}),
    ...(pid === undefined ? {} : { driverPid: pid }),
  };
}

/** A migration as `theseus status ID -o json` prints it: the journal's view and, when reachable, each participant's. */
export interface MigrationStatusReport extends MigrationSummary {
  readonly timeline: readonly TimelineEntry[];
  readonly rounds: readonly { readonly volume: string; readonly final: boolean; readonly round: JsonValue }[];
  readonly bandwidthBytesPerSecond: number;
  readonly predictedDowntimeMs?: number;
  readonly measuredDowntimeMs?: number;
  readonly participants: {
    readonly source: ParticipantReport;
    readonly target: ParticipantReport;
  };
}

export type ParticipantReport = { readonly status: JsonValue } | { readonly unreachable: string };

export async function migrationStatus(id: string, options: { readonly home: string; readonly tls: TlsMaterial; readonly signal?: AbortSignal }): Promise<MigrationStatusReport> {
  const view = await readMigration(options.home, id);
  const ask = async (client: ParticipantClient): Promise<ParticipantReport> => {
    try {
      const status = await client.getStatus({ migrationId: id }, { timeoutMs: 5_000, ...(options.signal === undefined ? {} : { signal: options.signal }) });
      return { status: toJson(ParticipantStatusSchema, status) };
    } catch (error) {
      return { unreachable: TheseusError.from(error).message };
    } finally {
      client.close();
    }
  };
  const [source, target] = await Promise.all([ask(dialParticipant(view.spec.from, options.tls)), ask(dialParticipant(view.spec.to, options.tls))]);
  return {
    ...(await summary(options.home, view)),
    timeline: view.timeline,
    rounds: view.rounds.map((r) => ({ volume: r.volume, final: r.final, round: toJson(RoundStatsSchema, r.round) })),
    bandwidthBytesPerSecond: view.bandwidthBytesPerSecond,
    ...(view.predictedDowntimeMs === undefined ? {} : { predictedDowntimeMs: view.predictedDowntimeMs }),
    ...(view.measuredDowntimeMs === undefined ? {} : { measuredDowntimeMs: view.measuredDowntimeMs }),
    participants: { source, target },
  };
}

/** The target's status stream for `theseus status ID -w`, ending when the signal fires or the stream does. */
export async function* watchTarget(id: string, options: { readonly home: string; readonly tls: TlsMaterial; readonly signal: AbortSignal }): AsyncGenerator<ParticipantStatus> {
  const view = await readMigration(options.home, id);
  const target = dialParticipant(view.spec.to, options.tls);
  try {
    yield* target.watch({ migrationId: id }, { signal: options.signal });
  } finally {
    target.close();
  }
}

/**
 * A migration as another process drives it, for `theseus status ID -w`: its phases and rounds from the journal, the
 * running rounds' progress from the target; ends when the journal reaches an end (or the signal fires).
 */
export async function* followMigration(id: string, options: { readonly home: string; readonly tls: TlsMaterial; readonly signal: AbortSignal }): AsyncGenerator<MigrationEvent> {
  const { records, offset } = await readJournalFrom(options.home, id, 0);
  let view = replay(records);
  yield { type: "phase", phase: view.state.phase, atMs: view.updatedAtMs };
  if (isEnded(view.state)) return;
  const stop = new AbortController();
  const signal = AbortSignal.any([stop.signal, options.signal]);
  const queue = createChannel<MigrationEvent>();
  const target = dialParticipant(view.spec.to, options.tls);
  void (async () => {
    try {
      for await (const record of followJournal(options.home, id, offset, FOLLOW_POLL_MS, signal)) {
        records.push(record);
        const before = view.state.phase;
        view = replay(records);
        if (record.type === "round") {
          const round = view.rounds.at(-1);
          if (round !== undefined) queue.push({ type: "round", volume: round.volume, round: round.round });
        }
        if (view.state.phase !== before) queue.push({ type: "phase", phase: view.state.phase, atMs: record.atMs });
        const state: MigrationState = view.state;
        if (state.phase === "aborting" && before !== "aborting") queue.push({ type: "message", text: `aborting: ${state.reason}` });
        if (isEnded(view.state)) break;
      }
      queue.close();
    } catch (error) {
      queue.fail(error);
    }
  })();
  void (async () => {
    while (!signal.aborted) {
      try {
        for await (const status of target.watch({ migrationId: id }, { signal })) {
          for (const v of status.volumes) {
            if (v.roundRunning && v.progress !== undefined) queue.push({ type: "progress", volume: v.sourceVolume, progress: v.progress, usedBytes: Number(v.usedBytes) });
          }
        }
      } catch {
        // The target restarting, or not begun yet: the journal still tells the story; try again shortly.
      }
      await sleep(FOLLOW_POLL_MS * 4, signal).catch(() => undefined);
    }
  })();
  try {
    yield* queue;
  } finally {
    stop.abort();
    target.close();
  }
}

const FOLLOW_POLL_MS = 250;

/**
 * Asks for a cutover or an abort. With a live driver the request is journaled for it to act on (returns its pid);
 * without one this process resumes the migration and asks its own driver (returns the handle to follow).
 */
export async function requestMigration(
  id: string,
  request: { readonly request: "cutover" } | { readonly request: "abort"; readonly reason: string },
  options: ResumeOptions,
): Promise<{ readonly driverPid: number } | { readonly handle: MigrationHandle } | { readonly alreadyAborted: string }> {
  const view = await readMigration(options.home, id);
  // Asking again for what has happened is not an error: an abort retried after it ended says so, and succeeds.
  if (request.request === "abort" && view.state.phase === "aborted") return { alreadyAborted: view.state.reason };
  refuseEnded(view, request.request);
  const pid = await liveDriver(options.home, id);
  if (pid !== undefined && pid !== process.pid) {
    await appendToJournal(options.home, id, { type: "request", ...request });
    return { driverPid: pid };
  }
  const handle = await resumeMigration(id, options);
  if (request.request === "cutover") await handle.cutover();
  else await handle.abort(request.reason);
  return { handle };
}

function refuseEnded(view: MigrationView, what: string): void {
  const phase = view.state.phase;
  if (phase === "committed" || phase === "finished" || phase === "aborted") {
    throw new TheseusError("failed_precondition", `migration ${view.spec.id} is ${phase}: nothing to ${what}`, { hint: `see it with \`theseus status ${view.spec.id}\`` });
  }
}

/** Changes the pre-sync bandwidth: journaled first (a resumed driver keeps it), then set on the target. */
export async function setMigrationRate(id: string, bytesPerSecond: number, options: { readonly home: string; readonly tls: TlsMaterial }): Promise<void> {
  const view = await readMigration(options.home, id);
  refuseEnded(view, "throttle");
  await appendToJournal(options.home, id, { type: "rate", bytesPerSecond });
  const target = dialParticipant(view.spec.to, options.tls);
  try {
    await target.setRate({ migrationId: id, bytesPerSecond: BigInt(bytesPerSecond) }, { timeoutMs: 30_000 });
  } finally {
    target.close();
  }
}

/** Retires a committed move's source (its objects removed) and closes both participants; idempotent. */
export async function finishMigration(id: string, options: { readonly home: string; readonly tls: TlsMaterial; readonly logger?: Logger }): Promise<MigrationView> {
  const view = await readMigration(options.home, id);
  if (view.state.phase === "finished") return view;
  if (view.state.phase !== "committed") {
    throw new TheseusError("failed_precondition", `migration ${id} is ${view.state.phase}, not committed: there is nothing to finish`, {
      hint: view.state.phase === "aborted" ? "an aborted migration leaves the source as it was" : `let it commit first (theseus status ${id} -w)`,
    });
  }
  transition(view.state, { type: "finished" });
  const lock = await acquireDriverLock(options.home, id);
  const source = dialParticipant(view.spec.from, options.tls);
  const target = dialParticipant(view.spec.to, options.tls);
  try {
    await source.finish({ migrationId: id }, { timeoutMs: 120_000 });
    await target.finish({ migrationId: id }, { timeoutMs: 30_000 });
    await appendToJournal(options.home, id, { type: "finished" });
    return await readMigration(options.home, id);
  } finally {
    source.close();
    target.close();
    await lock.release();
  }
}
