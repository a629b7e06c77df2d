// Kubernetes resource quantities ("100m", "1.5", "128Mi", "1G", "2e3") as numbers, and back in a canonical form.
const SUFFIXES: Readonly<Record<string, number>> = {
  "": 1,
  n: 1e-9,
  u: 1e-6,
  m: 1e-3,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  Ei: 2 ** 60,
};

/** The quantity's value (cores for CPU, bytes for memory and storage), or undefined when it is not one. */
export function parseQuantity(value: unknown): number | undefined {
  if (typeof value === "number") return value;
  if (typeof value !== "string") return undefined;
  const match = /^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)([a-zA-Z]*)$/.exec(value.trim());
  if (match === null) return undefined;
  const factor = SUFFIXES[match[2] ?? ""];
  return factor === undefined ? undefined : Number(match[1]) * factor;
}

/** CPU in whole millicores (never below 1m: zero would mean "no request"). */
export function formatCpu(cores: number): string {
  return `${Math.max(1, Math.floor(cores * 1000))}m`;
}

/** Bytes, in the largest binary unit that divides them exactly. */
export function formatBytesQuantity(bytes: number): string {
  const whole = Math.max(1, Math.floor(bytes));
  for (const [suffix, factor] of [["Gi", 2 ** 30], ["Mi", 2 ** 20], ["Ki", 2 ** 10]] as const) {
    if (whole % factor === 0) return `${whole / factor}${suffix}`;
  }
  return String(whole);
}
