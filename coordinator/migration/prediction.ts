// Convergence and downtime prediction for iterative pre-copy (the model of Clark et al.'s Xen live migration, applied
// to volumes). Pure functions over the rounds' statistics, so that the policy can be tested without a cluster.
//
// A round costs a fixed part (walking and indexing both volumes: proportional to the entries, not to what changed)
// plus the changed bytes at the round's throughput. While the app runs it dirties D bytes per second, so the next
// round has to carry what was dirtied while the previous one ran. Rounds shrink geometrically towards the steady
// state V* = D * fixed / (1 - D / T) and never below it; when D >= T they grow instead and pre-copy cannot converge.
// The final round runs with the app stopped and carries what was dirtied since the last round scanned the files, so
// the downtime is quiesce + final round + the target's start-up.

/** What the prediction needs of one finished pre-copy round (from RoundStats). */
export interface RoundObservation {
  /** Bytes of file data the round had to send (changed files and blocks), before compression. */
  readonly bytesChanged: number;
  readonly durationMs: number;
  /** Bytes the app changed per second between the previous round's end and this one's. */
  readonly dirtyBytesPerSecond: number;
  /** When the round ended (epoch ms). */
  readonly endedAtMs: number;
  /** Bytes the round put on the wire (after compression), when known. */
  readonly wireBytes?: number;
}

export interface PredictionInputs {
  readonly rounds: readonly RoundObservation[];
  /** Measured or estimated time from the quiesce request until the last writer is gone. */
  readonly quiesceMs: number;
  /** Measured or estimated time from activation until the target's workloads are ready. */
  readonly startupMs: number;
  /** When the cutover would start (epoch ms); the final round carries what is dirtied until the writers stop. */
  readonly cutoverAtMs: number;
}

export type Convergence =
  /** Another pre-copy round is expected to shrink the final round by a useful margin. */
  | { readonly kind: "improving" }
  /** Rounds are at their steady state: more of them will not shorten the cutover. */
  | { readonly kind: "converged" }
  /** The app dirties data at least as fast as a round moves it: rounds grow, the cutover only gets longer. */
  | { readonly kind: "diverging"; readonly dirtyBytesPerSecond: number; readonly throughputBytesPerSecond: number }
  /** Not enough rounds yet to say. */
  | { readonly kind: "unknown" };

export interface Prediction {
  /** The terms of the downtime as they went in, so that a report can show what the prediction was made of. */
  readonly quiesceMs: number;
  readonly startupMs: number;
  /** Fitted fixed cost of a round (ms) and its throughput for changed bytes. */
  readonly fixedMs: number;
  readonly throughputBytesPerSecond: number;
  readonly dirtyBytesPerSecond: number;
  /** Bytes the final round is expected to carry, and how long it takes. */
  readonly finalRoundBytes: number;
  readonly finalRoundMs: number;
  /** quiesce + final round + start-up: how long the app is down. */
  readonly downtimeMs: number;
  readonly convergence: Convergence;
}

/** A round that would shrink the final round by less than this fraction is not worth running. */
const USEFUL_IMPROVEMENT = 0.1;
/** Below this the throughput is taken as unmeasured (a round that sent almost nothing says little about the link). */
const MIN_MEASURED_BYTES = 256 * 1024;

/** How many of the latest incremental rounds the cost fit looks at: the link changes (set-bandwidth, other traffic). */
const RECENT_ROUNDS = 4;

/**
 * Fits `durationMs = fixedMs + bytes / throughput` to the rounds by least squares.
 *
 * The full copy (round 0) may move data at another cost per byte than the incremental rounds do: the volume's first
 * contents compress differently from what the app writes later, and every file is created. Once two recent
 * incremental rounds have carried a measurable amount, only the latest incremental rounds count.
 *
 * The fixed part cannot be negative: when the free fit's intercept is (noise, or rounds that disagree on the cost
 * per byte), the best fit with a fixed part of 0 is the line through the origin. Rounds of one size say nothing
 * about the split: a round that carried almost nothing is all fixed cost, else the fixed part is taken as 0. An
 * earlier fallback took the smallest round that moved data as all fixed cost, which read a full copy that
 * compressed 4:1 next to rounds of the app's records at 2:1 as 10 s of fixed cost and a throughput above the
 * link's: a pre-copy whose rounds doubled looked converged.
 */
