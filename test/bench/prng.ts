// A small, fast, seedable PRNG for reproducible datasets and mutations. xoshiro128** passes BigCrush, needs only
// 32-bit integer arithmetic (fast in V8) and fills a large buffer at several hundred MB/s, so a 2 GiB dataset takes
// seconds, not minutes. Not for cryptography.

export interface Prng {
  /** A uniform 32-bit unsigned integer. */
  next(): number;
  /** A uniform integer in [min, max]. */
  int(min: number, max: number): number;
  /** Fills the buffer with uniform bytes (in place) and returns it. */
  fill(buffer: Buffer): Buffer;
  /** An independent generator derived from this one and a label, so that adding a step never shifts another's stream. */
  fork(label: string): Prng;
}

/** splitmix32 turns any seed (even 0, or similar seeds) into a well-mixed state, as the xoshiro authors recommend. */
function splitmix32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x9e3779b9) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
}

function hashLabel(label: string): number {
  let h = 0x811c9dc5; // FNV-1a
  for (let i = 0; i < label.length; i++) h = Math.imul(h ^ label.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

export function createPrng(seed: number): Prng {
  const mix = splitmix32(seed);
  const origin = seed >>> 0;
  let s0 = mix();
  let s1 = mix();
  let s2 = mix();
  let s3 = mix();

  const next = (): number => {
    const result = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
    const t = s1 << 9;
    s2 ^= s0;
    s3 ^= s1;
    s1 ^= s2;
    s0 ^= s3;
    s2 ^= t;
    s3 = rotl(s3, 11);
    return result;
  };

  return {
    next,
    int(min, max) {
      // Modulo bias is below 2^-20 for the ranges used here (at most a few million), irrelevant for test data.
      return min + (next() % (max - min + 1));
    },
    fill(buffer) {
      const words = buffer.length >>> 2;
      const view = new Uint32Array(buffer.buffer, buffer.byteOffset, words);
      if (buffer.byteOffset % 4 !== 0) {
        for (let i = 0; i < buffer.length; i++) buffer[i] = next() & 0xff;
        return buffer;
      }
      for (let i = 0; i < words; i++) view[i] = next();
      for (let i = words * 4; i < buffer.length; i++) buffer[i] = next() & 0xff;
      return buffer;
    },
    fork(label) {
      // Derived from the seed, not from the stream: forks never consume numbers, so steps stay independent.
      return createPrng(splitmix32(origin ^ hashLabel(label))());
    },
  };
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
