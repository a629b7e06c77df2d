// Volume access: how this agent reaches the files of a PersistentVolumeClaim. One interface, so that the sync engine
// and the transfer sessions work on claims whatever the storage: the direct implementation here, for local and
// hostPath PVs whose directories are on this machine (the local clusters' provisioner makes exactly those), and mover
// pods (movers.ts) for everything else: a pod of the agent image that mounts the claim and runs the sync engine's side
// of a round there (one per round, or one per migration and claim that all its rounds share). `createVolumeAccess`
// picks one per claim (--volume-access auto|direct|mover).
import { lstat, opendir, stat } from "node:fs/promises";
import { join } from "node:path";
import type { KubeObject } from "../../app-model/index.js";
import { TheseusError, throwIfAborted } from "../../common/index.js";
import type { KubeObjects } from "../../kube/index.js";

/** A claim by namespace and name. */
export interface ClaimRef {
  readonly namespace: string;
  readonly name: string;
}

/** A claim whose directory is on this machine. */
export interface DirectHandle {
  readonly kind: "direct";
  readonly claim: ClaimRef;
  /** The directory the sync engine reads or writes. */
  readonly root: string;
  /** Gives the access back; the root must not be used afterwards. */
  release(): Promise<void>;
}

/** Where a running mover serves one claim, and the TLS material that reaches it. */
export interface MoverEndpoint {
  readonly claim: ClaimRef;
  /** host:port of the mover's gRPC server (its pod IP). */
  readonly address: string;
  /** The cluster name in the mover's certificate (this agent's own: the mover runs with the agent's identity). */
  readonly clusterName: string;
  /** The volume name the mover serves its mount as. */
  readonly volume: string;
  readonly pod: string;
}

/** A claim that only a pod mounting it can read: nothing runs until `start`, so resolving it stays cheap. */
export interface MoverHandle {
  readonly kind: "mover";
  readonly claim: ClaimRef;
  /**
   * A mover pod for the claim, serving once this resolves. Without `keepFor` the pod is started for the caller alone
   * and `release` deletes it (and its Secret). With a migration id in `keepFor` the pod is the migration's: a later
   * start for the same migration and claim gets the same pod while it lives, `release` only ends this caller's use,
   * and the pod goes with `VolumeAccess.endMigration` (or when another round needs its slot while it is idle).
   */
  start(signal?: AbortSignal, labels?: Readonly<Record<string, string>>, keepFor?: string): Promise<MoverLease>;
  release(): Promise<void>;
}

export interface MoverLease {
  readonly endpoint: MoverEndpoint;
  /** Fires when the mover pod is gone or failed before release (deleted mid-round, evicted, its node lost). */
  readonly lost: AbortSignal;
  release(): Promise<void>;
}

export interface EndMigrationOptions {
  /**
   * Wait until the pods are gone from the API server, not only asked to go: a ReadWriteOnce claim is mounted again
   * (by the application) only where, or once, no mover holds it.
   */
  readonly untilGone?: boolean;
  readonly signal?: AbortSignal;
}

export type VolumeHandle = DirectHandle | MoverHandle;

export interface VolumeAccess {
  /** The configured choice: "direct", "mover" or "auto" (direct where it reaches, else a mover). */
  readonly kind: string;
  /** A handle on the claim's files; failed_precondition (with why) when this access cannot reach them. */
  resolve(claim: ClaimRef, signal?: AbortSignal): Promise<VolumeHandle>;
  /** Deletes the movers kept for a migration (MoverHandle.start's keepFor); nothing to do for direct access. */
  endMigration?(migrationId: string, options?: EndMigrationOptions): Promise<void>;
  /** A new migration under an id that ended before on this agent may keep movers again. */
  beginMigration?(migrationId: string): void;
  /** Deletes every mover kept for a migration (the agent is shutting down). */
  close?(): Promise<void>;
}

