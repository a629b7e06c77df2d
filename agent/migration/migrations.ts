// The agent's participants, one per migration id: what each MigrationService call does, the target's background
// pre-sync, the source's lease watchdog, and resumption after a restart. Every state change is a transition
// (state.ts) written by compare-and-swap (store.ts) before or after its side effect, so that a retried call, a restarted
// agent and a racing watchdog all find the truth in the cluster, not in this process's memory.
//
// Long steps (Quiesce, FinalRound, Commit, Abort) run once per participant at a time: a retried call joins the step in
// flight instead of starting another, and a call cancelled by its coordinator leaves the step to finish (each is
// idempotent, and the coordinator's retry finds the answer). Abort and shutdown cancel the steps and the rounds in
// flight and wait for them, so a round's checkpoint is written before the process exits.
import { statfs } from "node:fs/promises";
import { create, fromJson, toJson } from "@bufbuild/protobuf";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { TheseusError, abortReason, anySignal, failpoint, sleep } from "../../common/index.js";
import type { Logger } from "../../common/index.js";
import type { TlsMaterial } from "../../rpc/index.js";
import { validateIdentityName } from "../../rpc/index.js";
import { RoundStatsSchema } from "../../proto/gen/theseus/v1/agent_pb.js";
import type { RoundStats } from "../../proto/gen/theseus/v1/agent_pb.js";
import { Mode, ParticipantStatusSchema, Role, VolumeStatusSchema } from "../../proto/gen/theseus/v1/migration_pb.js";
import type { BeginRequest, ParticipantStatus, VolumePairSchema, VolumeStatus } from "../../proto/gen/theseus/v1/migration_pb.js";
import { LABEL_MIGRATION, activateApp, quiesceApp, requireCluster, retireApp, unquiesceApp, unstageApp, validateMigrationId, validateNamespace } from "../cluster/index.js";
import type { ClusterAccess, MoverEndpoint } from "../cluster/index.js";
import type { SessionRegistry } from "./sessions.js";
import type { RoundProgress, SyncSources } from "../sync/index.js";
import { MIGRATION_FAILPOINTS as FP } from "./failpoints.js";
import { moverFreeBytes, pullRound, pullRoundThroughMover, roundStatsOf } from "./rounds.js";
import { END_PHASES, LEASED_PHASES, PRESYNC_PHASES, transition } from "./state.js";
import type { Failure, ParticipantEvent, ParticipantState, QuiescedObject } from "./state.js";
import { ROUNDS_KEPT, createParticipantStore } from "./store.js";
import { firstWriteSince } from "./volume-writes.js";
import type { ParticipantRecord, ParticipantStore, StoredRecord, VolumeRecord } from "./store.js";

/** How the participant reaches a volume's files (the agent's VolumeRegistry: static names and claims). */
export interface VolumeRoots {
  root(name: string, signal?: AbortSignal): Promise<string>;
  /**
   * The volume for one round: its directory, or a mover pod; with `keepFor` (a migration id) the migration's, shared
   * by its rounds until `endMigration`, else started for this round and deleted by `release`.
   */
  open?(name: string, signal?: AbortSignal, labels?: Readonly<Record<string, string>>, keepFor?: string): Promise<
    | { readonly kind: "direct"; readonly root: string; release(): Promise<void> }
    | { readonly kind: "mover"; readonly mover: MoverEndpoint; readonly lost: AbortSignal; release(): Promise<void> }
  >;
  /** Whether the volume can be reached, without starting a mover. */
  check?(name: string, signal?: AbortSignal): Promise<void>;
  /** True for a claim behind a mover pod (no directory on this machine). */
  isMover?(name: string, signal?: AbortSignal): Promise<boolean>;
  /** A mover-backed source volume's limit: its next relayed round runs at most this fast. */
  setMoverBandwidth?(name: string, bytesPerSecond: number): void;
  /** Deletes the movers a migration kept (`open`'s keepFor); untilGone waits until the API server has none left. */
  endMigration?(migrationId: string, options?: { untilGone?: boolean; signal?: AbortSignal }): Promise<void>;
  /** Undoes an earlier endMigration of the id (which refuses the ended migration's late rounds a mover). */
  beginMigration?(migrationId: string): void;
}

export interface MigrationsOptions {
  readonly clusterName: string;
  readonly cluster: ClusterAccess | undefined;
  /** Where the records live in the agent's cluster. */
  readonly namespace: string;
  readonly volumes: VolumeRoots;
  readonly sessions: SessionRegistry;
  readonly syncSources: SyncSources;
  readonly tls: TlsMaterial;
  readonly stateDir: string;
  readonly logger: Logger;
  /** Quiesce, activation and unstage when a call says 0. */
  readonly defaultTimeoutMs: number;
  /** Background rounds of one volume start at least this far apart, so an idle volume is not rescanned flat out. */
  readonly minRoundIntervalMs: number;
  /** After a failed background round, before the next. */
  readonly retryDelayMs: number;
}

export interface Migrations {
  begin(request: BeginRequest, signal: AbortSignal): Promise<{ volumes: MessageInitShape<typeof VolumePairSchema>[]; status: ParticipantStatus }>;
  status(id: string, signal: AbortSignal): Promise<ParticipantStatus>;
  watch(id: string, signal: AbortSignal): AsyncGenerator<ParticipantStatus>;
  list(signal: AbortSignal): Promise<ParticipantStatus[]>;
  setRate(id: string, bytesPerSecond: number, signal: AbortSignal): Promise<void>;
  prepare(id: string, signal: AbortSignal): Promise<{ yes: boolean; reason: string }>;
  quiesce(id: string, timeoutMs: number, signal: AbortSignal): Promise<{ durationMs: number; changed: readonly QuiescedObject[] }>;
  finalRound(id: string, signal: AbortSignal): Promise<{ volumes: VolumeStatus[]; durationMs: number }>;
  commit(id: string, timeoutMs: number, signal: AbortSignal): Promise<ParticipantStatus>;
  /** rollback: past the commit point, after a target failed to become ready (see ParticipantEvent "abort"). */
  abort(id: string, reason: string, signal: AbortSignal, rollback?: boolean): Promise<ParticipantStatus>;
  renew(id: string, leaseSeconds: number, signal: AbortSignal): Promise<number>;
  finish(id: string, signal: AbortSignal): Promise<ParticipantStatus>;
  /** Picks up every migration persisted in the cluster: a presyncing target's rounds, a quiesced source's watchdog. */
  resume(signal?: AbortSignal): Promise<void>;
  /** Cancels the rounds and steps in flight and waits for them; the records stay for the next start. */
  close(): Promise<void>;
}

