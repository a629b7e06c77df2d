// Medians, ratios and the issue's targets, printed as one table per dataset and phase with PASS/MISS beside each target.
import { formatBytes, formatDuration } from "../../common/index.js";
import type { ContenderId, Phase, RoundResult } from "./contenders.js";
import type { DatasetName } from "./datasets.js";

/** One measured round. `case` is the phase, or "shaped" for the full copy across the shaped link. */
export interface Sample {
  readonly dataset: DatasetName;
  readonly case: Phase | "shaped";
  readonly contender: ContenderId;
  readonly run: number;
  /** Bytes the mutation changed before this round (incremental rounds only). */
  readonly bytesChanged: number | undefined;
  /** The 1-minute load average when the round started: above the core count, other work competed for the CPU. */
  readonly loadAverage: number;
  readonly result: RoundResult;
}

export interface Summary {
  readonly dataset: DatasetName;
  readonly case: Phase | "shaped";
  readonly contender: ContenderId;
  readonly runs: number;
  readonly wallMs: number;
  /** The fastest and slowest run: a wide spread means noise (load, writeback), not a property of the contender. */
  readonly wallMinMs: number;
  readonly wallMaxMs: number;
  readonly processWallMs: number;
  readonly wireBytes: number | undefined;
  readonly toolWireBytes: number | undefined;
  readonly wirePerChanged: number | undefined;
  readonly bytesChanged: number | undefined;
  /** The highest peak over the runs: a peak is a bound, not a typical value. */
  readonly peakRssSource: number | undefined;
  readonly peakRssTarget: number | undefined;
  /** Median user + system CPU seconds of both sides (Theseus: the whole command, start-up included). */
  readonly cpuSeconds: number | undefined;
}

export interface TargetCheck {
  readonly dataset: DatasetName;
  readonly case: Phase | "shaped";
  readonly target: string;
  readonly limit: number;
  readonly value: number | undefined;
  /** "PASS", "MISS", or why it cannot be judged ("n/a (theseus did not run)"). */
  readonly verdict: string;
}

export function median(values: readonly number[]): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

function defined(values: ReadonlyArray<number | undefined>): number[] {
  return values.filter((v): v is number => v !== undefined);
}

function max(values: ReadonlyArray<number | undefined>): number | undefined {
  const present = defined(values);
  return present.length === 0 ? undefined : Math.max(...present);
}

export function summarize(samples: readonly Sample[]): Summary[] {
  const groups = new Map<string, Sample[]>();
  for (const sample of samples) {
    const key = `${sample.dataset}/${sample.case}/${sample.contender}`;
    groups.set(key, [...(groups.get(key) ?? []), sample]);
  }
  return [...groups.values()].map((group) => {
    const first = group[0] as Sample;
    const wire = (s: Sample): number | undefined => s.result.wireBytes ?? s.result.toolWireBytes;
    return {
      dataset: first.dataset,
      case: first.case,
      contender: first.contender,
      runs: group.length,
      wallMs: median(group.map((s) => s.result.wallMs)) as number,
      wallMinMs: Math.min(...group.map((s) => s.result.wallMs)),
      wallMaxMs: Math.max(...group.map((s) => s.result.wallMs)),
      processWallMs: median(group.map((s) => s.result.processWallMs)) as number,
      wireBytes: median(defined(group.map((s) => s.result.wireBytes))),
      toolWireBytes: median(defined(group.map((s) => s.result.toolWireBytes))),
      wirePerChanged: median(defined(group.map((s) => {
        const w = wire(s);
        return w === undefined || s.bytesChanged === undefined || s.bytesChanged === 0 ? undefined : w / s.bytesChanged;
      }))),
      bytesChanged: median(defined(group.map((s) => s.bytesChanged))),
      peakRssSource: max(group.map((s) => s.result.peakRss.source)),
      peakRssTarget: max(group.map((s) => s.result.peakRss.target)),
      cpuSeconds: median(defined(group.map((s) => s.result.cpuSeconds))), // absent in runs saved before the column
    };
  });
}

const MiB = 2 ** 20;

