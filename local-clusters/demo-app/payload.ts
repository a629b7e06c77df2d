// Record payloads are a pure function of (seed, length), so the load client stores only the seed with each ack and the
// verifier rebuilds the exact bytes it expects. Each 512-byte block is 256 bytes of a keyed pseudo-random stream
// (AES-CTR: cheap enough for the verifier to rebuild hundreds of MB) and 256 bytes of readable filler, so the data
// compresses about 2:1, like an application's records rather than like noise or zeros.
import { createCipheriv, createHash } from "node:crypto";

const BLOCK = 512;
const FILLER = Buffer.from("theseus demo record payload, rebuilt from its seed. ".repeat(6), "latin1").subarray(0, BLOCK / 2);

export function payloadFromSeed(seed: string, lengthBytes: number): Buffer {
  const key = createHash("sha256").update(seed).digest();
  const cipher = createCipheriv("aes-128-ctr", key.subarray(0, 16), key.subarray(16, 32));
  const out = cipher.update(Buffer.alloc(lengthBytes));
  for (let at = BLOCK / 2; at < lengthBytes; at += BLOCK) FILLER.copy(out, at, 0, Math.min(FILLER.length, lengthBytes - at));
  return out;
}
