// The driver: one coordinator carrying one migration from its journaled state to an end. Each step journals its
// transition (fsync'd) before it acts on the decision it records, so a coordinator killed anywhere resumes from the
// journal: pre-cutover steps are idempotent and simply run again, a cutover interrupted before its decision aborts,
// and one interrupted after it rolls forward.
//
// Pre-sync runs in the agents; the driver only watches the target's status, feeds the rounds to the prediction and
// decides when to cut over. The cutover itself runs to its end once started: detaching (the signal) is honoured only
// before it, because a half-done cutover without its driver leaves the application down until the source's lease
// runs out.
import { toJson } from "@bufbuild/protobuf";
import { TheseusError, createChannel, defineFailpoints, failpoint, formatBytes, formatDuration, sleep, throwIfAborted } from "../../common/index.js";
import type { Channel, Logger } from "../../common/index.js";
import { RoundStatsSchema } from "../../proto/gen/theseus/v1/agent_pb.js";
import type { RoundStats, SyncProgress } from "../../proto/gen/theseus/v1/agent_pb.js";
import { Mode, Role } from "../../proto/gen/theseus/v1/migration_pb.js";
import type { ParticipantStatus, VolumeStatus } from "../../proto/gen/theseus/v1/migration_pb.js";
import type { TlsMaterial } from "../../rpc/index.js";
import { createPlan, planErrors, resolvePlanInput, stagePlan, unstageMigration } from "../plan/index.js";
import type { PlanResult } from "../plan/index.js";
import type { DriverLock } from "./driver-lock.js";
import { DEFAULT_READY_TIMEOUT_MS } from "./options.js";
import { followJournal } from "./journal.js";
import type { Journal, JournalNote, MigrationSpec } from "./journal.js";
import { canAbort, isEnded, transition } from "./phases.js";
import type { MigrationState, Placement, Transition, VolumePairRef } from "./phases.js";
import { dialParticipant } from "./participants.js";
import { cutoverCosts } from "./costs.js";
import type { CutoverCosts } from "./costs.js";
import type { Prediction, PresyncDecision } from "./prediction.js";
import { decidePresync, predictMigration } from "./presync.js";
import type { ObservedRound } from "./presync.js";
import type { MigrationView, TimelineEntry } from "./replay.js";

export type MigrationEvent =
  | { readonly type: "phase"; readonly phase: string; readonly atMs: number }
  | { readonly type: "round"; readonly volume: string; readonly round: RoundStats }
  | { readonly type: "progress"; readonly volume: string; readonly progress: SyncProgress; readonly usedBytes: number }
  | { readonly type: "prediction"; readonly prediction: Prediction; readonly decision: PresyncDecision; readonly costs: CutoverCosts }
  | { readonly type: "message"; readonly text: string };

export interface MigrationOutcome {
  readonly id: string;
  readonly outcome: "committed" | "aborted";
  readonly reason?: string;
  readonly timeline: readonly { readonly phase: string; readonly startedAtMs: number; readonly durationMs: number }[];
  readonly rounds: readonly { readonly volume: string; readonly round: RoundStats }[];
  /** The prediction at the moment of cutover. */
  readonly predictedDowntimeMs: number | undefined;
  /** Quiesce start to target ready, as the coordinator saw it. */
  readonly measuredDowntimeMs: number | undefined;
}

export interface MigrationHandle {
  readonly id: string;
  readonly events: AsyncIterable<MigrationEvent>;
  /** Resolves when the migration is committed or aborted; rejects when the driver stops without an end (detached, or a step failed after the commit point). */
  readonly outcome: Promise<MigrationOutcome>;
  /** Cut over now, whatever the prediction says (as `theseus cutover ID`). */
  cutover(): Promise<void>;
  /** Abort; refused once the commit decision is journaled. */
  abort(reason: string): Promise<void>;
}

export const COORDINATOR_FAILPOINTS = defineFailpoints("coordinator", [
  "coordinator.before-stage",
  "coordinator.before-begin",
  "coordinator.presync.after-round",
  "coordinator.before-prepare",
  "coordinator.before-quiesce",
  "coordinator.before-final-round",
  "coordinator.before-commit-decision",
  "coordinator.after-commit-decision",
  "coordinator.after-source-commit",
  "coordinator.after-target-commit",
  "coordinator.before-abort",
]);

export interface DriverOptions {
  readonly journal: Journal;
  readonly lock: DriverLock;
  /** The journal replayed (a fresh migration: only its spec). */
  readonly view: MigrationView;
  /** Byte offset of the journal's end when the driver starts: requests from other processes are read from there. */
  readonly journalOffset: number;
  readonly tls: TlsMaterial;
  readonly home: string;
  readonly signal: AbortSignal | undefined;
  readonly logger: Logger;
}

