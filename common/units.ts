// Human sizes and rates for flags (`--bandwidth 50MiB/s`) and for output. Sizes are bytes, durations milliseconds.
import { TheseusError } from "./errors.js";

const UNITS: Readonly<Record<string, number>> = {
  "": 1, b: 1,
  k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9, t: 1e12, tb: 1e12,
  ki: 2 ** 10, kib: 2 ** 10, mi: 2 ** 20, mib: 2 ** 20, gi: 2 ** 30, gib: 2 ** 30, ti: 2 ** 40, tib: 2 ** 40,
};

/** Parses "4096", "64KiB", "1.5GB", "200Mbit" (bits are divided by 8) into bytes. */
export function parseBytes(text: string, what = "size"): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*?)(bit|bits)?\s*$/.exec(text);
  const unit = match?.[2]?.toLowerCase() ?? "";
  const factor = UNITS[unit];
  if (match === null || factor === undefined) {
    throw new TheseusError("invalid_argument", `cannot read ${what} "${text}"`, {
      hint: "write a number with an optional unit: 4096, 64KiB, 50MiB, 1.5GB, 200Mbit",
    });
  }
  const bytes = Number(match[1]) * factor;
  return Math.round(match[3] === undefined ? bytes : bytes / 8);
}

/** Parses a rate such as "50MiB/s", "200Mbit/s" or "0" / "unlimited" (returns 0 = no limit) into bytes per second. */
export function parseRate(text: string): number {
  const trimmed = text.trim().toLowerCase();
  if (trimmed === "0" || trimmed === "unlimited" || trimmed === "none") return 0;
  return parseBytes(trimmed.replace(/\/s$|ps$/, ""), "rate");
}

export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let i = 0;
  while (Math.abs(value) >= 1024 && i < units.length - 1) {
    value /= 1024;
    i++;
  }
  return i === 0 ? `${value} B` : `${value.toFixed(value < 10 ? 2 : 1)} ${units[i]}`;
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(2)} s`;
  const minutes = Math.floor(ms / 60_000);
  return `${minutes} min ${Math.round((ms % 60_000) / 1000)} s`;
}
