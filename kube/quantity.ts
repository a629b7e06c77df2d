// Kubernetes resource quantities ("64Mi", "1G", "1.5Gi", "500e6") as bytes, for claim sizes.
import { TheseusError } from "../common/index.js";

const SUFFIXES: Readonly<Record<string, number>> = {
  "": 1,
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

/** Bytes of a quantity, rounded up (the API server rounds storage requests up too); 0 for an absent one. */
export function quantityBytes(quantity: string | undefined): number {
  if (quantity === undefined || quantity === "") return 0;
  const match = /^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)([kMGTPE]i?)?$/.exec(quantity.trim());
  const factor = SUFFIXES[match?.[2] ?? ""];
  if (match === null || factor === undefined) {
    throw new TheseusError("invalid_argument", `"${quantity}" is not a Kubernetes quantity`, { hint: "for example 64Mi, 1Gi or 500M" });
  }
  return Math.ceil(Number(match[1]) * factor);
}
