// Where an agent keeps each volume's sync state, and the one SyncSource per source volume (so that SetBandwidth
// reaches the round in flight, and two rounds of one volume never run at once).
import path from "node:path";
import type { Logger } from "../../common/index.js";
import { createSyncSource } from "./source.js";
import type { SyncSource } from "./source.js";

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
      s = createSyncSource({ root, stateDir: syncStateDir(this.agentStateDir, "source", volume), logger: this.logger.child({ volume }) });
      this.#sources.set(volume, s);
    }
    return s;
  }

  /** Changes the volume's bandwidth limit now and for its later rounds. Unknown volumes keep it for their first round. */
  setBandwidth(volume: string, root: string, bytesPerSecond: number): void {
    this.get(volume, root).setBandwidth(bytesPerSecond);
  }
}
