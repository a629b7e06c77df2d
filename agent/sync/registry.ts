// Where an agent keeps each volume's sync state, and the one SyncSource per source volume (so that SetBandwidth
// reaches the round in flight, and two rounds of one volume never run at once).
import path from "node:path";
import { TheseusError } from "../../common/index.js";
import type { Logger } from "../../common/index.js";
import { createSyncSource } from "./source.js";
import type { CompressionSetting, SyncSource } from "./source.js";

export type SyncRole = "source" | "target";

/** The state directory of one volume's sync role, inside the agent's state directory (never inside a volume). */
export function syncStateDir(agentStateDir: string, role: SyncRole, volume: string): string {
  return path.join(agentStateDir, "sync", role, volume);
}

export class SyncSources {
  readonly #sources = new Map<string, SyncSource>();
  constructor(
    private readonly agentStateDir: string,
    private readonly logger: Logger,
  ) {}

  /** The volume's source, created on first use. `root` is the volume's directory as the registry resolved it. */
  get(volume: string, root: string): SyncSource {
    let s = this.#sources.get(volume);
    if (s === undefined) {
      s = createSyncSource({
        root,
        stateDir: syncStateDir(this.agentStateDir, "source", volume),
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