export function fitRoundCost(rounds: readonly RoundObservation[]): { fixedMs: number; throughputBytesPerSecond: number } | undefined {
  if (rounds.length === 0) return undefined;
  const all = rounds.map((r) => ({ x: r.bytesChanged, y: Math.max(r.durationMs, 0) }));
  const recent = all.slice(1).slice(-RECENT_ROUNDS);
  const points = recent.filter((p) => p.x >= MIN_MEASURED_BYTES).length >= 2 ? recent : all;
  const largest = points.reduce((a, b) => (b.x > a.x ? b : a));
  const smallest = points.reduce((a, b) => (b.x < a.x ? b : a));
  if (largest.x < MIN_MEASURED_BYTES) return { fixedMs: smallest.y, throughputBytesPerSecond: Number.POSITIVE_INFINITY };
  const n = points.length;
  const meanX = points.reduce((s, p) => s + p.x, 0) / n;
  const meanY = points.reduce((s, p) => s + p.y, 0) / n;
  const sxx = points.reduce((s, p) => s + (p.x - meanX) ** 2, 0);
  const sxy = points.reduce((s, p) => s + (p.x - meanX) * (p.y - meanY), 0);
  if (n >= 2 && sxx > 0 && largest.x - smallest.x >= MIN_MEASURED_BYTES) {
    const slope = sxy / sxx; // ms per byte
    const intercept = meanY - slope * meanX;
    if (slope > 0 && intercept >= 0) return { fixedMs: intercept, throughputBytesPerSecond: 1000 / slope };
    const throughOrigin = points.reduce((s, p) => s + p.x * p.y, 0) / points.reduce((s, p) => s + p.x * p.x, 0);
    if (slope > 0 && throughOrigin > 0) return { fixedMs: 0, throughputBytesPerSecond: 1000 / throughOrigin };
  }
  const fixedMs = smallest.x < MIN_MEASURED_BYTES ? Math.min(smallest.y, largest.y) : 0;
  return { fixedMs, throughputBytesPerSecond: (largest.x * 1000) / Math.max(largest.y - fixedMs, 1) };
}

/**
 * The app's write rate as the rounds saw it: round i carries what was written between round i-1 reading a file and
 * round i reading it again, on average between the two rounds' midpoints (files are read as the walk reaches them).
 * Dividing by the time between the rounds' ends instead, as a round's own statistic does, overstates the rate while
 * rounds shrink: the first incremental round carries a whole full copy's worth of writes in a fraction of its time.
 * The latest three rounds count (the first, full round says nothing about writes); a round without a usable
 * predecessor keeps its own statistic.
 */
export function dirtyRate(rounds: readonly RoundObservation[]): number {
  const rates: number[] = [];
  for (let i = 1; i < rounds.length; i++) {
    const r = rounds[i];
    const previous = rounds[i - 1];
    if (r === undefined || previous === undefined) continue;
    const betweenScansMs = r.endedAtMs - r.durationMs / 2 - (previous.endedAtMs - previous.durationMs / 2);
    rates.push(betweenScansMs > 0 ? (r.bytesChanged * 1000) / betweenScansMs : r.dirtyBytesPerSecond);
  }
  const recent = rates.slice(-3);
  return recent.length === 0 ? 0 : recent.reduce((a, b) => a + b, 0) / recent.length;
}

export function predict(inputs: PredictionInputs): Prediction | undefined {
  const { rounds } = inputs;
  const last = rounds.at(-1);
  const cost = fitRoundCost(rounds);
  if (last === undefined || cost === undefined) return undefined;
  const dirty = dirtyRate(rounds);
  const { fixedMs, throughputBytesPerSecond: throughput } = cost;
  const transferMs = (bytes: number): number => (Number.isFinite(throughput) ? (bytes * 1000) / throughput : 0);

  // The final round carries what was dirtied after the last round read the files: on average from the middle of
  // that round (files are read as the walk reaches them) until the writers stop.
  const gapMs = Math.max(inputs.cutoverAtMs - last.endedAtMs, 0);
  const sinceScanMs = last.durationMs / 2 + gapMs;
  const finalRoundBytes = (dirty * (sinceScanMs + inputs.quiesceMs)) / 1000;
  const finalRoundMs = fixedMs + transferMs(finalRoundBytes);
  const downtimeMs = inputs.quiesceMs + finalRoundMs + inputs.startupMs;

  let convergence: Convergence;
  const ceiling = linkCeiling(rounds);
  if (rounds.length < 2) convergence = { kind: "unknown" };
  else if (dirty >= ceiling) convergence = { kind: "diverging", dirtyBytesPerSecond: dirty, throughputBytesPerSecond: ceiling };
  // The fit says rounds cannot keep up but some round moved data faster than the app writes: the rounds are at
  // their steady state, mostly fixed cost (a fixed part of 0 makes every steady round look as slow as the writes).
  else if (dirty >= throughput) convergence = { kind: "converged" };
  else {
    // Another round R' would carry what is dirtied between the files' last scan and their next one (half of R'
    // on average), so R' = (fixed + D * sinceScan / T) / (1 - D / 2T); the final round after it would carry
    // D * (R' / 2 + quiesce). At the steady state R' equals the last round and nothing is gained.
    const ratio = Number.isFinite(throughput) ? dirty / throughput : 0;
    const nextRoundMs = (fixedMs + ratio * sinceScanMs) / (1 - ratio / 2);
    const finalAfterNextBytes = (dirty * (nextRoundMs / 2 + inputs.quiesceMs)) / 1000;
    convergence = finalAfterNextBytes < finalRoundBytes * (1 - USEFUL_IMPROVEMENT) ? { kind: "improving" } : { kind: "converged" };
  }

  return { quiesceMs: inputs.quiesceMs, startupMs: inputs.startupMs, fixedMs, throughputBytesPerSecond: throughput, dirtyBytesPerSecond: dirty, finalRoundBytes, finalRoundMs, downtimeMs, convergence };
}