export function createDirectVolumeAccess(objects: KubeObjects): VolumeAccess {
  return {
    kind: "direct",
    async resolve(claim, signal) {
      const named = `claim ${claim.namespace}/${claim.name}`;
      const pvc = await objects.get({ apiVersion: "v1", kind: "PersistentVolumeClaim", namespace: claim.namespace, name: claim.name }, signal);
      if (pvc === undefined) throw new TheseusError("not_found", `${named} does not exist`);
      const spec = field(pvc, "spec");
      const volumeName = typeof spec["volumeName"] === "string" ? spec["volumeName"] : "";
      if (field(pvc, "status")["phase"] !== "Bound" || volumeName === "") {
        throw new TheseusError("failed_precondition", `${named} is not bound to a volume yet`, { hint: "stage binds claims; or start a pod that mounts it" });
      }
      const pv = await objects.get({ apiVersion: "v1", kind: "PersistentVolume", namespace: "", name: volumeName }, signal);
      if (pv === undefined) throw new TheseusError("not_found", `${named}: its PersistentVolume ${volumeName} does not exist`);
      const root = directPath(pv);
      if (root === undefined) {
        throw new TheseusError("failed_precondition", `${named}: PersistentVolume ${volumeName} is neither a local nor a hostPath volume, which direct access cannot reach`, {
          hint: "network storage needs a mover pod: start the agent with --volume-access auto (the default) or mover",
        });
      }
      const info = await stat(root).catch(() => undefined);
      if (info?.isDirectory() !== true) {
        throw new TheseusError("failed_precondition", `${named}: the directory ${root} of PersistentVolume ${volumeName} is not on this agent's machine`, {
          hint: "run the agent on the node that holds the volume",
        });
      }
      return { kind: "direct", claim, root, release: async () => undefined };
    },
  };
}

export type VolumeAccessMode = "auto" | "direct" | "mover";

/**
 * The access the agent uses: `direct` only, `mover` always (the local clusters' tests force it: there every PV is a
 * local directory), or `auto`: direct where the claim's local or hostPath directory is on this machine, a mover for
 * everything else (network storage, another node's directory, a claim not bound yet).
 */
export function selectVolumeAccess(mode: VolumeAccessMode, direct: VolumeAccess, mover: VolumeAccess | undefined): VolumeAccess {
  if (mode === "direct" || mover === undefined) return direct;
  if (mode === "mover") return mover;
  return {
    kind: "auto",
    ...(mover.endMigration === undefined ? {} : { endMigration: mover.endMigration.bind(mover) }),
    ...(mover.beginMigration === undefined ? {} : { beginMigration: mover.beginMigration.bind(mover) }),
    ...(mover.close === undefined ? {} : { close: mover.close.bind(mover) }),
    async resolve(claim, signal) {
      try {
        return await direct.resolve(claim, signal);
      } catch (error) {
        if (error instanceof TheseusError && error.code === "failed_precondition") return mover.resolve(claim, signal);
        throw error;
      }
    },
  };
}

function directPath(pv: KubeObject): string | undefined {
  const spec = field(pv, "spec");
  for (const source of ["local", "hostPath"]) {
    const path = (spec[source] as { path?: unknown } | undefined)?.path;
    if (typeof path === "string" && path !== "") return path;
  }
  return undefined;
}

function field(object: KubeObject, name: string): Record<string, unknown> {
  const value = object[name];
  return typeof value === "object" && value !== null ? (value as Record<string, unknown>) : {};
}

export interface UsedBytes {
  readonly bytes: number;
  /** false when the walk stopped at the entry bound: `bytes` is then only a lower bound. */
  readonly complete: boolean;
}

/**
 * Bytes the files under `root` occupy on disk (allocated blocks, as du counts them; hard links once), without following
 * symbolic links. Bounded by `maxEntries` so that a huge volume cannot stall discovery.
 */
export async function measureUsedBytes(root: string, signal?: AbortSignal, maxEntries = 1_000_000): Promise<UsedBytes> {
  const seen = new Set<string>();
  let bytes = 0;
  let entries = 0;
  const pending = [root];
  for (let dir = pending.pop(); dir !== undefined; dir = pending.pop()) {
    throwIfAborted(signal);
    for await (const entry of await opendir(dir)) {
      if (++entries > maxEntries) return { bytes, complete: false };
      if (entries % 1024 === 0) throwIfAborted(signal);
      const path = join(dir, entry.name);
      const info = await lstat(path, { bigint: false }).catch(() => undefined);
      if (info === undefined) continue; // removed while we walked
      if (!info.isDirectory() && info.nlink > 1) {
        const key = `${info.dev}:${info.ino}`;
        if (seen.has(key)) continue;
        seen.add(key);
      }
      bytes += info.blocks * 512;
      if (info.isDirectory()) pending.push(path);
    }
  }
  return { bytes, complete: true };
}