/** A session outlives any one round: it is closed when its migration ends, not by a timer. */
const SESSION_TTL_MS = 30 * 24 * 3600 * 1000;
const DEFAULT_LEASE_SECONDS = 30;

interface VolumeLive {
  running: boolean;
  progress: RoundProgress | undefined;
  error: Failure | undefined;
}

/** One participant in memory: the record as last read or written, and what runs on its behalf. */
interface Live {
  stored: StoredRecord;
  readonly volumes: VolumeLive[];
  /** Cancels the background rounds (FinalRound, Abort, shutdown). */
  presync: { controller: AbortController; done: Promise<void> } | undefined;
  /** Cancels one round so that it restarts at a new rate. */
  readonly roundControllers: Set<AbortController>;
  /** Steps in flight by name, joined by retries. */
  readonly steps: Map<string, Promise<unknown>>;
  /** Cancels the steps in flight (Abort, shutdown). */
  stepsController: AbortController;
  watchdog: NodeJS.Timeout | undefined;
  leaseExpiresAtMs: number | undefined;
  readonly waiters: Set<() => void>;
}

export function createMigrations(options: MigrationsOptions): Migrations {
  const logger = options.logger.child({ component: "migrations" });
  const lives = new Map<string, Live>();
  let closed = false;
  // The agent serves calls before it has resumed its persisted migrations (its port opens first). A call that loaded
  // a migration lazily meanwhile made resume() skip it, so a target restarted mid pre-sync never pulled a round again
  // and the coordinator watched a migration that stood still (the invariant matrix's target.round.after). Every call
  // that reaches a migration waits for the resume first.
  let resuming: Promise<void> = Promise.resolve();
  /** Resolves once the resume has ended, however it ended (a failed resume is the agent's start failing). */
  const resumed = (signal?: AbortSignal): Promise<void> => {
    const settled = resuming.catch(() => undefined);
    return signal === undefined ? settled : raceSignal(settled, signal);
  };
  let storeInstance: ParticipantStore | undefined;

  const cluster = (): ClusterAccess => requireCluster(options.cluster);
  const store = (): ParticipantStore => (storeInstance ??= createParticipantStore(cluster().objects, options.namespace));
  const log = (live: Live): Logger => logger.child({ migrationId: live.stored.record.id, role: live.stored.record.role });
  const record = (live: Live): ParticipantRecord => live.stored.record;

  const makeLive = (stored: StoredRecord): Live => ({
    stored,
    volumes: stored.record.volumes.map(() => ({ running: false, progress: undefined, error: undefined })),
    presync: undefined,
    roundControllers: new Set(),
    steps: new Map(),
    stepsController: new AbortController(),
    watchdog: undefined,
    leaseExpiresAtMs: undefined,
    waiters: new Set(),
  });

  const notify = (live: Live): void => {
    for (const wake of live.waiters) wake();
    live.waiters.clear();
  };

  const adopt = (live: Live, stored: StoredRecord): void => {
    live.stored = stored;
    notify(live);
  };

  const find = async (id: string, signal?: AbortSignal): Promise<Live> => {
    await resumed(signal);
    const known = lives.get(id);
    if (known !== undefined) return known;
    const stored = await store().get(validateId(id), signal);
    if (stored === undefined) throw new TheseusError("not_found", `this agent (${options.clusterName}) has no participant for migration ${id}`, { hint: "Begin creates it; `theseus list` shows the migrations" });
    // Another call may have loaded it meanwhile.
    const again = lives.get(id);
    if (again !== undefined) return again;
    const live = makeLive(stored);
    lives.set(id, live);
    return live;
  };

  /** Writes a transition by compare-and-swap; a refused event throws, an already applied one changes nothing. */
  const apply = async (live: Live, event: ParticipantEvent, signal?: AbortSignal, extra: Partial<ParticipantRecord> = {}): Promise<ParticipantState> => {
    const stored = await store().update(
      record(live).id,
      (current) => {
        const next = transition(current.role, current.state, event);
        if (!next.ok) throw next.error;
        return next.changed ? { ...current, ...extra, state: next.state, updatedAtMs: Date.now() } : undefined;
      },
      signal,
    );
    adopt(live, stored);
    return stored.record.state;
  };

  /** Runs a step once at a time per participant; the caller's signal only stops the caller from waiting. */
  const step = <T>(live: Live, name: string, run: (signal: AbortSignal) => Promise<T>, callSignal: AbortSignal): Promise<T> => {
    let running = live.steps.get(name) as Promise<T> | undefined;
    if (running === undefined) {
      const promise = run(live.stepsController.signal).finally(() => live.steps.delete(name));
      running = promise;
      live.steps.set(name, promise);
    }
    return raceSignal(running, callSignal);
  };

  // ---------------------------------------------------------------------------------------------------------------
  // The target's background pre-sync.

  const startPresync = (live: Live): void => {
    if (live.presync !== undefined || closed || !PRESYNC_PHASES.has(record(live).state.phase)) return;
    const controller = new AbortController();
    const done = Promise.all(record(live).volumes.map((_, index) => presyncVolume(live, index, controller.signal))).then(() => undefined);
    live.presync = { controller, done };
    log(live).info({ volumes: record(live).volumes.length }, "background pre-sync started");
  };

  const stopPresync = async (live: Live, reason: string): Promise<void> => {
    const presync = live.presync;
    if (presync === undefined) return;
    presync.controller.abort(new TheseusError("cancelled", reason));
    await presync.done;
    live.presync = undefined;
  };

  const presyncVolume = async (live: Live, index: number, signal: AbortSignal): Promise<void> => {
    while (!signal.aborted && PRESYNC_PHASES.has(record(live).state.phase)) {
      const started = Date.now();
      const round = new AbortController();
      live.roundControllers.add(round);
      let restartNow = false;
      try {
        await runRound(live, index, anySignal(signal, round.signal));
        await failpoint(FP.targetRoundAfter);
      } catch (error) {
        if (signal.aborted) return;
        restartNow = round.signal.aborted;
        if (!restartNow) {
          const e = TheseusError.from(error);
          live.volumes[index] = { running: false, progress: undefined, error: { code: e.code, message: e.message } };
          notify(live);
          log(live).warn({ volume: record(live).volumes[index]?.targetVolume, code: e.code, err: e.message }, "background round failed; retrying");
        }
      } finally {
        live.roundControllers.delete(round);
      }
      const waitMs = restartNow ? 0 : Math.max(live.volumes[index]?.error === undefined ? 0 : options.retryDelayMs, options.minRoundIntervalMs - (Date.now() - started));
      if (waitMs > 0) await sleep(waitMs, signal).catch(() => undefined);
    }
  };

  const isMover = async (volume: string, signal?: AbortSignal): Promise<boolean> => options.volumes.isMover !== undefined && (await options.volumes.isMover(volume, signal));
  const checkVolume = async (volume: string, signal: AbortSignal): Promise<void> => {
    if (options.volumes.check !== undefined) await options.volumes.check(volume, signal);
    else await options.volumes.root(volume, signal);
  };
  const setSourceLimit = async (volume: string, bytesPerSecond: number, signal?: AbortSignal): Promise<void> => {
    if (await isMover(volume, signal)) options.volumes.setMoverBandwidth?.(volume, bytesPerSecond);
    else options.syncSources.setBandwidth(volume, await options.volumes.root(volume, signal), bytesPerSecond);
  };

  /** One round of one volume pair, recorded in the participant's record when it completes. */
  const runRound = async (live: Live, index: number, signal: AbortSignal): Promise<RoundStats> => {
    const rec = record(live);
    const pair = rec.volumes[index];
    if (pair === undefined) throw new TheseusError("internal", `migration ${rec.id} has no volume #${index}`);
    const tokens = await store().getTokens(rec.id, signal);
    const token = tokens[pair.sessionId];
    if (token === undefined) throw new TheseusError("failed_precondition", `migration ${rec.id} holds no token for the session of ${pair.sourceVolume}`, { hint: "abort the migration and start it again" });
    // A claim behind a mover uses the migration's mover (labelled with its id): the first round starts it, the later
    // ones find it running, so no pod start-up falls into the final round (the downtime); the migration's end
    // deletes it (endMovers). A mover lost since the last round is replaced here.
    const volume = options.volumes.open === undefined
      ? { kind: "direct" as const, root: await options.volumes.root(pair.targetVolume, signal), release: async () => undefined }
      : await options.volumes.open(pair.targetVolume, signal, { [LABEL_MIGRATION]: rec.id }, rec.id);
    const number = nextRoundNumber(pair);
    const volumeLog = log(live).child({ volume: pair.targetVolume, round: number });
    live.volumes[index] = { running: true, progress: undefined, error: undefined };
    notify(live);
    try {
      const common = {
        sourceAddress: rec.peerAddress,
        sourceCluster: rec.peerCluster,
        sessionId: pair.sessionId,
        token,
        bandwidthBytesPerSecond: rec.bandwidthBytesPerSecond,
        tls: options.tls,
        logger: volumeLog,
        onProgress: (progress: RoundProgress) => {
          const v = live.volumes[index];
          if (v !== undefined) v.progress = progress;
          notify(live);
        },
      };
      const result = await (volume.kind === "direct"
        ? pullRound({ ...common, root: volume.root, stateDir: options.syncSources.stateDir("target", pair.targetVolume, volume.root), volume: pair.targetVolume }, signal)
        : pullRoundThroughMover({ ...common, mover: volume.mover, lost: volume.lost, migrationId: rec.id, round: number }, signal)
      ).finally(() => volume.release());
      const stats = roundStatsOf(number, result);
      const stored = await store().update(rec.id, (current) => ({
        ...current,
        volumes: current.volumes.map((v, i) => (i === index ? { ...v, rounds: [...v.rounds, toJson(RoundStatsSchema, stats)].slice(-ROUNDS_KEPT) } : v)),
        updatedAtMs: Date.now(),
      }));
      live.volumes[index] = { running: false, progress: undefined, error: undefined };
      adopt(live, stored);
      return stats;
    } catch (error) {
      const v = live.volumes[index];
      if (v !== undefined) v.running = false;
      notify(live);
      throw error;
    }
  };

  // ---------------------------------------------------------------------------------------------------------------
  // The source's lease watchdog.

  const armWatchdog = (live: Live): void => {
    clearTimeout(live.watchdog);
    live.watchdog = undefined;
    if (closed || record(live).role !== "source" || !LEASED_PHASES.has(record(live).state.phase)) return;
    // No lease written (a crash between the transition and the lease) counts as expired: restoring is the safe side.
    const expiresAt = live.leaseExpiresAtMs ?? 0;
    live.watchdog = setTimeout(() => void leaseCheck(live), Math.max(0, expiresAt - Date.now()));
  };

  const leaseCheck = async (live: Live): Promise<void> => {
    const expiresAt = live.leaseExpiresAtMs ?? 0;
    if (Date.now() < expiresAt) {
      armWatchdog(live);
      return;
    }
    try {
      const state = await apply(live, { type: "lease-expired", nowMs: Date.now(), leaseExpiresAtMs: expiresAt });
      if (state.phase === "aborting") {
        log(live).warn({ expiredAtMs: expiresAt }, "lease expired before Commit: restoring the application");
        // A Quiesce still in flight would scale the application down after the restore: stop it and wait first.
        await stopSteps(live, `the lease of migration ${record(live).id} expired`);
        await failpoint(FP.sourceLeaseExpiredBeforeRestore);
        await cleanup(live);
      }
    } catch (error) {
      // A transient API failure must not leave a quiesced source unwatched: look again shortly.
      log(live).error({ err: TheseusError.from(error).message }, "lease check failed; retrying");
      if (!closed) live.watchdog = setTimeout(() => void leaseCheck(live), 1000);
    }
  };

  // ---------------------------------------------------------------------------------------------------------------
  // Ending: abort's cleanup (also after a lease expiry, a lost Commit race, or a restart while aborting).

  const cleanup = (live: Live): Promise<void> =>
    step(
      live,
      "cleanup",
      async () => {
        const rec = record(live);
        clearTimeout(live.watchdog);
        await stopPresync(live, "the migration is aborting");
        const signal = AbortSignal.timeout(options.defaultTimeoutMs);
        // The movers go before the application mounts the claims again (the source's, restored) or they are deleted
        // (the target's: a mounted claim's deletion waits for its pods). The source's sessions are closed first, so
        // that no round the peer still sends starts a mover after them.
        if (rec.role === "source") closeSessions(rec);
        await endMovers(live, true, signal);
        if (rec.role === "source") {
          await unquiesceApp(cluster(), rec.id, rec.app, log(live), signal);
        } else {
          await unstageApp(cluster(), rec.id, validateNamespace(rec.app.namespace), options.defaultTimeoutMs, log(live), signal);
        }
        await failpoint(rec.role === "source" ? FP.sourceAbortBeforeDone : FP.targetAbortBeforeDone);
        await store().release(rec.id, signal);
        await apply(live, { type: "cleaned-up" }, signal);
        log(live).info({ reason: failureOf(record(live).state)?.message }, "aborted");
      },
      new AbortController().signal,
    );

  /** Cancels the steps in flight (all but the cleanup) and waits until each has stopped touching the cluster. */
  const stopSteps = async (live: Live, why: string): Promise<void> => {
    const running = [...live.steps.entries()].filter(([name]) => name !== "cleanup").map(([, p]) => p.catch(() => undefined));
    live.stepsController.abort(new TheseusError("cancelled", why));
    await Promise.all(running);
    live.stepsController = new AbortController();
  };

  const closeSessions = (rec: ParticipantRecord): void => {
    for (const v of rec.volumes) options.sessions.close(v.sessionId);
  };

  /**
   * Deletes the migration's movers (all its rounds shared them). `untilGone` where the application mounts the claims
   * next: a ReadWriteOnce claim mounts on one node at a time, the app's pod may be scheduled on another node than the
   * mover's, and a mover still terminating there would hold the attachment (Multi-Attach) while the app waits.
   * A failure is logged, not thrown: the migration's end must not hang on a pod; the next agent start sweeps it.
   */
  const endMovers = async (live: Live, untilGone: boolean, signal?: AbortSignal): Promise<void> => {
    if (options.volumes.endMigration === undefined) return;
    await options.volumes.endMigration(record(live).id, { untilGone, ...(signal === undefined ? {} : { signal }) }).catch((error: unknown) =>
      log(live).warn({ err: TheseusError.from(error).message }, "could not delete the migration's mover pods; the next agent start sweeps them"),
    );
  };

  // ---------------------------------------------------------------------------------------------------------------
  // Status.

  const statusOf = (live: Live): ParticipantStatus => {
    const rec = record(live);
    const state = rec.state;
    const failure = failureOf(state) ?? live.volumes.find((v) => v.error !== undefined)?.error;
    return create(ParticipantStatusSchema, {
      migrationId: rec.id,
      role: rec.role === "source" ? Role.SOURCE : Role.TARGET,
      phase: state.phase,
      volumes: rec.volumes.map((v, i) => volumeStatus(v, live.volumes[i])),
      errorCode: failure?.code ?? "",
      errorMessage: failure?.message ?? "",
      leaseExpiresAtUnixMs: BigInt(LEASED_PHASES.has(state.phase) ? (live.leaseExpiresAtMs ?? 0) : 0),
      updatedAtUnixMs: BigInt(rec.updatedAtMs),
      quiesceMs: BigInt(rec.role === "source" ? quiesceMsOf(rec) : 0),
      startupMs: BigInt(state.phase === "committed" ? state.startupMs : 0),
    });
  };

  async function resumeAll(signal?: AbortSignal): Promise<void> {
    for (const stored of await store().list(signal)) {
      const rec = stored.record;
      if (lives.has(rec.id) || rec.state.phase === "finished") continue;
      const live = makeLive(stored);
      lives.set(rec.id, live);
      if (rec.role === "source" && !END_PHASES.has(rec.state.phase) && rec.state.phase !== "aborting") {
        const tokens = await store().getTokens(rec.id, signal);
        for (const v of rec.volumes) {
          const token = tokens[v.sessionId];
          if (token !== undefined) options.sessions.restore({ id: v.sessionId, migrationId: rec.id, volume: v.sourceVolume, peerCluster: rec.peerCluster, expiresAtMs: rec.createdAtMs + SESSION_TTL_MS, ofMigration: true }, token);
          await setSourceLimit(v.sourceVolume, rec.bandwidthBytesPerSecond, signal);
        }
        if (LEASED_PHASES.has(rec.state.phase)) {
          live.leaseExpiresAtMs = await store().leaseExpiry(rec.id, signal);
          armWatchdog(live);
        }
      }
      if (rec.state.phase === "aborting") void cleanup(live).catch((error: unknown) => log(live).error({ err: TheseusError.from(error).message }, "resuming the abort failed"));
      startPresync(live);
      log(live).info({ phase: rec.state.phase }, "migration resumed");
      }
  }

  // ---------------------------------------------------------------------------------------------------------------
  // The calls.

  return {
    async begin(request, signal) {
      const id = validateId(request.migrationId);
      const role = request.role === Role.SOURCE ? "source" : request.role === Role.TARGET ? "target" : undefined;
      if (role === undefined) throw new TheseusError("invalid_argument", `Begin of migration ${id}: role must be source or target`);
      await resumed(signal);
      const existing = lives.get(id)?.stored ?? (await store().get(id, signal));
      if (existing !== undefined) {
        // A retried Begin: the first answer, whatever this one asks.
        if (existing.record.role !== role) throw new TheseusError("already_exists", `migration ${id} is already the ${existing.record.role} on this agent`);
        const live = await find(id, signal);
        return { volumes: await pairsOf(record(live), signal), status: statusOf(live) };
      }
      if (request.app === undefined) throw new TheseusError("invalid_argument", `Begin of migration ${id}: the request names no application`, { hint: "set app.namespace" });
      options.volumes.beginMigration?.(id);
      const app = { namespace: validateNamespace(request.app.namespace), labelSelector: request.app.labelSelector.trim(), helmRelease: request.app.helmRelease.trim() };
      const peerCluster = validateIdentityName(request.peerCluster, "peer cluster");
      if (request.volumes.length === 0) throw new TheseusError("invalid_argument", `Begin of migration ${id}: no volume pairs`);
      if (role === "target" && request.peerAddress === "") throw new TheseusError("invalid_argument", `Begin of migration ${id}: the target needs the source agent's address`);
      const tokens: Record<string, string> = {};
      const volumes: VolumeRecord[] = [];
      const now = Date.now();
      for (const pair of request.volumes) {
        if (role === "source") {
          await checkVolume(pair.sourceVolume, signal);
          const { session, token } = options.sessions.open({ migrationId: id, volume: pair.sourceVolume, peerCluster, ttlMs: SESSION_TTL_MS, ofMigration: true });
          tokens[session.id] = token;
          volumes.push({ sourceVolume: pair.sourceVolume, targetVolume: pair.targetVolume, sessionId: session.id, usedBytes: Number(pair.usedBytes), rounds: [] });
        } else {
          if (pair.sessionId === "" || pair.token === "") throw new TheseusError("invalid_argument", `Begin of migration ${id}: volume ${pair.targetVolume} has no session`, { hint: "pass the volume pairs the source's Begin returned" });
          // The staged claim must be there: it is where the rounds write (directly, or through a mover).
          await checkVolume(pair.targetVolume, signal);
          tokens[pair.sessionId] = pair.token;
          volumes.push({ sourceVolume: pair.sourceVolume, targetVolume: pair.targetVolume, sessionId: pair.sessionId, usedBytes: Number(pair.usedBytes), rounds: [] });
        }
      }
      await store().putTokens(id, tokens, signal);
      const stored = await store().create(
        {
          id,
          role,
          mode: request.mode === Mode.COPY ? "copy" : "move",
          app,
          peerCluster,
          peerAddress: request.peerAddress,
          leaseSeconds: request.leaseSeconds > 0 ? request.leaseSeconds : DEFAULT_LEASE_SECONDS,
          bandwidthBytesPerSecond: Number(request.bandwidthBytesPerSecond),
          volumes,
          state: { phase: "presyncing" },
          createdAtMs: now,
          updatedAtMs: now,
        },
        signal,
      );
      const live = lives.get(id) ?? makeLive(stored);
      lives.set(id, live);
      if (role === "source") for (const v of record(live).volumes) await setSourceLimit(v.sourceVolume, record(live).bandwidthBytesPerSecond, signal);
      log(live).info({ peer: peerCluster, volumes: volumes.length, mode: record(live).mode }, "migration begun");
      await failpoint(role === "source" ? FP.sourceBeginAfter : FP.targetBeginAfter);
      if (role === "target") startPresync(live);
      return { volumes: await pairsOf(record(live), signal), status: statusOf(live) };
    },

    async status(id, signal) {
      return statusOf(await find(id, signal));
    },

    async *watch(id, signal) {
      const live = await find(id, signal);
      for (;;) {
        const changed = new Promise<void>((resolve) => live.waiters.add(resolve));
        const status = statusOf(live);
        yield status;
        if (END_PHASES.has(status.phase as ParticipantState["phase"])) return;
        await raceSignal(changed, signal);
      }
    },

    async list(signal) {
      if (options.cluster === undefined) return [];
      await resumed(signal);
      for (const stored of await store().list(signal)) if (!lives.has(stored.record.id)) lives.set(stored.record.id, makeLive(stored));
      return [...lives.values()].map(statusOf);
    },

    async setRate(id, bytesPerSecond, signal) {
      const live = await find(id, signal);
      const stored = await store().update(id, (current) => (current.bandwidthBytesPerSecond === bytesPerSecond ? undefined : { ...current, bandwidthBytesPerSecond: bytesPerSecond, updatedAtMs: Date.now() }), signal);
      adopt(live, stored);
      if (record(live).role === "source") {
        for (const v of record(live).volumes) await setSourceLimit(v.sourceVolume, bytesPerSecond, signal);
      } else {
        // The rate reaches the source's token bucket in a round's first message: restart the rounds in flight with it
        // (what they applied is kept, and a large file resumes from its checkpoint).
        for (const round of live.roundControllers) round.abort(new TheseusError("cancelled", "the rate changed"));
      }
      log(live).info({ bytesPerSecond }, "pre-sync rate changed");
    },

    async prepare(id, signal) {
      const live = await find(id, signal);
      return step(
        live,
        "prepare",
        async (stepSignal) => {
          const rec = record(live);
          const state = rec.state;
          if (state.phase === "aborting" || state.phase === "aborted") return { yes: false, reason: `the ${rec.role} has aborted: ${state.failure.message}` };
          if (state.phase !== "presyncing") return { yes: state.phase !== "finished", reason: state.phase === "finished" ? "the migration has finished" : "" };
          const reason = rec.role === "source" ? await sourceVote(rec, stepSignal) : await targetVote(live, stepSignal);
          await failpoint(rec.role === "source" ? FP.sourcePrepareBeforeVote : FP.targetPrepareBeforeVote);
          if (reason !== undefined) {
            log(live).info({ reason }, "voted no");
            return { yes: false, reason };
          }
          await apply(live, { type: "prepared" }, stepSignal);
          return { yes: true, reason: "" };
        },
        signal,
      );
    },

    async quiesce(id, timeoutMs, signal) {
      const live = await find(id, signal);
      return step(
        live,
        "quiesce",
        async (stepSignal) => {
          const rec = record(live);
          if (rec.state.phase === "quiesced") return { durationMs: rec.state.quiesceMs, changed: rec.state.changed };
          // Check before the lease starts: a refused Quiesce leaves nothing counting.
          const check = transition(rec.role, rec.state, { type: "quiesce-started" });
          if (!check.ok) throw check.error;
          // The lease is written before the phase that makes it count, so a restarted agent always finds it. While
          // this step stops the writers (bounded by its timeout) the coordinator is plainly there: the lease covers
          // the step and then the lease proper, which counts from the end of the quiesce. Should this agent die
          // mid-step, the restarted one restores the application once that runs out.
          const quiesceTimeoutMs = timeoutMs > 0 ? timeoutMs : options.defaultTimeoutMs;
          live.leaseExpiresAtMs = await store().renewLease(id, rec.leaseSeconds + Math.ceil(quiesceTimeoutMs / 1000), Date.now(), stepSignal);
          await apply(live, { type: "quiesce-started" }, stepSignal);
          armWatchdog(live);
          await failpoint(FP.sourceQuiesceBefore);
          const result = await quiesceApp(cluster(), id, rec.app, quiesceTimeoutMs, log(live), stepSignal);
          await failpoint(FP.sourceQuiesceAfterWritersStopped);
          const changed = result.changed.map((r) => ({ apiVersion: r.apiVersion, kind: r.kind, namespace: r.namespace, name: r.name }));
          live.leaseExpiresAtMs = await store().renewLease(id, rec.leaseSeconds, Date.now(), stepSignal);
          armWatchdog(live);
          await apply(live, { type: "quiesced", quiesceMs: result.durationMs, changed }, stepSignal);
          log(live).info({ durationMs: result.durationMs, changed: changed.length }, "quiesced; the lease counts");
          return { durationMs: result.durationMs, changed };
        },
        signal,
      );
    },

    async finalRound(id, signal) {
      const live = await find(id, signal);
      return step(
        live,
        "final-round",
        async (stepSignal) => {
          if (record(live).state.phase === "synced") return finalAnswer(live);
          await apply(live, { type: "final-round-started" }, stepSignal);
          await stopPresync(live, "the final round takes over");
          await failpoint(FP.targetFinalRoundBefore);
          const started = Date.now();
          await Promise.all(record(live).volumes.map((_, index) => runRound(live, index, stepSignal)));
          // The end of the final round is what a rollback later proves the volumes unchanged since.
          const syncedAtMs = Date.now();
          await apply(live, { type: "final-round-done", durationMs: syncedAtMs - started }, stepSignal, { syncedAtMs });
          // That was the target's last round: its movers go now, while the coordinator commits the source, so that
          // Commit's wait for them (before the activation) is short. Not awaited: the deletions are no part of the round.
          void endMovers(live, false);
          await failpoint(FP.targetFinalRoundAfter);
          return finalAnswer(live);
        },
        signal,
      );
    },

    async commit(id, timeoutMs, signal) {
      const live = await find(id, signal);
      return step(
        live,
        "commit",
        async (stepSignal) => {
          const rec = record(live);
          if (rec.role === "source") {
            await failpoint(FP.sourceCommitBefore);
            const leaseExpiresAtMs = live.leaseExpiresAtMs ?? (await store().leaseExpiry(id, stepSignal));
            const state = await apply(live, { type: "commit", nowMs: Date.now(), leaseExpiresAtMs }, stepSignal);
            if (state.phase === "aborting") {
              // The lease ran out first: the watchdog's restore wins, and the coordinator hears "aborted".
              await cleanup(live);
            } else if (state.phase === "committed") {
              clearTimeout(live.watchdog);
              closeSessions(record(live));
              // Nothing reads the source after its commit. Not waited for here: Finish does before the claims are
              // mounted again (a copy's source restored) and nothing mounts a move's.
              void endMovers(live, false);
              await store().release(id, stepSignal);
              log(live).info("committed: fenced, will never restore itself");
            }
            await failpoint(FP.sourceCommitBeforeAck);
            return statusOf(live);
          }
          await apply(live, { type: "commit", nowMs: Date.now(), leaseExpiresAtMs: undefined }, stepSignal);
          if (record(live).state.phase === "committing") {
            await failpoint(FP.targetCommitBeforeActivate);
            // The final round deleted the movers; the app's pods mount the claims only once the pods are gone (RWO).
            await endMovers(live, true, stepSignal);
            const readyTimeoutMs = timeoutMs > 0 ? timeoutMs : options.defaultTimeoutMs;
            let result: { durationMs: number };
            try {
              result = await activateApp(cluster(), id, validateNamespace(rec.app.namespace), { waitReady: true, timeoutMs: readyTimeoutMs }, log(live), stepSignal);
            } catch (error) {
              if (stepSignal.aborted) throw error;
              // Not ready in time: the answer says so, and whether anything wrote to the volumes meanwhile, so that the
              // coordinator can tell a rollback that loses nothing from one that would lose writes made here.
              const e = TheseusError.from(error);
              const writes = await describeWrites(live, stepSignal);
              const message = `the application did not become ready within ${Math.round(readyTimeoutMs / 1000)} s: ${e.message}; ${writes}`;
              log(live).warn({ err: e.message, writes }, "activation failed");
              await apply(live, { type: "activation-failed", failure: { code: e.code === "deadline_exceeded" ? "deadline_exceeded" : e.code, message } }, stepSignal);
              return statusOf(live);
            }
            await apply(live, { type: "activated", startupMs: result.durationMs }, stepSignal);
            await store().release(id, stepSignal);
            log(live).info({ startupMs: result.durationMs }, "committed: the application runs here");
            await failpoint(FP.targetCommitAfterActivate);
          }
          return statusOf(live);
        },
        signal,
      );
    },

    async abort(id, reason, signal, rollback = false) {
      const live = await find(id, signal);
      const failure: Failure = { code: "cancelled", message: reason === "" ? "aborted by the coordinator" : reason };
      if (rollback && record(live).role === "target" && record(live).state.phase === "committing") {
        // Past the commit point a target gives up only with proof that it took no write: its workloads stopped first,
        // then every volume unchanged since the final round; otherwise it refuses and runs on as it was.
        await step(live, "rollback-check", (stepSignal) => rollbackCheck(live, stepSignal), signal);
      }
      const state = await apply(live, { type: "abort", failure, rollback }, signal);
      if (state.phase === "aborting") {
        // Stop whatever step runs (a Quiesce, a final round), wait for it, then undo.
        await stopSteps(live, `migration ${id} is aborting`);
        await raceSignal(cleanup(live), signal);
      }
      return statusOf(live);
    },

    async renew(id, leaseSeconds, signal) {
      const live = await find(id, signal);
      const rec = record(live);
      if (rec.role !== "source") throw new TheseusError("invalid_argument", `Renew of migration ${id} is for the source, and this agent is the target`);
      if (rec.state.phase === "committed" || rec.state.phase === "finished") return live.leaseExpiresAtMs ?? 0;
      if (!LEASED_PHASES.has(rec.state.phase)) {
        throw new TheseusError("failed_precondition", `migration ${id}: the source holds no lease in phase ${rec.state.phase}`, {
          hint: rec.state.phase === "aborting" || rec.state.phase === "aborted" ? "it has aborted (its lease expired): abort the target" : "the lease starts with Quiesce",
        });
      }
      live.leaseExpiresAtMs = await store().renewLease(id, leaseSeconds > 0 ? leaseSeconds : rec.leaseSeconds, Date.now(), signal);
      armWatchdog(live);
      return live.leaseExpiresAtMs;
    },

    async finish(id, signal) {
      const live = await find(id, signal).catch((error: unknown) => {
        if (TheseusError.from(error).code !== "not_found") throw error;
        return undefined;
      });
      if (live === undefined) return create(ParticipantStatusSchema, { migrationId: id, phase: "finished" });
      return step(
        live,
        "finish",
        async (stepSignal) => {
          const rec = record(live);
          if (rec.state.phase === "finished") return statusOf(live);
          const check = transition(rec.role, rec.state, { type: "finish" });
          if (!check.ok) throw check.error;
          await endMovers(live, true, stepSignal);
          // A copy leaves the source running as it was; a move's source, kept at rest until now, is removed.
          if (rec.role === "source" && rec.mode === "copy" && rec.state.phase === "committed") await unquiesceApp(cluster(), id, rec.app, log(live), stepSignal);
          if (rec.role === "source" && rec.mode === "move" && rec.state.phase === "committed") await retireApp(cluster(), id, rec.app, options.defaultTimeoutMs, log(live), stepSignal);
          closeSessions(rec);
          await apply(live, { type: "finish" }, stepSignal);
          const answer = statusOf(live);
          if (rec.role === "source") {
            // Nothing of the migration stays behind on the source: record, tokens, lease (a retried Finish finds none
            // and answers finished). The target keeps its record as the history of how the application arrived.
            await store().remove(id, stepSignal);
            lives.delete(id);
          } else {
            await store().release(id, stepSignal);
          }
          return answer;
        },
        signal,
      );
    },

    resume(signal) {
      if (options.cluster === undefined) return Promise.resolve();
      resuming = resumeAll(signal);
      return resuming;
    },

    async close() {
      closed = true;
      const waits: Promise<unknown>[] = [];
      for (const live of lives.values()) {
        clearTimeout(live.watchdog);
        live.stepsController.abort(new TheseusError("cancelled", "the agent is shutting down"));
        waits.push(stopPresync(live, "the agent is shutting down"), ...[...live.steps.values()].map((p) => p.catch(() => undefined)));
      }
      await Promise.all(waits);
    },
  };

  async function pairsOf(rec: ParticipantRecord, signal: AbortSignal): Promise<MessageInitShape<typeof VolumePairSchema>[]> {
    const tokens = rec.role === "source" && !END_PHASES.has(rec.state.phase) ? await store().getTokens(rec.id, signal) : {};
    return rec.volumes.map((v) => ({ sourceVolume: v.sourceVolume, targetVolume: v.targetVolume, sessionId: v.sessionId, token: tokens[v.sessionId] ?? "", usedBytes: BigInt(v.usedBytes) }));
  }

  async function sourceVote(rec: ParticipantRecord, signal: AbortSignal): Promise<string | undefined> {
    for (const v of rec.volumes) {
      try {
        await checkVolume(v.sourceVolume, signal);
      } catch (error) {
        return `source volume ${v.sourceVolume} cannot be read: ${TheseusError.from(error).message}`;
      }
    }
    return undefined;
  }

  async function targetVote(live: Live, signal: AbortSignal): Promise<string | undefined> {
    const rec = record(live);
    for (const [index, v] of rec.volumes.entries()) {
      let mover: boolean;
      let root: string | undefined;
      try {
        mover = await isMover(v.targetVolume, signal);
        root = mover ? undefined : await options.volumes.root(v.targetVolume, signal);
      } catch (error) {
        return `the staged volume ${v.targetVolume} is not there: ${TheseusError.from(error).message}`;
      }
      // Without a first complete round the final one would copy everything while the application is down.
      if (v.rounds.length === 0) return `pre-sync has not completed a first round of ${v.targetVolume} yet; wait for it`;
      const error = live.volumes[index]?.error;
      if (error?.code === "resource_exhausted") return `the last round of ${v.targetVolume} failed: ${error.message}`;
      let freeBytes: number | undefined;
      if (root !== undefined) {
        const fs = await statfs(root);
        freeBytes = fs.bavail * fs.bsize;
      } else if (mover) {
        // Not knowing is no reason to refuse (it was the rule before movers reported it): the final round still
        // fails with resource_exhausted on a full volume.
        freeBytes = await moverBackedFreeBytes(live, v.targetVolume, signal).catch((error: unknown) => {
          log(live).warn({ volume: v.targetVolume, err: TheseusError.from(error).message }, "the free space of a mover-backed volume could not be read; voting without it");
          return undefined;
        });
      }
      if (freeBytes !== undefined && freeBytes < MIN_FREE_BYTES) return `the target volume ${v.targetVolume} has only ${freeBytes} bytes free; grow its claim or free space`;
    }
    return undefined;
  }

  /**
   * A mover-backed target volume's free space, as the migration's mover (running since pre-sync; started again if it
   * was lost, as the final round would) reads it on its mount. undefined when the mover cannot say (an older image,
   * or no mover access): the vote then counts on the final round failing with resource_exhausted, as before.
   */
  async function moverBackedFreeBytes(live: Live, volume: string, signal: AbortSignal): Promise<number | undefined> {
    if (options.volumes.open === undefined) return undefined;
    const id = record(live).id;
    const opened = await options.volumes.open(volume, signal, { [LABEL_MIGRATION]: id }, id);
    try {
      if (opened.kind !== "mover") return undefined;
      return await moverFreeBytes(opened.mover, opened.lost, options.tls, signal);
    } finally {
      await opened.release();
    }
  }

  /** The first write to any of the target's volumes since the final round, or undefined when there is none. */
  async function firstWrite(live: Live, signal: AbortSignal): Promise<{ volume: string; path: string; atMs: number } | "unknown" | undefined> {
    const rec = record(live);
    if (rec.syncedAtMs === undefined) return "unknown";
    for (const v of rec.volumes) {
      // Proving a mover-backed volume untouched would need a pod to walk it: not built, so a rollback keeps it.
      if (await isMover(v.targetVolume, signal)) return "unknown";
      const write = await firstWriteSince(await options.volumes.root(v.targetVolume, signal), rec.syncedAtMs, signal);
      if (write !== undefined) return { volume: v.targetVolume, ...write };
    }
    return undefined;
  }

  async function describeWrites(live: Live, signal: AbortSignal): Promise<string> {
    try {
      const write = await firstWrite(live, signal);
      if (write === undefined) return "the volumes have taken no write since the final round";
      if (write === "unknown") return "when the final round ended is not recorded, so writes since cannot be ruled out";
      return `the volumes have been written since the final round (${write.volume}: ${write.path === "" ? "its root" : write.path} at ${new Date(write.atMs).toISOString()})`;
    } catch (error) {
      return `whether the volumes were written since the final round cannot be told: ${TheseusError.from(error).message}`;
    }
  }

  /** Stops the target's workloads, then proves the volumes untouched; throws (after restarting them) when not. */
  async function rollbackCheck(live: Live, signal: AbortSignal): Promise<void> {
    const rec = record(live);
    const selection = { namespace: validateNamespace(rec.app.namespace), labelSelector: "", helmRelease: "" };
    await quiesceApp(cluster(), rec.id, selection, options.defaultTimeoutMs, log(live), signal);
    const write = await firstWrite(live, signal).catch((error: unknown) => `unreadable: ${TheseusError.from(error).message}` as const);
    if (write === undefined) {
      log(live).warn("rolling back: the target's workloads are stopped and its volumes took no write since the final round");
      return;
    }
    // Not provably clean: put the workloads back as they were and let the operator decide.
    await unquiesceApp(cluster(), rec.id, selection, log(live), signal);
    const what =
      write === "unknown" || typeof write === "string"
        ? `whether its volumes were written since the final round cannot be proved (${write})`
        : `${write.volume} was written since the final round (${write.path === "" ? "its root" : write.path} at ${new Date(write.atMs).toISOString()})`;
    throw new TheseusError("failed_precondition", `migration ${rec.id}: the target cannot roll back: ${what}, so rolling back to the source could lose writes made here`, {
      hint: "fix what keeps the target's workloads from becoming ready and retry its Commit (theseus resume ID), or decide by hand which copy to keep",
    });
  }

  function finalAnswer(live: Live): { volumes: VolumeStatus[]; durationMs: number } {
    const rec = record(live);
    const durationMs = rec.state.phase === "synced" ? rec.state.finalRoundMs : 0;
    // The final round only: its two digests are what the coordinator compares before deciding.
    return { volumes: rec.volumes.map((v) => volumeStatus({ ...v, rounds: v.rounds.slice(-1) }, undefined)), durationMs };
  }
}