/**
 * The fastest any round moved data, in bytes of the app's writes per second: what pre-copy must beat. Divergence is
 * said against it, not against the fit, because a fit cannot tell rounds at their steady state (each one as long as
 * its fixed cost, carrying what the app wrote meanwhile) from rounds that grow: both carry about D bytes per second
 * of their time. The link is measured in wire bytes (the bandwidth limit is on the wire, and the full copy's first
 * contents may compress far better than the app's writes), converted at the compression of the latest rounds.
 */
export function linkCeiling(rounds: readonly RoundObservation[]): number {
  const measured = rounds.filter((r) => r.bytesChanged >= MIN_MEASURED_BYTES && r.durationMs > 0);
  if (measured.length === 0) return Number.POSITIVE_INFINITY;
  const wire = (r: RoundObservation): number => (r.wireBytes !== undefined && r.wireBytes > 0 ? r.wireBytes : r.bytesChanged);
  // The compression of what the app writes: the incremental rounds', once there is one.
  const incremental = rounds.slice(1).filter((r) => r.bytesChanged >= MIN_MEASURED_BYTES);
  const latest = (incremental.length > 0 ? incremental : measured).slice(-RECENT_ROUNDS);
  const wirePerByte = latest.reduce((s, r) => s + wire(r), 0) / latest.reduce((s, r) => s + r.bytesChanged, 0);
  const fastestWire = Math.max(...measured.map((r) => (wire(r) * 1000) / r.durationMs));
  return fastestWire / wirePerByte;
}

/** What to do after a pre-copy round, given the user's cutover policy. */
export type PresyncDecision =
  | { readonly action: "continue"; readonly why: string }
  | { readonly action: "cutover"; readonly why: string }
  | { readonly action: "wait"; readonly why: string }
  | { readonly action: "refuse"; readonly why: string; readonly hint: string };

export interface CutoverPolicy {
  /** Cut over on its own once the predicted downtime fits maxDowntimeMs. */
  readonly autoCutover: boolean;
  readonly maxDowntimeMs: number;
}

export function decideAfterRound(prediction: Prediction | undefined, policy: CutoverPolicy): PresyncDecision {
  if (prediction === undefined || prediction.convergence.kind === "unknown") return { action: "continue", why: "measuring: the prediction needs a second round" };
  const c = prediction.convergence;
  if (c.kind === "diverging") {
    return {
      action: "refuse",
      why: `the app writes ${rate(c.dirtyBytesPerSecond)} but a round moves only ${rate(c.throughputBytesPerSecond)}: pre-copy cannot converge`,
      hint: "raise the bandwidth limit (theseus set-bandwidth), migrate at a quieter hour, or cut over anyway and accept a longer downtime",
    };
  }
  const fits = prediction.downtimeMs <= policy.maxDowntimeMs;
  if (policy.autoCutover && fits) return { action: "cutover", why: `predicted downtime ${ms(prediction.downtimeMs)} is within ${ms(policy.maxDowntimeMs)}` };
  if (c.kind === "improving") return { action: "continue", why: `another round should shorten the final one (now ${ms(prediction.finalRoundMs)})` };
  if (policy.autoCutover) {
    return {
      action: "refuse",
      why: `converged at a predicted downtime of ${ms(prediction.downtimeMs)}, above --max-downtime ${ms(policy.maxDowntimeMs)}`,
      hint: "raise --max-downtime, raise the bandwidth, or run `theseus cutover ID` to accept it",
    };
  }
  return { action: "wait", why: `converged: predicted downtime ${ms(prediction.downtimeMs)}; run \`theseus cutover ID\` when ready` };
}

const ms = (value: number): string => (value < 10_000 ? `${Math.round(value)} ms` : `${(value / 1000).toFixed(1)} s`);
const rate = (bytesPerSecond: number): string =>
  Number.isFinite(bytesPerSecond) ? `${(bytesPerSecond / (1024 * 1024)).toFixed(1)} MiB/s` : "an unmeasured rate";