/** The issue's targets (issue 4, "Targets"), judged on medians of the same run. */
export function checkTargets(
  summaries: readonly Summary[],
  linkRateBitsPerSecond: number,
  /** `${dataset}/${contender}` pairs that failed a round or the verification: their figures earn no PASS. */
  failed: ReadonlySet<string> = new Set(),
  /** The datasets' --scale: the final round's 0.5 s is for the full-size dataset and scales with it. */
  scale = 1,
): TargetCheck[] {
  const find = (dataset: DatasetName, c: Phase | "shaped", contender: ContenderId): Summary | undefined =>
    failed.has(`${dataset}/${contender}`) ? undefined : summaries.find((s) => s.dataset === dataset && s.case === c && s.contender === contender);
  const checks: TargetCheck[] = [];
  const cases = [...new Set(summaries.map((s) => `${s.dataset}/${s.case}`))].map((k) => k.split("/") as [DatasetName, Phase | "shaped"]);

  const ratio = (dataset: DatasetName, c: Phase | "shaped", versus: ContenderId, limit: number): void => {
    const theseus = find(dataset, c, "theseus");
    const peer = find(dataset, c, versus);
    checks.push(judge(dataset, c, `wall <= ${limit}x ${versus}`, limit,
      theseus === undefined || peer === undefined ? undefined : theseus.wallMs / peer.wallMs,
      theseus === undefined ? "theseus did not run or failed" : `${versus} did not run or failed`));
  };
  const wirePerChanged = (dataset: DatasetName, limit: number): void => {
    const theseus = find(dataset, "incremental", "theseus");
    checks.push(judge(dataset, "incremental", `wire <= ${limit}x bytes changed`, limit, theseus?.wirePerChanged, "theseus did not run or failed"));
  };

  for (const [dataset, c] of cases) {
    if (dataset === "mixed" && c === "full") ratio(dataset, c, "rsync-tls", 0.8);
    if (dataset === "mixed" && c === "incremental") {
      ratio(dataset, c, "rsync-tls", 0.5);
      wirePerChanged(dataset, 1.5);
    }
    if (dataset === "bigfile" && c === "incremental") {
      ratio(dataset, c, "rsync-tls", 0.4);
      wirePerChanged(dataset, 1.5);
    }
    if (dataset === "final" && c === "incremental") {
      // Issue 12: the cutover's round, in long-running agents (the round's own time, not process start-up).
      const theseus = find(dataset, c, "theseus");
      const limitMs = Math.round(500 * scale);
      checks.push(judge(dataset, c, `round <= ${limitMs} ms${scale === 1 ? "" : ` (0.5 s x scale ${scale})`}`, limitMs,
        theseus?.wallMs, "theseus did not run or failed"));
    }
    if (c === "no-change") ratio(dataset, c, "rsync", 1.2);
    if (c === "lost-cache") ratio(dataset, c, "rsync-tls", 1.0);
    if (dataset === "smallfiles" && c === "full") ratio(dataset, c, "rsync-tls", 0.8);
    if (dataset === "smallfiles" && c !== "shaped") {
      const theseus = find(dataset, c, "theseus");
      const peak = max([theseus?.peakRssSource, theseus?.peakRssTarget]);
      checks.push(judge(dataset, c, "peak RSS per agent <= 160 MiB", 160, peak === undefined ? undefined : peak / MiB, "theseus did not run or failed"));
    }
    if (c === "shaped") {
      ratio(dataset, c, "rsync-tls-zstd", 0.9);
      const theseus = find(dataset, c, "theseus");
      const floorMs = theseus?.wireBytes === undefined ? undefined : ((theseus.wireBytes * 8) / linkRateBitsPerSecond) * 1000;
      checks.push(judge(dataset, c, "wall <= 1.1x (wire bytes / link rate)", 1.1,
        theseus === undefined || floorMs === undefined ? undefined : theseus.wallMs / floorMs, "theseus did not run or failed"));
    }
  }
  return checks;
}

function judge(dataset: DatasetName, c: Phase | "shaped", target: string, limit: number, value: number | undefined, missing: string): TargetCheck {
  return { dataset, case: c, target, limit, value, verdict: value === undefined ? `n/a (${missing})` : value <= limit ? "PASS" : "MISS" };
}