/** Free space the target must keep for the final round's changes and the staging of partial files. */
const MIN_FREE_BYTES = 16 * 1024 * 1024;

function volumeStatus(v: VolumeRecord, live: VolumeLive | undefined): VolumeStatus {
  return create(VolumeStatusSchema, {
    sourceVolume: v.sourceVolume,
    targetVolume: v.targetVolume,
    rounds: v.rounds.map((r) => fromJson(RoundStatsSchema, r)),
    roundRunning: live?.running ?? false,
    ...(live?.progress === undefined ? {} : { progress: { entries: BigInt(live.progress.entries), bytes: BigInt(live.progress.bytes), wireBytes: BigInt(live.progress.wireBytes) } }),
    usedBytes: BigInt(v.usedBytes),
  });
}

function nextRoundNumber(v: VolumeRecord): number {
  const last = v.rounds.at(-1);
  return last === undefined ? 0 : fromJson(RoundStatsSchema, last).round + 1;
}

function failureOf(state: ParticipantState): Failure | undefined {
  return state.phase === "aborting" || state.phase === "aborted" || state.phase === "committing" ? state.failure : undefined;
}

function quiesceMsOf(rec: ParticipantRecord): number {
  return rec.state.phase === "quiesced" ? rec.state.quiesceMs : 0;
}

/** Migration ids name Kubernetes objects here (theseus-migration-<id>), so they must be lower-case DNS labels too. */
function validateId(id: string): string {
  validateMigrationId(id);
  if (!/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(id)) {
    throw new TheseusError("invalid_argument", `migration id "${id}" cannot name a Kubernetes object`, { hint: "use lower-case letters, digits, '-' and '.' (a UUID will do)" });
  }
  return id;
}

function raceSignal<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(abortReason(signal));
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(abortReason(signal));
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(TheseusError.from(error));
      },
    );
  });
}
