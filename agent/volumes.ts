// The named volumes an agent serves: for now directories configured at start-up (later: PVC mounts found in-cluster).
import { stat } from "node:fs/promises";
import { TheseusError } from "../common/index.js";

export class VolumeRegistry {
  readonly #roots: ReadonlyMap<string, string>;

  constructor(roots: ReadonlyMap<string, string>) {
    this.#roots = roots;
  }

  names(): string[] {
    return [...this.#roots.keys()].sort();
  }

  /** The volume's root directory, checked to exist and be a directory at the moment of the call. */
  async root(name: string): Promise<string> {
    const root = this.#roots.get(name);
    if (root === undefined) {
      throw new TheseusError("not_found", `this agent serves no volume "${name}"`, { hint: `it serves: ${this.names().join(", ") || "(none)"}` });
    }
    const info = await stat(root).catch((error: unknown) => {
      throw new TheseusError("not_found", `volume "${name}": its root ${root} cannot be read`, { cause: error });
    });
    if (!info.isDirectory()) throw new TheseusError("failed_precondition", `volume "${name}": ${root} is not a directory`);
    return root;
  }
}
