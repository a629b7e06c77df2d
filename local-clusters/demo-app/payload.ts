// Record payloads are a pure function of (seed, length), so the load client stores only the seed with each ack and the
// verifier rebuilds the exact bytes it expects. Half of each 64-byte block is keyed pseudo-random bytes and half a
// readable filler, so the data compresses about 2:1, like an application's records rather than like noise or zeros.
import { createHash } from "node:crypto";

const FILLER = Buffer.from("theseus demo record payload, rebuilt from its seed.", "latin1").subarray(0, 32);

export function payloadFromSeed(seed: string, lengthBytes: number): Buffer {
  const out = Buffer.allocUnsafe(lengthBytes);
  const key = createHash("sha256").update(seed).digest();
  for (let block = 0, at = 0; at < lengthBytes; block++, at += 64) {
    const random = createHash("sha256").update(key).update(uint32(block)).digest();
    random.copy(out, at, 0, Math.min(32, lengthBytes - at));
    if (at + 32 < lengthBytes) FILLER.copy(out, at + 32, 0, Math.min(32, lengthBytes - at - 32));
  }
  return out;
}

function uint32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n >>> 0, 0);
  return b;
}
