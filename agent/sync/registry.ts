// Where an agent keeps each volume's sync state, and the one SyncSource per source volume (so that SetBandwidth
// reaches the round in flight, and two rounds of one volume never run at once).
import fs from "node:fs";
import path from "node:path";
import { TheseusError } from "../../common/index.js";
import type { Logger } from "../../common/index.js";
import { CACHE_DIR } from "./cache-dir.js";
import { createSyncSource } from "./source.js";
import type { CompressionSetting, SyncSource } from "./source.js";

export type SyncRole = "source" | "target";

/**
 * The state directory of one volume's sync role. It lives in the volume itself, under the reserved cache directory
 * both walks hide (cache-dir.ts), so that the next round finds the hash cache and the block lists whichever process
 * reads the volume then: a mover pod, or the agent restarted on another node with a new emptyDir (issue 12: a round
 * with a lost cache re-reads what it cannot vouch for). A mover's and the agent's directories for a volume are the same.
 *
 * The agent's own state directory holds it instead where the volume cannot take it: a read-only mount (a source needs
 * no write access to its volume), or a volume nearly full (an app's database at 99% must still be migrated, and the
 * state is about 1.5% of the data: 12 MiB of block lists and fingerprints per GiB, plus ~100 bytes per file). The
 * choice is made per round; a round that finds its state in the other place is a round with a lost cache, never wrong.
 */
export function syncStateDir(agentStateDir: string, role: SyncRole, volume: string, root: string): string {
  return placeSyncState(agentStateDir, role, volume, root).dir;
}

/** Where syncStateDir puts the state, and why not in the volume when it does not. */
function placeSyncState(agentStateDir: string, role: SyncRole, volume: string, root: string): { dir: string; why?: string } {
  const inAgent = path.join(agentStateDir, "sync", role, volume);
  const inVolume = path.join(root, CACHE_DIR, "sync", role, volume);
  if (inVolume === inAgent) return { dir: inVolume }; // a mover: its agent state directory is the volume's cache directory
  const room = roomFor(root);
  if (room !== "ok") return { dir: inAgent, why: room };
  try {
    // The root first: on a read-only mount, a recursive mkdir says ENOENT, not EROFS.
    fs.accessSync(root, fs.constants.W_OK);
    fs.mkdirSync(inVolume, { recursive: true, mode: 0o700 });
    fs.accessSync(inVolume, fs.constants.W_OK);
    return { dir: inVolume };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== "EROFS" && code !== "EACCES" && code !== "EPERM" && code !== "ENOSPC" && code !== "EDQUOT") throw e;
    return { dir: inAgent, why: code };
  }
}

/**
 * Whether the volume at ROOT has room for its state: at least 64 MiB and 3% of it free (twice the state's size).
 * "ok", or why not.
 */
function roomFor(root: string): string {
  let st: fs.StatsFs;
  try {
    st = fs.statfsSync(root);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? "statfs failed";
  }
  const free = st.bavail * st.bsize;
  const total = st.blocks * st.bsize;
  return free >= STATE_ROOM_MIN_BYTES && free >= total * STATE_ROOM_FRACTION ? "ok" : `only ${free} of ${total} bytes free`;
}
const STATE_ROOM_MIN_BYTES = 64 * 1024 * 1024;
const STATE_ROOM_FRACTION = 0.03;

/**
 * Where an agent keeps its volumes' sync state: "volume" (the default: syncStateDir above) or "state-dir", the agent's
 * own directory always (sync-dirs: a developer's directories get no hidden directory; its --state-dir holds it all).
 */
export type SyncStatePlacement = "volume" | "state-dir";

export class SyncSources {
  readonly #sources = new Map<string, SyncSource>();
  /** Each volume's and role's last state directory: the place is logged when it changes, not every round. */
  readonly #placed = new Map<string, string>();
  constructor(
    private readonly agentStateDir: string,
    private readonly logger: Logger,
    private readonly placement: SyncStatePlacement = "volume",
  ) {}

  /** The state directory of the volume at ROOT in ROLE, asked at each round's start (see syncStateDir). */
  stateDir(role: SyncRole, volume: string, root: string): string {
    if (this.placement === "state-dir") return path.join(this.agentStateDir, "sync", role, volume);
    const { dir, why } = placeSyncState(this.agentStateDir, role, volume, root);
    const key = `${role}/${volume}`;
    const before = this.#placed.get(key);
    if (before !== dir && (before !== undefined || why !== undefined)) {
      if (why !== undefined) this.logger.info({ volume, role, stateDir: dir, why }, "the volume cannot hold its sync state: kept in the agent's state directory");
      else this.logger.info({ volume, role, stateDir: dir }, "the volume holds its sync state again");
    }
    this.#placed.set(key, dir);
    return dir;
  }

  /** The volume's source, created on first use. `root` is the volume's directory as the registry resolved it. */
  get(volume: string, root: string): SyncSource {
    let s = this.#sources.get(volume);
    if (s === undefined) {
      s = createSyncSource({
        root,
        stateDir: () => this.stateDir("source", volume, root),
        logger: this.logger.child({ volume }),
        compression: compressionFromEnv(process.env["THESEUS_SYNC_COMPRESSION"]),
      });
      this.#sources.set(volume, s);
    }
    return s;
  }

  /** Changes the volume's bandwidth limit now and for its later rounds. Unknown volumes keep it for their first round. */
  setBandwidth(volume: string, root: string, bytesPerSecond: number): void {
    this.get(volume, root).setBandwidth(bytesPerSecond);
  }
}

/** A developer and benchmark knob: THESEUS_SYNC_COMPRESSION=auto (default) | off | a zstd level. */
function compressionFromEnv(value: string | undefined): CompressionSetting {
  if (value === undefined || value === "" || value === "auto") return "auto";
  if (value === "off" || value === "0") return "off";
  const level = Number(value);
  if (!Number.isInteger(level) || level < 1 || level > 19) {
    throw new TheseusError("invalid_argument", `THESEUS_SYNC_COMPRESSION=${value} is not auto, off or a zstd level 1-19`);
  }
  return level;
}
