// The one place that knows the shape of `theseus sync-dirs --json` output. Field names are read leniently (camelCase,
// snake_case, nested under `stats` or `round`) so that the engine's output can settle without breaking the benchmark.
import { TheseusError } from "../../common/index.js";

export interface TheseusStats {
  readonly durationMs: number | undefined;
  readonly wireBytes: number | undefined;
  readonly bytesChanged: number | undefined;
  readonly entriesScanned: number | undefined;
  readonly entriesChanged: number | undefined;
  readonly peakRssSource: number | undefined;
  readonly peakRssTarget: number | undefined;
  /** Both agents' user + system CPU seconds during the round (sync-dirs measures it per round). */
  readonly cpuSeconds: number | undefined;
  /** The whole object, kept in the JSON results. */
  readonly raw: Record<string, unknown>;
}

/**
 * Reads the statistics: the last line of `stdout` that is a JSON object carrying a duration or a byte count (JSON log
 * lines, pino's for one, may surround it), else the last JSON object line, else the whole output as one JSON document.
 */
export function readTheseusStats(stdout: string): TheseusStats {
  let fallback: TheseusStats | undefined;
  for (const line of stdout.trim().split("\n").reverse()) {
    if (!line.trimStart().startsWith("{")) continue;
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch {
      continue;
    }
    if (typeof parsed !== "object" || parsed === null) continue;
    const stats = adapt(parsed as Record<string, unknown>);
    if (stats.durationMs !== undefined || stats.wireBytes !== undefined) return stats;
    fallback ??= stats;
  }
  if (fallback !== undefined) return fallback;
  // Multi-line (pretty-printed) JSON.
  try {
    const parsed: unknown = JSON.parse(stdout);
    if (typeof parsed === "object" && parsed !== null) return adapt(parsed as Record<string, unknown>);
  } catch {
    // fall through
  }
  throw new TheseusError("protocol", "theseus sync-dirs --json printed no JSON object", {
    hint: `its output began with: ${stdout.slice(0, 200)}`,
  });
}

function adapt(raw: Record<string, unknown>): TheseusStats {
  const scope = [raw, asRecord(raw["stats"]), asRecord(raw["round"])].filter((r) => r !== undefined);
  const num = (...names: string[]): number | undefined => {
    for (const record of scope) {
      for (const name of names) {
        const value = record[name];
        if (typeof value === "number" && Number.isFinite(value)) return value;
        if (typeof value === "string" && /^\d+$/.test(value)) return Number(value); // int64 as string
      }
    }
    return undefined;
  };
  const rss = scope.map((r) => asRecord(r["peakRssBytes"] ?? r["peak_rss_bytes"])).find((r) => r !== undefined);
  const rssOf = (side: string): number | undefined => {
    const value = rss?.[side];
    return typeof value === "number" ? value : undefined;
  };
  return {
    durationMs: num("durationMs", "duration_ms"),
    wireBytes: num("wireBytes", "wire_bytes", "bytesOnWire", "bytes_on_wire"),
    bytesChanged: num("bytesChanged", "bytes_changed"),
    entriesScanned: num("entriesScanned", "entries_scanned"),
    entriesChanged: num("entriesChanged", "entries_changed"),
    // sync-dirs prints sourcePeakRssBytes / targetPeakRssBytes (each agent is its own process).
    peakRssSource: num("sourcePeakRssBytes") ?? rssOf("source"),
    peakRssTarget: num("targetPeakRssBytes") ?? rssOf("target"),
    cpuSeconds: num("cpuSeconds"),
    raw,
  };
}

function asRecord(value: unknown): Record<string, unknown> | undefined {
  return typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
}
