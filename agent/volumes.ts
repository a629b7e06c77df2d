// The volumes an agent serves, by reference: a name configured at start-up (a static directory, for sync-dirs, copy
// and the tests) or a claim "NAMESPACE/CLAIM" reached through volume access. Names are validated DNS labels, so the
// slash is unambiguous; OpenSession, SyncVolume and SetBandwidth take either unchanged. A claim reached through a
// mover pod has no directory here: `open` starts its mover (for one round, or for the whole migration), `root` refuses
// it with why.
import { stat } from "node:fs/promises";
import { TheseusError } from "../common/index.js";
import { validateIdentityName } from "../rpc/index.js";
import type { DirectHandle, EndMigrationOptions, MoverEndpoint, VolumeAccess, VolumeHandle } from "./cluster/index.js";

/** A volume opened for one round: a directory here, or a running mover. `release` ends the round's use of it. */
export type OpenVolume =
  | { readonly kind: "direct"; readonly root: string; release(): Promise<void> }
  | { readonly kind: "mover"; readonly mover: MoverEndpoint; readonly lost: AbortSignal; release(): Promise<void> };

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

export class VolumeRegistry {
  readonly #roots: ReadonlyMap<string, string>;
  readonly #access: VolumeAccess | undefined;
  /** Claims resolved so far, held until the agent closes (or the claim resolves elsewhere). */
  readonly #handles = new Map<string, DirectHandle>();
  readonly #moverLimits = new Map<string, number>();

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

  /** Checks that the volume can be reached, without starting a mover. */
  async check(name: string, signal?: AbortSignal): Promise<void> {
    if (!name.includes("/")) {
      await this.root(name, signal);
      return;
    }
    const handle = await this.#resolve(name, signal);
    if (handle.kind === "direct") await this.#keep(name, handle);
    else await handle.release();
  }

  /** True when the volume is a claim reached through a mover pod. */
  async isMover(name: string, signal?: AbortSignal): Promise<boolean> {
    if (!name.includes("/")) return false;
    const handle = await this.#resolve(name, signal);
    if (handle.kind === "direct") {
      await this.#keep(name, handle);
      return false;
    }
    await handle.release();
    return true;
  }

  /**
   * The coordinator's limit for a volume behind a mover (SetBandwidth); a relayed round runs at the lower of it and
   * what the peer asks. It applies from the next round: a running mover keeps the limit it started with.
   */
  setMoverBandwidth(name: string, bytesPerSecond: number): void {
    this.#moverLimits.set(name, bytesPerSecond);
  }

  /** The lower of the peer's request and the volume's limit, 0 meaning unlimited for both. */
  moverBandwidth(name: string, requested: number): number {
    const limit = this.#moverLimits.get(name) ?? 0;
    if (limit === 0) return requested;
    return requested === 0 ? limit : Math.min(limit, requested);
  }

  /**
   * The volume for one round: its directory, or a mover (labels go on the mover pod). With a migration id in
   * `keepFor` the mover is that migration's, shared by its rounds and deleted by `endMigration`; without, it is
   * started for this round and deleted by `release`.
   */
  async open(name: string, signal?: AbortSignal, labels: Readonly<Record<string, string>> = {}, keepFor?: string): Promise<OpenVolume> {
    if (!name.includes("/")) return { kind: "direct", root: await this.root(name, signal), release: async () => undefined };
    const handle = await this.#resolve(name, signal);
    if (handle.kind === "direct") return { kind: "direct", root: await this.#keep(name, handle), release: async () => undefined };
    const lease = await handle.start(signal, labels, keepFor);
    return {
      kind: "mover",
      mover: lease.endpoint,
      lost: lease.lost,
      release: async () => {
        await lease.release();
        await handle.release();
      },
    };
  }

  /** Deletes the movers a migration kept (see `open`); direct volumes hold nothing. */
  async endMigration(migrationId: string, options?: EndMigrationOptions): Promise<void> {
    await this.#access?.endMigration?.(migrationId, options);
  }

  /** A migration begins here: under an id that ended before, its rounds may keep movers again. */
  beginMigration(migrationId: string): void {
    this.#access?.beginMigration?.(migrationId);
  }

  async close(): Promise<void> {
    const handles = [...this.#handles.values()];
    this.#handles.clear();
    await Promise.all([...handles.map((h) => h.release()), this.#access?.close?.()]);
  }

  async #claimRoot(reference: string, signal?: AbortSignal): Promise<string> {
    const handle = await this.#resolve(reference, signal);
    if (handle.kind === "mover") {
      await handle.release();
      throw new TheseusError("failed_precondition", `volume "${reference}" is reached through a mover pod, and this step needs its files on the agent's machine`, {
        hint: "sync rounds run through movers; for the rest run the agent where the volume's directory is, with --volume-access auto or direct",
      });
    }
    return this.#keep(reference, handle);
  }

  async #resolve(reference: string, signal?: AbortSignal): Promise<VolumeHandle> {
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
    return this.#access.resolve({ namespace, name }, signal);
  }

  /** Holds a direct handle until the agent closes (or the claim resolves elsewhere); returns its root. */
  async #keep(reference: string, handle: DirectHandle): Promise<string> {
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
