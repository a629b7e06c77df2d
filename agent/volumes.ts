// The volumes an agent serves, by reference: a name configured at start-up (a static directory, for sync-dirs, copy
// and the tests) or a claim "NAMESPACE/CLAIM" reached through volume access. Names are validated DNS labels, so the
// slash is unambiguous; OpenSession, SyncVolume and SetBandwidth take either unchanged.
import { stat } from "node:fs/promises";
import { TheseusError } from "../common/index.js";
import { validateIdentityName } from "../rpc/index.js";
import type { VolumeAccess, VolumeHandle } from "./cluster/index.js";

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

export class VolumeRegistry {
  readonly #roots: ReadonlyMap<string, string>;
  readonly #access: VolumeAccess | undefined;
  /** Claims resolved so far, held until the agent closes (or the claim resolves elsewhere). */
  readonly #handles = new Map<string, VolumeHandle>();

  constructor(roots: ReadonlyMap<string, string>, access?: VolumeAccess) {
    this.#roots = roots;
    this.#access = access;
  }

  /** The statically configured names (claims are not listed: they are found by Discover). */
  names(): string[] {
    return [...this.#roots.keys()].sort();
  }

  /** The volume's root directory, checked to exist and be a directory at the moment of the call. */
  async root(name: string, signal?: AbortSignal): Promise<string> {
    if (name.includes("/")) return this.#claimRoot(name, signal);
    const root = this.#roots.get(name);
    if (root === undefined) {
      throw new TheseusError("not_found", `this agent serves no volume "${name}"`, { hint: `it serves: ${this.names().join(", ") || "(none)"}, and claims as NAMESPACE/CLAIM` });
    }
    const info = await stat(root).catch((error: unknown) => {
      throw new TheseusError("not_found", `volume "${name}": its root ${root} cannot be read`, { cause: error });
    });
    if (!info.isDirectory()) throw new TheseusError("failed_precondition", `volume "${name}": ${root} is not a directory`);
    return root;
  }

  async close(): Promise<void> {
    const handles = [...this.#handles.values()];
    this.#handles.clear();
    await Promise.all(handles.map((h) => h.release()));
  }

  async #claimRoot(reference: string, signal?: AbortSignal): Promise<string> {
    const [namespace = "", name = "", ...rest] = reference.split("/");
    validateIdentityName(namespace, "claim namespace");
    if (rest.length > 0 || !DNS_SUBDOMAIN.test(name)) {
      throw new TheseusError("invalid_argument", `volume "${reference}" is neither a volume name nor NAMESPACE/CLAIM`, { hint: "for example shop/data-db-0" });
    }
    if (this.#access === undefined) {
      throw new TheseusError("failed_precondition", `volume "${reference}" is a claim, but this agent has no Kubernetes cluster`, {
        hint: "start it with --kubeconfig PATH, or run it in a pod",
      });
    }
    // Resolved on every use: a claim deleted and staged again is bound to another volume.
    const handle = await this.#access.resolve({ namespace, name }, signal);
    const previous = this.#handles.get(reference);
    if (previous !== undefined && previous.root === handle.root) {
      await handle.release();
      return previous.root;
    }
    this.#handles.set(reference, handle);
    await previous?.release();
    return handle.root;
  }
}
