/**
 * Writes the canonical (big-endian) XXH3-128 of each 4 KiB block of `data` (the last may be short) to `out`, 16 bytes
 * per block, and returns the number of blocks. Throws a TypeError when `out` is too small.
 */
export function fingerprints(data: Uint8Array, out: Uint8Array): number;
