// The name a mover pod keeps its sync state under, at the root of the volume it mounts (agent/cluster/movers.ts):
// a mover lives for one round, and the next one must find the hash cache and the indexes there, or it re-reads
// everything (a round with both caches lost measured 7.7x rsync-tls's incremental). Like the staging directory and the
// lock, both walks hide it (it is neither sent nor deleted, nor part of the digest) and no peer record may name it.
export const CACHE_DIR = ".theseus-cache";