const CASE_TITLES: Readonly<Record<Phase | "shaped", string>> = {
  full: "full copy",
  incremental: "incremental round after the mutation",
  "no-change": "round with no change",
  "lost-cache": "incremental round with the source's sync state lost (a new mover pod, an agent restarted elsewhere)",
  shaped: "full copy across the shaped link",
};

const FINAL_ROUND_TITLE = "final round (cutover): 1% of the database's pages rewritten, the small files unchanged";

/** One line on how busy the machine was: timings taken on a loaded machine are not worth quoting. */
export function formatLoad(samples: readonly Sample[], cores: number): string {
  const loads = samples.map((s) => s.loadAverage);
  if (loads.length === 0) return "";
  const low = Math.min(...loads);
  const high = Math.max(...loads);
  const line = `load average during the rounds: ${low.toFixed(2)}-${high.toFixed(2)} on ${cores} cores`;
  return high > cores
    ? `${line}\nWARNING: other processes competed for the CPU; wall times and ratios are unreliable, rerun on an idle machine`
    : line;
}

/** The human-readable report: one table per dataset and case, then its targets. */
export function formatReport(summaries: readonly Summary[], checks: readonly TargetCheck[], labels: ReadonlyMap<ContenderId, string>): string {
  const out: string[] = [];
  const cases = [...new Set(summaries.map((s) => `${s.dataset}/${s.case}`))];
  for (const key of cases) {
    const rows = summaries.filter((s) => `${s.dataset}/${s.case}` === key);
    const first = rows[0] as Summary;
    const reference = rows.find((r) => r.contender === (first.case === "shaped" ? "rsync-tls-zstd" : "rsync-tls"));
    const changed = first.bytesChanged === undefined ? "" : `, ${formatBytes(first.bytesChanged)} changed`;
    const title = first.dataset === "final" && first.case === "incremental" ? FINAL_ROUND_TITLE : CASE_TITLES[first.case];
    out.push("", `${first.dataset} - ${title} (median of ${first.runs}${changed})`);
    const table: string[][] = [["contender", "wall", "min-max", `vs ${reference?.contender ?? "rsync-tls"}`, "wire", "wire/changed", "CPU", "peak RSS src / tgt"]];
    for (const row of rows) {
      table.push([
        labels.get(row.contender) ?? row.contender,
        formatDuration(row.wallMs),
        row.runs < 2 ? "-" : `${(row.wallMinMs / 1000).toFixed(2)}-${(row.wallMaxMs / 1000).toFixed(2)} s`,
        reference === undefined ? "-" : `${(row.wallMs / reference.wallMs).toFixed(2)}x`,
        row.contender === "tar" ? "(pipe)" : bytes(row.wireBytes ?? row.toolWireBytes),
        row.wirePerChanged === undefined ? "-" : `${row.wirePerChanged.toFixed(2)}x`,
        row.cpuSeconds === undefined ? "-" : `${row.cpuSeconds.toFixed(1)} s`,
        `${bytes(row.peakRssSource)} / ${bytes(row.peakRssTarget)}`,
      ]);
    }
    out.push(...alignColumns(table).map((line) => `  ${line}`));
    for (const row of rows.filter((r) => r.processWallMs > r.wallMs * 1.01)) {
      out.push(`  (${row.contender}: the round took ${formatDuration(row.wallMs)}; the command, with start-up, ${formatDuration(row.processWallMs)})`);
    }
    for (const check of checks.filter((c) => `${c.dataset}/${c.case}` === key)) {
      const value = check.value === undefined ? "-"
        : check.target.includes("MiB") ? `${check.value.toFixed(0)} MiB`
        : check.target.includes(" ms") ? `${check.value.toFixed(0)} ms`
        : `${check.value.toFixed(2)}x`;
      out.push(`  target: ${check.target.padEnd(40)} ${value.padStart(9)}  ${check.verdict}`);
    }
  }
  return out.join("\n");
}

function bytes(value: number | undefined): string {
  return value === undefined ? "-" : formatBytes(value);
}

function alignColumns(rows: readonly string[][]): string[] {
  const widths = (rows[0] ?? []).map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows.map((r) => r.map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0))).join("  "));
}