/** How long a control call may take before the agent is taken as gone; Quiesce and Commit have their own. */
const CALL_TIMEOUT_MS = 30_000;
const QUIESCE_TIMEOUT_MS = 120_000;
/** How often a lost Watch stream is re-dialled (an agent restarting is expected), and requests are polled. */
const RETRY_MS = 1_000;
const REQUEST_POLL_MS = 250;
/**
 * How long a call that must happen (after the commit point, or to finish an abort) is retried while its agent is
 * unreachable, before the driver stops and leaves it to `theseus resume`/`abort`. An agent restart, with its cluster
 * busy, was seen to take a minute: a fixed 30 tries of 1 s gave up under it and left the migration for a human.
 */
const AGENT_RETURN_MS = 5 * 60_000;
const RETRY_MAX_MS = 5_000;
/** A refusal must hold for this many rounds before --auto-cutover gives up: one burst of writes is not a trend. */
const REFUSALS_BEFORE_ABORT = 2;
/** ...unless the app writes this much faster than a round moves data: then one round says it, and waiting costs minutes. */
const CLEAR_DIVERGENCE = 1.5;
/**
 * A round still running after twice its predecessor's time (plus the gap between them) and this slack means the app
 * dirties data faster than rounds move it: under the rounds' cost model a converging round carries at most what was
 * dirtied during the previous round and the gap, so it takes less than its fixed part plus that much time again.
 */
const GROWING_ROUND_SLACK_MS = 10_000;

type Input =
  | { readonly kind: "status"; readonly status: ParticipantStatus }
  | { readonly kind: "cutover" }
  | { readonly kind: "abort"; readonly reason: string }
  | { readonly kind: "time" }
  | { readonly kind: "failed"; readonly error: unknown };

