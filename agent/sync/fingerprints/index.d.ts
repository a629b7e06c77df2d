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

/**
 * lstat()s `names[from, from + count)` relative to the directory `dir` (opened once, a symlink in its place refused)
 * into `out`, 13 numbers per entry (errno, 0 when stat'ed; mode, uid, gid, size, ino, dev, nlink, blocks; mtime seconds,
 * nanoseconds; ctime seconds, nanoseconds); returns `count`, or -errno when the directory cannot be opened.
 * An entry that cannot be stat'ed has its errno first and nothing else. Throws a TypeError on bad arguments.
 */
export function lstatAt(dir: string, names: readonly string[], from: number, count: number, out: Float64Array): number;
