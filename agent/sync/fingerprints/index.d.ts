/**
 * Writes the canonical (big-endian) XXH3-128 of each 4 KiB block of `data` (the last may be short) to `out`, 16 bytes
 * per block, and returns the number of blocks. Throws a TypeError when `out` is too small.
 */
export function fingerprints(data: Uint8Array, out: Uint8Array): number;

/**
 * Writes each 4 KiB block's sha256 (32 bytes) to `sha256s` and, unless `fingerprints` is null, its fingerprint (as
 * fingerprints() does); returns the number of blocks. Throws a TypeError when an output is too small.
 */
export function blockHashes(data: Uint8Array, fingerprints: Uint8Array | null, sha256s: Uint8Array): number;