export function startDriver(options: DriverOptions): MigrationHandle {
  const { journal, view, tls, logger } = options;
  const spec: MigrationSpec = view.spec;
  const log = logger.child({ component: "migration", migrationId: spec.id });
  const events = createChannel<MigrationEvent>();
  let state: MigrationState = view.state;
  let plan: PlanResult | undefined;
  const bandwidth = view.bandwidthBytesPerSecond;
  let quiesceStartedAtMs = view.quiesceStartedAtMs;
  const timeline: { phase: string; startedAtMs: number }[] = view.timeline.map((t: TimelineEntry) => ({ phase: t.phase, startedAtMs: t.startedAtMs }));
  const rounds: { volume: string; round: RoundStats }[] = view.rounds.map((r) => ({ volume: r.volume, round: r.round }));
  const observed = new Map<string, ObservedRound[]>();
  for (const r of view.rounds) if (!r.final) observed.set(r.volume, [...(observed.get(r.volume) ?? []), { round: r.round, endedAtMs: r.atMs }]);
  let predictedDowntimeMs = view.predictedDowntimeMs;
  let measuredDowntimeMs = view.measuredDowntimeMs;
  let abortRequest: string | undefined;
  let inputs: Channel<Input> | undefined;
  let renewal: AbortController | undefined;
  let costs: CutoverCosts | undefined;

  const source = dialParticipant(spec.from, tls);
  const target = dialParticipant(spec.to, tls);

  const emit = (event: MigrationEvent): void => events.push(event);
  const message = (text: string): void => {
    log.info(text);
    emit({ type: "message", text });
  };

  /** Journals the transition, then takes it: the record is on disk before anyone acts on the new phase. */
  const apply = async (t: Transition): Promise<void> => {
    const next = transition(state, t);
    const record = await journal.append(t);
    if (next.phase !== state.phase) {
      timeline.push({ phase: next.phase, startedAtMs: record.atMs });
      emit({ type: "phase", phase: next.phase, atMs: record.atMs });
      log.info({ phase: next.phase }, `phase ${next.phase}`);
    }
    if (t.type === "prepared") quiesceStartedAtMs = record.atMs;
    state = next;
  };
  const note = async (entry: JournalNote): Promise<void> => {
    await journal.append(entry);
  };

  const detachSignal = options.signal;
  const call = (extra: { timeoutMs?: number; signal?: AbortSignal } = {}): { timeoutMs: number; signal?: AbortSignal } => ({
    timeoutMs: extra.timeoutMs ?? CALL_TIMEOUT_MS,
    ...(extra.signal === undefined ? {} : { signal: extra.signal }),
  });

  async function planned(): Promise<PlanResult> {
    if (plan !== undefined) return plan;
    const { app, options: planOptions } = await resolvePlanInput(spec.plan);
    plan = await createPlan({ from: spec.from, to: spec.to, app, options: planOptions, tls, ...(detachSignal === undefined ? {} : { signal: detachSignal }) });
    return plan;
  }

  /**
   * Quiesce and start-up for the prediction, learned once from the source app's pods as the plan's Discover saw them;
   * the spec's estimates when the source cannot be asked.
   */
  async function cutoverCostsNow(): Promise<CutoverCosts> {
    if (costs !== undefined) return costs;
    try {
      costs = cutoverCosts({ sourceObjects: (await planned()).inventory.objects });
    } catch (error) {
      log.warn({ err: TheseusError.from(error).message }, "cannot learn the cutover's costs from the source; using the estimates");
      const basis = "the migration's estimate (the source could not be asked)";
      costs = { quiesce: { ms: spec.quiesceEstimateMs, source: "estimated", basis }, startup: { ms: spec.startupEstimateMs, source: "estimated", basis } };
    }
    log.info({ quiesce: costs.quiesce, startup: costs.startup }, "cutover costs for the prediction");
    return costs;
  }

  async function stepPlan(): Promise<void> {
    const { plan: p } = await planned();
    const errors = planErrors(p);
    if (errors.length > 0) {
      await apply({ type: "abort-decided", reason: `the plan has ${errors.length} error${errors.length === 1 ? "" : "s"}: ${errors.map((e) => e.message).join("; ")}` });
      return;
    }
    const { app } = await resolvePlanInput(spec.plan);
    await apply({
      type: "planned",
      placement: {
        sourceCluster: p.source.cluster,
        targetCluster: p.target.cluster,
        sourceNamespace: p.source.namespace,
        targetNamespace: p.target.namespace,
        labelSelector: app.labelSelector,
        helmRelease: app.helmRelease,
      },
    });
  }

  async function stepStage(): Promise<void> {
    await failpoint("coordinator.before-stage");
    const { plan: p } = await planned();
    const staged = await stagePlan({
      to: spec.to,
      plan: p,
      migrationId: spec.id,
      onConflict: (await resolvePlanInput(spec.plan)).options.onConflict,
      tls,
      ...(detachSignal === undefined ? {} : { signal: detachSignal }),
    });
    const volumes: VolumePairRef[] = p.volumes.map((v) => {
      const claim = staged.claims.find((c) => c.namespace === v.targetNamespace && c.name === v.claim);
      if (claim === undefined || claim.volume === "") {
        throw new TheseusError("failed_precondition", `the target staged no readable claim ${v.targetNamespace}/${v.claim} for the source's ${v.volume}`, {
          hint: claim?.reason === undefined || claim.reason === "" ? "check the target agent's log and its storage class" : claim.reason,
        });
      }
      return { sourceVolume: v.volume, targetVolume: claim.volume, usedBytes: v.usedBytes };
    });
    await apply({ type: "staged", volumes });
  }

  async function stepBegin(placement: Placement, volumes: readonly VolumePairRef[]): Promise<void> {
    await failpoint("coordinator.before-begin");
    const mode = spec.mode === "copy" ? Mode.COPY : Mode.MOVE;
    const leaseSeconds = Math.ceil(spec.leaseMs / 1000);
    const common = { migrationId: spec.id, mode, bandwidthBytesPerSecond: BigInt(bandwidth), leaseSeconds };
    const pairs = volumes.map((v) => ({ sourceVolume: v.sourceVolume, targetVolume: v.targetVolume, usedBytes: BigInt(v.usedBytes) }));
    // The source's answer carries the transfer sessions; they are never journaled (tokens are secrets), and a
    // resumed driver gets the same ones again: Begin is idempotent.
    const begun = await source.begin(
      {
        ...common,
        role: Role.SOURCE,
        app: { namespace: placement.sourceNamespace, labelSelector: placement.labelSelector, helmRelease: placement.helmRelease },
        peerCluster: placement.targetCluster,
        volumes: pairs,
      },
      call(detachSignal === undefined ? {} : { signal: detachSignal }),
    );
    await target.begin(
      {
        ...common,
        role: Role.TARGET,
        app: { namespace: placement.targetNamespace },
        peerCluster: placement.sourceCluster,
        peerAddress: spec.from.address,
        volumes: begun.volumes,
      },
      call(detachSignal === undefined ? {} : { signal: detachSignal }),
    );
    await apply({ type: "begun" });
  }

  /** Watches pre-sync until a decision: cut over (journaled) or abort (journaled), or the driver detaches. */
  async function stepPresync(volumes: readonly VolumePairRef[]): Promise<void> {
    const costsNow = await cutoverCostsNow();
    const stop = new AbortController();
    const stopSignal = detachSignal === undefined ? stop.signal : AbortSignal.any([stop.signal, detachSignal]);
    const queue = createChannel<Input>();
    inputs = queue;
    // An abort asked before this queue existed (right after a resume) is not lost.
    if (abortRequest !== undefined) queue.push({ kind: "abort", reason: abortRequest });
    void pumpWatch(queue, stopSignal);
    void pumpRequests(queue, stopSignal);
    let timer: NodeJS.Timeout | undefined;
    if (spec.cutoverAtMs !== undefined) timer = setTimeout(() => queue.push({ kind: "time" }), Math.max(spec.cutoverAtMs - Date.now(), 0));
    const onDetach = (): void => queue.close();
    detachSignal?.addEventListener("abort", onDetach, { once: true });
    let refusals = 0;
    let lastWhy = "";
    let timeReached = false;
    const running = new Map<string, { round: number; startedAtMs: number; bytes: number }>();
    try {
      for await (const input of queue) {
        let cutoverRequested = false;
        switch (input.kind) {
          case "failed":
            throw input.error;
          case "abort":
            await apply({ type: "abort-decided", reason: input.reason });
            return;
          case "cutover":
            cutoverRequested = true;
            break;
          case "time":
            timeReached = true;
            break;
          case "status": {
            const status = input.status;
            if (status.phase === "aborted" || status.phase === "aborting") {
              await apply({ type: "abort-decided", reason: `the target aborted: ${status.errorMessage === "" ? "(no reason given)" : status.errorMessage}` });
              return;
            }
            const fresh = await takeRounds(status.volumes, volumes);
            for (const v of status.volumes) {
              if (v.roundRunning && v.progress !== undefined) emit({ type: "progress", volume: v.sourceVolume, progress: v.progress, usedBytes: Number(v.usedBytes) });
            }
            const growing = spec.autoCutover ? growingRound(status.volumes, running) : undefined;
            if (growing !== undefined) {
              await apply({ type: "abort-decided", reason: growing });
              return;
            }
            if (!fresh) continue;
            await failpoint("coordinator.presync.after-round");
          }
        }
        const prediction = predictNow(volumes, costsNow);
        const decision = decidePresync(prediction, {
          autoCutover: spec.autoCutover,
          maxDowntimeMs: spec.maxDowntimeMs,
          cutoverRequested,
          cutoverTimeReached: timeReached,
        });
        if (prediction !== undefined) emit({ type: "prediction", prediction, decision, costs: costsNow });
        if (decision.action === "cutover") {
          predictedDowntimeMs = prediction?.downtimeMs;
          await apply({ type: "cutover-decided", why: decision.why, predictedDowntimeMs: prediction?.downtimeMs });
          return;
        }
        refusals = decision.action === "refuse" ? refusals + 1 : 0;
        const clearlyDiverging = prediction?.convergence.kind === "diverging" && prediction.dirtyBytesPerSecond >= CLEAR_DIVERGENCE * prediction.throughputBytesPerSecond;
        if (decision.action === "refuse" && spec.autoCutover && (refusals >= REFUSALS_BEFORE_ABORT || clearlyDiverging)) {
          await apply({ type: "abort-decided", reason: `cutover refused: ${decision.why} (${decision.hint})` });
          return;
        }
        if (decision.why !== lastWhy && decision.action !== "continue") message(decision.action === "refuse" ? `${decision.why}; ${decision.hint}` : decision.why);
        lastWhy = decision.why;
      }
      throwIfAborted(detachSignal);
    } finally {
      stop.abort();
      inputs = undefined;
      if (timer !== undefined) clearTimeout(timer);
      detachSignal?.removeEventListener("abort", onDetach);
    }
  }

  /**
   * A background round that runs so much longer than the previous one that pre-copy cannot converge: the reason to
   * refuse now, or undefined. Waiting for the round to end would take longer still (each diverging round is longer
   * than the last), which is what an operator who asked for --auto-cutover must not sit through.
   */
  function growingRound(statuses: readonly VolumeStatus[], runningRounds: Map<string, { round: number; startedAtMs: number; bytes: number }>): string | undefined {
    const now = Date.now();
    for (const v of statuses) {
      const seen = observed.get(v.sourceVolume) ?? [];
      if (!v.roundRunning || v.progress === undefined) {
        runningRounds.delete(v.sourceVolume);
        continue;
      }
      const bytes = Number(v.progress.bytes);
      const current = runningRounds.get(v.sourceVolume);
      // A new round, or the same one restarted (a new rate, an agent restart): its clock starts now.
      if (current === undefined || current.round !== seen.length || bytes < current.bytes) {
        runningRounds.set(v.sourceVolume, { round: seen.length, startedAtMs: now, bytes });
        continue;
      }
      current.bytes = bytes;
      const previous = seen.at(-1);
      if (previous === undefined) continue; // the full copy: nothing to compare it with
      const previousMs = Number(previous.round.durationMs) + Math.max(current.startedAtMs - previous.endedAtMs, 0);
      const elapsedMs = now - current.startedAtMs;
      if (elapsedMs <= 2 * previousMs + GROWING_ROUND_SLACK_MS) continue;
      const sendingBytesPerSecond = (bytes * 1000) / Math.max(elapsedMs, 1);
      const limit = bandwidth > 0 ? `the bandwidth limit is ${formatBytes(bandwidth)}/s` : "the bandwidth is unlimited";
      return (
        `cutover refused: pre-copy cannot converge: round ${seen.length} of ${v.sourceVolume} has run ${formatDuration(elapsedMs)}, more than twice round ${seen.length - 1} ` +
        `(${formatDuration(previousMs)} with the gap before it), moving ${formatBytes(sendingBytesPerSecond)}/s: the app writes faster than a round moves data (${limit}) ` +
        `(raise the bandwidth limit (theseus migrate --bandwidth, theseus set-bandwidth), migrate at a quieter hour, or run \`theseus cutover ID\` and accept a longer downtime)`
      );
    }
    return undefined;
  }

  /** Journals and emits the rounds the status reports that were not seen yet; true when there was one. */
  async function takeRounds(statuses: readonly VolumeStatus[], volumes: readonly VolumePairRef[]): Promise<boolean> {
    let fresh = false;
    for (const v of statuses) {
      if (!volumes.some((p) => p.sourceVolume === v.sourceVolume)) continue;
      const seen = observed.get(v.sourceVolume) ?? [];
      // Rounds that ended while nobody watched (a resumed coordinator, a slow status stream) arrive together. RoundStats
      // carries no end time, so they are placed back to back, ending now: stamped all with one time, the write rate
      // between their scans came out as their bytes over a few hundred milliseconds (6 MiB/s for an app writing 0.4)
      // and a converged pre-sync was refused as diverging.
      const unseen = v.rounds.slice(seen.length);
      const now = Date.now();
      let laterMs = unseen.reduce((sum, r) => sum + Number(r.durationMs), 0);
      const floorMs = seen.at(-1)?.endedAtMs ?? 0;
      for (const round of unseen) {
        laterMs -= Number(round.durationMs);
        seen.push({ round, endedAtMs: Math.max(now - laterMs, floorMs) });
        rounds.push({ volume: v.sourceVolume, round });
        await note({ type: "round", volume: v.sourceVolume, final: false, round: toJson(RoundStatsSchema, round) });
        emit({ type: "round", volume: v.sourceVolume, round });
        fresh = true;
      }
      observed.set(v.sourceVolume, seen);
    }
    return fresh;
  }

  function predictNow(volumes: readonly VolumePairRef[], terms: CutoverCosts): Prediction | undefined {
    return predictMigration({
      volumes: volumes.map((v) => observed.get(v.sourceVolume) ?? []),
      quiesceMs: terms.quiesce.ms,
      startupMs: terms.startup.ms,
      cutoverAtMs: Date.now(),
    });
  }

  /** The target's status stream into the queue, re-dialled while the agent restarts. */
  async function pumpWatch(queue: Channel<Input>, signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      try {
        for await (const status of target.watch({ migrationId: spec.id }, { signal })) queue.push({ kind: "status", status });
      } catch (error) {
        if (signal.aborted) return;
        const e = TheseusError.from(error);
        if (e.code !== "unavailable" && e.code !== "deadline_exceeded" && e.code !== "cancelled") {
          queue.push({ kind: "failed", error: e });
          return;
        }
        log.warn({ err: e.message }, "the target's status stream broke; re-dialling");
      }
      try {
        await sleep(RETRY_MS, signal);
      } catch {
        return;
      }
    }
  }

  /** Requests other processes journal (`theseus cutover|abort ID`) into the queue. */
  async function pumpRequests(queue: Channel<Input>, signal: AbortSignal): Promise<void> {
    try {
      for await (const record of followJournal(options.home, spec.id, options.journalOffset, REQUEST_POLL_MS, signal)) {
        if (record.type !== "request") continue;
        queue.push(record.request === "abort" ? { kind: "abort", reason: record.reason } : { kind: "cutover" });
      }
    } catch (error) {
      if (!signal.aborted) queue.push({ kind: "failed", error });
    }
  }

  /** Before the commit decision a request to abort is honoured between cutover steps. */
  async function abortIfRequested(): Promise<boolean> {
    if (abortRequest === undefined) return false;
    await apply({ type: "abort-decided", reason: abortRequest });
    return true;
  }

  async function stepPrepare(): Promise<void> {
    await failpoint("coordinator.before-prepare");
    if (await abortIfRequested()) return;
    // A vote is idempotent and nothing is quiesced yet, so an agent that is unreachable for a moment (restarted during
    // pre-sync, while our channel to it is still in its reconnect back-off) is retried, not a reason to abort: a CI
    // run aborted a migration on one ECONNREFUSED seconds after the target agent was back.
    const vote = (who: string, client: typeof source): Promise<Awaited<ReturnType<typeof source.prepare>>> =>
      untilReachable(() => client.prepare({ migrationId: spec.id }, call()), (e) => e, `Prepare on the ${who}`);
    const [sourceVote, targetVote] = await Promise.all([vote("source", source), vote("target", target)]);
    const no = [
      ...(sourceVote.yes ? [] : [`the source (${spec.from.name}) votes no: ${sourceVote.reason}`]),
      ...(targetVote.yes ? [] : [`the target (${spec.to.name}) votes no: ${targetVote.reason}`]),
    ];
    if (no.length > 0) {
      await apply({ type: "abort-decided", reason: no.join("; ") });
      return;
    }
    await apply({ type: "prepared" });
  }

  /** Renews the source's lease every third of it while the cutover runs, so that only our silence lets it expire. */
  function startRenewing(): void {
    if (renewal !== undefined) return;
    const controller = new AbortController();
    renewal = controller;
    const leaseSeconds = Math.ceil(spec.leaseMs / 1000);
    void (async () => {
      while (!controller.signal.aborted) {
        try {
          await sleep(spec.leaseMs / 3, controller.signal);
          await source.renew({ migrationId: spec.id, leaseSeconds }, { timeoutMs: spec.leaseMs / 3, signal: controller.signal });
        } catch (error) {
          if (controller.signal.aborted) return;
          log.warn({ err: TheseusError.from(error).message }, "renewing the source's lease failed; retrying");
        }
      }
    })();
  }

  function stopRenewing(): void {
    renewal?.abort();
    renewal = undefined;
  }

  async function stepQuiesce(): Promise<void> {
    await failpoint("coordinator.before-quiesce");
    if (await abortIfRequested()) return;
    startRenewing();
    // Quiesce is idempotent, and a connection lost while it runs (its answer with it) is no reason to give up the
    // migration: it is retried as long as an agent is given to come back. Waiting costs the app nothing: a source
    // that hears nothing restores itself when its lease runs out, and says so to the next retry, which then aborts
    // with that reason (the first drop aborted at once, naming a connection reset).
    const quiesced = await untilReachable(
      () => source.quiesce({ migrationId: spec.id, timeoutSeconds: QUIESCE_TIMEOUT_MS / 1000 }, call({ timeoutMs: QUIESCE_TIMEOUT_MS + CALL_TIMEOUT_MS })),
      (e) => e,
      "Quiesce on the source",
    );
    await apply({ type: "quiesced", durationMs: Number(quiesced.durationMs) });
  }

  async function stepFinalRound(): Promise<void> {
    startRenewing();
    await failpoint("coordinator.before-final-round");
    if (await abortIfRequested()) return;
    const final = await target.finalRound({ migrationId: spec.id }, call({ timeoutMs: QUIESCE_TIMEOUT_MS }));
    const mismatches: string[] = [];
    for (const v of final.volumes) {
      const last = v.rounds.at(-1);
      if (last === undefined) {
        mismatches.push(`${v.sourceVolume}: the final round reported no statistics`);
        continue;
      }
      rounds.push({ volume: v.sourceVolume, round: last });
      await note({ type: "round", volume: v.sourceVolume, final: true, round: toJson(RoundStatsSchema, last) });
      emit({ type: "round", volume: v.sourceVolume, round: last });
      if (last.sourceDigest.length === 0 || !Buffer.from(last.sourceDigest).equals(Buffer.from(last.targetDigest))) {
        mismatches.push(`${v.sourceVolume}: the source's digest ${hex(last.sourceDigest)} differs from the target's ${hex(last.targetDigest)}`);
      }
    }
    if (final.volumes.length === 0 && state.phase === "final-round" && state.volumes.length > 0) mismatches.push("the target's final round reported no volumes");
    if (mismatches.length > 0) {
      await apply({ type: "abort-decided", reason: `the copies differ, so nothing is committed: ${mismatches.join("; ")}` });
      return;
    }
    await failpoint("coordinator.before-commit-decision");
    if (await abortIfRequested()) return;
    await apply({ type: "commit-decided" });
    await failpoint("coordinator.after-commit-decision");
  }

  async function stepCommitSource(): Promise<void> {
    startRenewing();
    const answer = await rollForward("Commit on the source", () => source.commit({ migrationId: spec.id, timeoutSeconds: CALL_TIMEOUT_MS / 1000 }, call()));
    const phase = answer.status?.phase ?? "";
    stopRenewing();
    if (phase === "aborted") {
      const why = answer.status?.errorMessage ?? "";
      await apply({ type: "source-aborted", reason: `the source restored itself before it acknowledged the commit${why === "" ? " (its lease ran out)" : `: ${why}`}` });
      return;
    }
    if (phase !== "committed") throw new TheseusError("protocol", `the source answered Commit with phase "${phase}", not committed or aborted`, { hint: `run \`theseus resume ${spec.id}\` to ask again` });
    await apply({ type: "source-committed" });
    await failpoint("coordinator.after-source-commit");
  }

  async function stepCommitTarget(): Promise<void> {
    const readyTimeoutMs = spec.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS;
    const answer = await rollForward("Commit on the target", () =>
      target.commit({ migrationId: spec.id, timeoutSeconds: Math.ceil(readyTimeoutMs / 1000) }, call({ timeoutMs: readyTimeoutMs + CALL_TIMEOUT_MS })),
    );
    const phase = answer.status?.phase ?? "";
    // Rolled back already (a coordinator that died after the target gave up): finish the rollback.
    if (phase === "aborting" || phase === "aborted") {
      await apply({ type: "target-rolled-back", reason: rolledBack(answer.status?.errorMessage ?? "") });
      return;
    }
    if (phase === "committing" && (answer.status?.errorMessage ?? "") !== "") {
      await rollBackOrExplain(answer.status?.errorMessage ?? "");
      return;
    }
    if (phase !== "committed") {
      throw new TheseusError("failed_precondition", `the source is fenced (committed), but the target answered Commit with phase "${phase}": ${answer.status?.errorMessage ?? ""}`, {
        hint: `the data is complete on the target; fix what keeps its workloads from starting, then \`theseus resume ${spec.id}\``,
      });
    }
    measuredDowntimeMs = quiesceStartedAtMs === undefined ? undefined : Date.now() - quiesceStartedAtMs;
    await apply({ type: "target-committed", measuredDowntimeMs });
    await failpoint("coordinator.after-target-commit");
    // A copy leaves the source running: its own application, unquiesced, beside the clone.
    if (spec.mode === "copy") await finishParticipants();
  }

  function rolledBack(why: string): string {
    return `rolled back to the source after the commit point: ${why === "" ? "the target did not become ready" : why}; the target took no write, so the source lost nothing and runs again`;
  }

  /**
   * The target did not become ready in time. Rolling back loses nothing only if the target took no write: the
   * target proves that itself (its workloads stopped, every volume unchanged since the final round) and gives up;
   * only then is the rollback journaled and the source told. Otherwise nothing is undone and the operator decides.
   */
  async function rollBackOrExplain(why: string): Promise<void> {
    message(`the target did not become ready: ${why}; rolling back if it took no write`);
    try {
      await rollForward("Rollback on the target", () => target.abort({ migrationId: spec.id, reason: rolledBack(why), rollback: true }, call({ timeoutMs: QUIESCE_TIMEOUT_MS + CALL_TIMEOUT_MS })));
    } catch (error) {
      const e = TheseusError.from(error);
      throw new TheseusError(
        "failed_precondition",
        `migration ${spec.id} is past its commit point and the target (${spec.to.name}) did not become ready: ${why}. It was not rolled back: ${e.message}. ` +
          `The source (${spec.from.name}) is fenced and scaled to zero; the data is complete on the target`,
        { cause: e, hint: `fix what keeps the target's workloads from becoming ready, then \`theseus resume ${spec.id}\` waits for them again; or choose by hand which copy to keep` },
      );
    }
    await apply({ type: "target-rolled-back", reason: rolledBack(why) });
  }

  async function finishParticipants(): Promise<void> {
    await rollForward("Finish on the source", () => source.finish({ migrationId: spec.id }, call()));
    await rollForward("Finish on the target", () => target.finish({ migrationId: spec.id }, call()));
    await apply({ type: "finished" });
  }

  /** After the commit decision there is no going back: an unreachable agent is waited for, then left to resume. */
  async function rollForward<T>(what: string, attempt: () => Promise<T>): Promise<T> {
    return untilReachable(attempt, (e) =>
      new TheseusError(e.code, `${what} failed after the commit decision: ${e.message}`, { cause: e, hint: `the migration can only go forward now: when the agent is back, run \`theseus resume ${spec.id}\`` }),
      what,
    );
  }

  /** Retries while the agent is unreachable (unavailable, deadline_exceeded), with back-off, for AGENT_RETURN_MS. */
  async function untilReachable<T>(attempt: () => Promise<T>, giveUp: (e: TheseusError) => TheseusError, what: string): Promise<T> {
    const deadline = Date.now() + AGENT_RETURN_MS;
    for (let i = 1, delayMs = RETRY_MS; ; i++, delayMs = Math.min(delayMs * 2, RETRY_MAX_MS)) {
      try {
        return await attempt();
      } catch (error) {
        const e = TheseusError.from(error);
        const transient = e.code === "unavailable" || e.code === "deadline_exceeded";
        if (!transient || Date.now() + delayMs > deadline) throw giveUp(e);
        log.warn({ err: e.message, attempt: i }, `${what} failed; retrying`);
        await sleep(delayMs);
      }
    }
  }

  async function stepAbort(placement: Placement | undefined, reason: string, rollback: boolean): Promise<void> {
    stopRenewing();
    await failpoint("coordinator.before-abort");
    message(`aborting: ${reason}`);
    // The source first: unquiescing it ends the downtime. A participant that never began has nothing to undo. A
    // rollback goes the other way: the target's workloads ran, and must be gone before the source's start (single writer).
    const order = rollback
      ? ([
          ["target", target],
          ["source", source],
        ] as const)
      : ([
          ["source", source],
          ["target", target],
        ] as const);
    for (const [who, client] of order) {
      await retrying(`Abort on the ${who}`, async () => {
        try {
          await client.abort({ migrationId: spec.id, reason, rollback }, call({ timeoutMs: QUIESCE_TIMEOUT_MS + CALL_TIMEOUT_MS }));
        } catch (error) {
          if (TheseusError.from(error).code !== "not_found") throw error;
        }
      });
    }
    // Staging may have run without the target's Begin (the participant unstages its own): remove it either way.
    if (placement !== undefined) {
      await retrying("Unstage on the target", () => unstageMigration({ to: spec.to, namespace: placement.targetNamespace, migrationId: spec.id, tls }));
    }
    await apply({ type: "aborted" });
  }

  async function retrying<T>(what: string, attempt: () => Promise<T>): Promise<T> {
    return untilReachable(attempt, (e) =>
      new TheseusError(e.code, `${what} failed while aborting: ${e.message}`, { cause: e, hint: `run \`theseus abort ${spec.id}\` again once the agent is reachable` }),
      what,
    );
  }

  async function step(): Promise<void> {
    const s = state;
    switch (s.phase) {
      case "planning":
        return stepPlan();
      case "staging":
        return stepStage();
      case "beginning":
        return stepBegin(s.placement, s.volumes);
      case "presyncing":
        return stepPresync(s.volumes);
      case "preparing":
        return stepPrepare();
      case "quiescing":
        return stepQuiesce();
      case "final-round":
        return stepFinalRound();
      case "committing-source":
        return stepCommitSource();
      case "committing-target":
        return stepCommitTarget();
      case "aborting":
        return stepAbort(s.placement, s.reason, s.rollback === true);
      case "committed":
      case "aborted":
      case "finished":
        return;
    }
  }

  async function run(): Promise<MigrationOutcome> {
    try {
      while (!isEnded(state)) {
        if (abortRequest !== undefined && canAbort(state)) await apply({ type: "abort-decided", reason: abortRequest });
        const before = state.phase;
        const cuttingOver = before === "preparing" || before === "quiescing" || before === "final-round" || before === "committing-source" || before === "committing-target";
        if (!cuttingOver && before !== "aborting") throwIfAborted(detachSignal);
        try {
          await step();
        } catch (error) {
          // Before the commit decision any failure aborts, with the failure as the reason; detaching does not.
          const e = TheseusError.from(error);
          if (detachSignal?.aborted === true && !cuttingOver) throw e;
          if (!canAbort(state)) throw e;
          log.warn({ err: e.message, phase: state.phase }, "step failed; aborting");
          await apply({ type: "abort-decided", reason: `${state.phase} failed: ${e.message}${e.hint === undefined ? "" : ` (${e.hint})`}` });
        }
      }
      return outcome();
    } catch (error) {
      const e = TheseusError.from(error);
      if (detachSignal?.aborted === true && e.code === "cancelled") {
        throw new TheseusError("cancelled", `stopped following migration ${spec.id} in phase ${state.phase}`, { cause: e, hint: `the agents carry on; \`theseus resume ${spec.id}\` drives it again` });
      }
      throw e;
    } finally {
      stopRenewing();
      source.close();
      target.close();
      await journal.close().catch(() => undefined);
      await options.lock.release().catch(() => undefined);
    }
  }

  function outcome(): MigrationOutcome {
    const end = Date.now();
    const base = {
      id: spec.id,
      timeline: timeline.map((t, i) => ({ ...t, durationMs: (timeline[i + 1]?.startedAtMs ?? end) - t.startedAtMs })),
      rounds,
      predictedDowntimeMs,
    };
    if (state.phase === "aborted") return { ...base, outcome: "aborted", reason: state.reason, measuredDowntimeMs: undefined };
    return { ...base, outcome: "committed", measuredDowntimeMs };
  }

  // Where the driver starts: "planning" for a new migration, the journal's phase for a resumed one.
  emit({ type: "phase", phase: state.phase, atMs: Date.now() });
  const result = run();
  const outcomePromise = result.finally(() => events.close());
  // The caller may only await `outcome`; an unobserved rejection must not take the process down.
  outcomePromise.catch(() => undefined);

  return {
    id: spec.id,
    events,
    outcome: outcomePromise,
    async cutover() {
      if (state.phase !== "presyncing" && state.phase !== "beginning" && state.phase !== "staging" && state.phase !== "planning") {
        if (isEnded(state) || state.phase === "aborting") throw new TheseusError("failed_precondition", `migration ${spec.id} is ${state.phase}: there is nothing to cut over`, { hint: "see it with `theseus status ID`" });
        return; // already cutting over
      }
      // Before pre-sync the request waits in the journal, where pre-sync's request reader finds it.
      if (inputs !== undefined) inputs.push({ kind: "cutover" });
      else await note({ type: "request", request: "cutover" });
    },
    async abort(reason) {
      if (!canAbort(state)) {
        if (state.phase === "aborting" || state.phase === "aborted") return;
        throw new TheseusError("failed_precondition", `migration ${spec.id} is past its commit decision (${state.phase}): it can only go forward`, {
          hint: `let it finish, or after a crash run \`theseus resume ${spec.id}\``,
        });
      }
      abortRequest = reason;
      inputs?.push({ kind: "abort", reason });
    },
  };
}

function hex(bytes: Uint8Array): string {
  return bytes.length === 0 ? "(none)" : Buffer.from(bytes).subarray(0, 8).toString("hex");
}
