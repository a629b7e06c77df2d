// Mover pods: the agent reaches a claim it cannot read directly (network storage, or a local volume on another node)
// through a short-lived pod of its own image in mover mode (`theseus-agent mover`), which mounts the claim and serves
// the sync engine's side of one round on its pod IP over mTLS gRPC. The agent drives it with the RPCs it already
// speaks: on a target, the mover's SyncVolume pulls the round from the source agent itself; on a source, the agent's
// TransferService relays the peer's frames to the mover's TransferService undecoded (agent/mover-relay.ts), so the
// peer still sees one endpoint per cluster.
//
// Why the mover carries the agent's own certificate (a Secret beside it, owned by the pod): a target mover dials the
// source agent, which admits only the certificate of the session's peer cluster; a certificate the agent issued
// itself would need the installation CA's key in every cluster. The Secret lives only while the pod does and is
// deleted with it; the mover's services admit only this agent's identity. A CA-issued short-lived mover certificate
// (cert-manager) is the better answer where one is installed.
//
// Life cycle: a migration's rounds of one claim share one mover (`start` with keepFor = the migration id): the first
// round starts it, the later ones (the final round included) find it serving, so no pod start-up falls into the
// cutover's downtime, and `endMigration` deletes it when the migration's participant ends (migrations.ts says when).
// A kept mover lost between rounds (deleted, evicted) is replaced by the next round's start. Rounds outside a
// migration (a copy's) get one mover each (`start` ... `release`). At most `limit` run at once; a start that finds no
// slot takes the one of an idle kept mover (deleting it), so that a migration of more claims than the limit, whose
// final round runs them all at once, cannot wait forever on its own idle movers. Labelled
// app.kubernetes.io/managed-by=theseus, theseus.io/mover-of=<cluster> (and the migration id when there is one).
// The pods cannot be owned by the agent's Deployment or a migration record: those live in the agent's namespace, and an
// ownerReference across namespaces is invalid (the garbage collector would delete the pod at once). So the agent
// deletes its movers itself, and `sweepMovers` deletes every leftover one when the agent starts (a crashed agent's,
// also those of migrations that resume: see agent.ts). The Secret is owned by its pod, so the garbage collector
// removes it with the pod whatever happens.
//
// Scheduling: a ReadWriteOnce claim that a running pod mounts can be mounted only on that pod's node, so the mover is
// pinned there (spec.nodeName); otherwise the scheduler places it, and for an unbound WaitForFirstConsumer claim the
// mover is the first consumer that binds it.
import { createHash, randomBytes } from "node:crypto";
import { TheseusError, sleep, throwIfAborted } from "../../common/index.js";
import type { Logger } from "../../common/index.js";
import type { KubeObject } from "../../app-model/index.js";
import type { KubeObjects } from "../../kube/index.js";
import type { ClaimRef, MoverEndpoint, MoverLease, VolumeAccess } from "./volume-access.js";

export const MOVER_COMPONENT = "mover";
export const LABEL_MOVER_OF = "theseus.io/mover-of";
/** The migration a mover serves (when its id is a valid label value, as Theseus's own ids are). */
export const LABEL_MIGRATION = "theseus.io/migration";
const LABEL_VALUE = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;

/** The labels of a migration's movers besides their owner's (none for an id that is no label value). */
export function moverLabels(migrationId: string): Record<string, string> {
  return LABEL_VALUE.test(migrationId) ? { [LABEL_MIGRATION]: migrationId } : {};
}
export const MOVER_PORT = 7443;
/** The volume name a mover serves its mount as. */
export const MOVER_VOLUME = "data";

export interface MoverSettings {
  /** The agent image (the mover is the agent in mover mode). */
  readonly image: string;
  /** Movers running at once; further rounds wait for a slot. */
  readonly limit: number;
  /** How long a mover may take to serve (scheduling, image pull, binding). */
  readonly startTimeoutMs: number;
}

export interface MoverAccessOptions extends MoverSettings {
  readonly objects: KubeObjects;
  /** This agent's cluster name: the movers run with its identity. */
  readonly clusterName: string;
  /** The agent's current TLS material (read at each start, so a rotation reaches the next mover). */
  readonly tls: { readonly caPem: string; readonly certPem: string; readonly keyPem: string };
  readonly logger: Logger;
  /** How often a running mover's pod is checked (to notice one deleted or failed mid-round). */
  readonly watchIntervalMs?: number;
}

const MANAGED_BY = "app.kubernetes.io/managed-by";
const COMPONENT = "app.kubernetes.io/component";
const ANNOTATION_CLAIM = "theseus.io/claim";

/** A mover pod or its Secret (any agent's): Theseus's own, never part of an application, never a writer of it. */
export function isMoverObject(object: KubeObject): boolean {
  const labels = object.metadata.labels ?? {};
  return labels[MANAGED_BY] === "theseus" && labels[COMPONENT] === MOVER_COMPONENT;
}

export function moverLabelSelector(clusterName: string): string {
  return `${MANAGED_BY}=theseus,${COMPONENT}=${MOVER_COMPONENT},${LABEL_MOVER_OF}=${clusterName}`;
}

export function createMoverAccess(options: MoverAccessOptions): VolumeAccess {
  const slots = new Semaphore(options.limit);
  const log = options.logger.child({ component: "movers" });
  const kept = new Map<string, Kept>();
  /**
   * Migrations whose movers were ended: a round that still arrives for one (the peer's pre-sync retrying before it
   * hears of the abort) is refused instead of starting a pod that nothing would delete. Bounded: the oldest go first.
   */
  const endedMigrations = new Set<string>();

  /** A slot for a new pod. With none free, an idle kept mover gives its own up: the limit must not deadlock a migration of more claims than it. */
  const acquire = async (signal: AbortSignal | undefined): Promise<void> => {
    if (!slots.available) {
      const idle = [...kept.values()].find((k) => k.users === 0 && k.lease !== undefined);
      if (idle !== undefined) void evict(idle, "another round needs its slot");
    }
    await slots.acquire(signal);
  };
  /** Deletes a kept mover (a start in progress is cancelled); the lease it had, if it got one. */
  const evict = async (entry: Kept, why: string): Promise<MoverLease | undefined> => {
    if (kept.get(entry.key) === entry) kept.delete(entry.key);
    entry.controller.abort(new TheseusError("cancelled", `the mover of ${entry.claim.namespace}/${entry.claim.name} for migration ${entry.migrationId} was released: ${why}`));
    const lease = await entry.started.catch(() => undefined);
    if (lease !== undefined) log.info({ pod: lease.endpoint.pod, migrationId: entry.migrationId, why }, "kept mover released");
    await lease?.release();
    return lease;
  };
  const startOne = async (claim: ClaimRef, labels: Readonly<Record<string, string>>, signal: AbortSignal | undefined): Promise<MoverLease> => {
    await acquire(signal);
    // Once: a start that fails inside startMover releases its pod, which frees the slot too.
    let freed = false;
    const free = (): void => {
      if (freed) return;
      freed = true;
      slots.release();
    };
    try {
      return await startMover(options, log, claim, labels, signal, free);
    } catch (error) {
      free();
      throw error;
    }
  };
  /** This caller's use of the migration's mover: started by the first round, shared by the later ones. */
  const startKept = async (claim: ClaimRef, labels: Readonly<Record<string, string>>, migrationId: string, signal: AbortSignal | undefined): Promise<MoverLease> => {
    const key = `${migrationId}\n${claim.namespace}/${claim.name}`;
    for (;;) {
      if (endedMigrations.has(migrationId)) {
        throw new TheseusError("failed_precondition", `migration ${migrationId} has ended here: its movers are gone, and no round of it starts another`, {
          hint: "the migration was committed or aborted on this agent",
        });
      }
      let entry = kept.get(key);
      if (entry === undefined) {
        // The pod's start belongs to the migration, not to the round that asked first: a round cancelled meanwhile
        // (a rate change, the final round taking over) leaves it starting for the next.
        const controller = new AbortController();
        const created: Kept = { key, migrationId, claim, controller, users: 0, lease: undefined, started: startOne(claim, labels, controller.signal) };
        created.started.then(
          (lease) => (created.lease = lease),
          () => {
            if (kept.get(key) === created) kept.delete(key);
          },
        );
        kept.set(key, created);
        entry = created;
      }
      entry.users++;
      let lease: MoverLease;
      try {
        lease = await raceAbort(entry.started, signal);
      } catch (error) {
        entry.users--;
        // This caller gave up: the pod may still come up for the next round. A start that failed is retried by the
        // next round (the entry is gone), not in a loop here.
        throw error;
      }
      if (lease.lost.aborted) {
        // Deleted or failed since the last round (the round in flight then failed with `lost`): a new one for this round.
        entry.users--;
        await evict(entry, "its pod was lost");
        continue;
      }
      const current = entry;
      let ended = false;
      return {
        endpoint: lease.endpoint,
        lost: lease.lost,
        release: async () => {
          if (ended) return;
          ended = true;
          current.users--;
          if (current.users === 0 && slots.waiting > 0) await evict(current, "another round waits for a slot");
        },
      };
    }
  };

  return {
    kind: "mover",
    async resolve(claim, signal) {
      const pvc = await options.objects.get({ apiVersion: "v1", kind: "PersistentVolumeClaim", namespace: claim.namespace, name: claim.name }, signal);
      if (pvc === undefined) throw new TheseusError("not_found", `claim ${claim.namespace}/${claim.name} does not exist`);
      return {
        kind: "mover",
        claim,
        start: (startSignal, labels = {}, keepFor) => (keepFor === undefined ? startOne(claim, labels, startSignal) : startKept(claim, labels, keepFor, startSignal)),
        release: async () => undefined,
      };
    },
    async close() {
      // An agent that stops (an upgrade, an uninstall) leaves no pod in the applications' namespaces: a migration
      // that resumes in the next agent starts fresh movers anyway (agent.ts says why none is adopted).
      await Promise.all([...kept.values()].map((k) => evict(k, "the agent is shutting down")));
    },
    beginMigration(migrationId) {
      endedMigrations.delete(migrationId);
    },
    async endMigration(migrationId, end = {}) {
      endedMigrations.add(migrationId);
      if (endedMigrations.size > 1000) endedMigrations.delete(endedMigrations.values().next().value ?? migrationId);
      const mine = [...kept.values()].filter((k) => k.migrationId === migrationId);
      const leases = await Promise.all(mine.map((k) => evict(k, "its migration ended")));
      const pods = leases.flatMap((lease) => (lease === undefined ? [] : [{ namespace: lease.endpoint.claim.namespace, name: lease.endpoint.pod }]));
      if (end.untilGone === true) await waitGone(options.objects, options.clusterName, migrationId, pods, end.signal);
    },
  };
}

/** A migration's mover, shared by its rounds of one claim. */
interface Kept {
  readonly key: string;
  readonly migrationId: string;
  readonly claim: ClaimRef;
  /** Aborts a start still in progress when the migration ends first. */
  readonly controller: AbortController;
  readonly started: Promise<MoverLease>;
  /** Set once started. */
  lease: MoverLease | undefined;
  /** Rounds using it now; an idle one (0) may give its slot up. */
  users: number;
}

async function raceAbort<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise;
  throwIfAborted(signal);
  let onAbort: () => void = () => undefined;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(TheseusError.from(signal.reason));
    signal.addEventListener("abort", onAbort, { once: true });
  });
  try {
    return await Promise.race([promise, aborted]);
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}

/**
 * Until the migration's mover pods are gone from the API server: those this process deleted, and any other with its
 * migration label (a predecessor's, deleted by the start-up sweep but perhaps still terminating).
 */
async function waitGone(objects: KubeObjects, clusterName: string, migrationId: string, pods: readonly { namespace: string; name: string }[], signal: AbortSignal | undefined): Promise<void> {
  const deadline = Date.now() + 60_000;
  const labelled = LABEL_VALUE.test(migrationId);
  for (;;) {
    const left: string[] = [];
    for (const pod of pods) {
      if ((await objects.get({ apiVersion: "v1", kind: "Pod", namespace: pod.namespace, name: pod.name }, signal)) !== undefined) left.push(`${pod.namespace}/${pod.name}`);
    }
    if (labelled) {
      const items = await objects.list(await objects.resourceFor("v1", "Pod", signal), { labelSelector: `${moverLabelSelector(clusterName)},${LABEL_MIGRATION}=${migrationId}` }, signal);
      for (const item of items) {
        const name = `${item.metadata.namespace ?? ""}/${item.metadata.name ?? ""}`;
        if (!left.includes(name)) left.push(name);
      }
    }
    if (left.length === 0) return;
    if (Date.now() > deadline) {
      throw new TheseusError("deadline_exceeded", `the mover pods ${left.join(", ")} of migration ${migrationId} were still there 60 s after their deletion`, {
        hint: "a ReadWriteOnce claim may not mount elsewhere until they are gone: kubectl describe pod says what holds them",
      });
    }
    await sleep(250, signal);
  }
}

async function startMover(
  options: MoverAccessOptions,
  log: Logger,
  claim: ClaimRef,
  extraLabels: Readonly<Record<string, string>>,
  signal: AbortSignal | undefined,
  freeSlot: () => void,
): Promise<MoverLease> {
  const { objects } = options;
  const named = `claim ${claim.namespace}/${claim.name}`;
  const name = `theseus-mover-${createHash("sha256").update(claim.name).digest("hex").slice(0, 8)}-${randomBytes(3).toString("hex")}`;
  const labels = { ...extraLabels, [MANAGED_BY]: "theseus", [COMPONENT]: MOVER_COMPONENT, [LABEL_MOVER_OF]: options.clusterName };
  const pvc = await objects.get({ apiVersion: "v1", kind: "PersistentVolumeClaim", namespace: claim.namespace, name: claim.name }, signal);
  if (pvc === undefined) throw new TheseusError("not_found", `${named} does not exist`);
  const nodeName = await pinnedNode(objects, pvc, signal);
  const podRef = { apiVersion: "v1", kind: "Pod", namespace: claim.namespace, name };
  const secretRef = { apiVersion: "v1", kind: "Secret", namespace: claim.namespace, name };
  let released = false;
  const lostController = new AbortController();
  let watchTimer: NodeJS.Timeout | undefined;
  const release = async (): Promise<void> => {
    if (released) return;
    released = true;
    clearTimeout(watchTimer);
    // Deleting the pod first stops the mover; the Secret would follow it through its ownerReference, but is deleted
    // at once too (the garbage collector may lag, and the key should not outlive the round).
    await objects.delete(podRef).catch((error: unknown) => log.warn({ err: error, pod: name }, "could not delete the mover pod; the next agent start sweeps it"));
    await objects.delete(secretRef).catch(() => undefined);
    freeSlot();
    log.info({ pod: name, claim: `${claim.namespace}/${claim.name}` }, "mover released");
  };
  try {
    const tls = options.tls;
    await objects.create(
      {
        apiVersion: "v1",
        kind: "Secret",
        metadata: { name, namespace: claim.namespace, labels },
        type: "Opaque",
        stringData: { "ca.crt": tls.caPem, "tls.crt": tls.certPem, "tls.key": tls.keyPem },
      },
      signal,
    );
    const pod = await objects.create(moverPod(options, name, claim, labels, nodeName), signal);
    const uid = pod.metadata.uid;
    if (uid !== undefined) {
      await objects.mergePatch(secretRef, { metadata: { ownerReferences: [{ apiVersion: "v1", kind: "Pod", name, uid, blockOwnerDeletion: false }] } }, signal);
    }
    log.info({ pod: name, claim: `${claim.namespace}/${claim.name}`, node: nodeName ?? "(scheduler)" }, "mover pod created");
    const podIp = await waitServing(objects, podRef, options.startTimeoutMs, signal);
    const endpoint: MoverEndpoint = { claim, address: `${podIp}:${MOVER_PORT}`, clusterName: options.clusterName, volume: MOVER_VOLUME, pod: name };
    // A mover deleted mid-round ends its call soon (SIGTERM cancels it); one whose node vanished would leave the
    // connection hanging until keepalive gives up, so the pod is also watched.
    const interval = options.watchIntervalMs ?? 2000;
    const watch = (): void => {
      watchTimer = setTimeout(() => {
        void objects.get(podRef).then(
          (current) => {
            if (released) return;
            const phase = phaseOf(current);
            if (current === undefined || current.metadata.deletionTimestamp !== undefined || phase === "Failed" || phase === "Succeeded") {
              lostController.abort(new TheseusError("unavailable", `the mover pod ${claim.namespace}/${name} of ${named} is ${current === undefined ? "gone" : current.metadata.deletionTimestamp !== undefined ? "being deleted" : phase}`, { hint: "the next round starts a new mover and resumes" }));
              return;
            }
            watch();
          },
          () => {
            if (!released) watch();
          },
        );
      }, interval);
      watchTimer.unref();
    };
    watch();
    return { endpoint, lost: lostController.signal, release };
  } catch (error) {
    await release();
    throw error;
  }
}

function moverPod(options: MoverAccessOptions, name: string, claim: ClaimRef, labels: Record<string, string>, nodeName: string | undefined): KubeObject {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace: claim.namespace, labels, annotations: { [ANNOTATION_CLAIM]: claim.name } },
    spec: {
      // It talks to no API server: its only job is the volume.
      automountServiceAccountToken: false,
      restartPolicy: "Never",
      terminationGracePeriodSeconds: 5,
      ...(nodeName === undefined ? {} : { nodeName }),
      containers: [
        {
          name: "mover",
          image: options.image,
          args: [
            "mover",
            "--cluster",
            options.clusterName,
            "--mount",
            "/data",
            "--listen",
            `$(POD_IP):${MOVER_PORT}`,
            "--tls-ca",
            "/tls/ca.crt",
            "--tls-cert",
            "/tls/tls.crt",
            "--tls-key",
            "/tls/tls.key",
          ],
          env: [{ name: "POD_IP", valueFrom: { fieldRef: { fieldPath: "status.podIP" } } }],
          ports: [{ name: "grpc", containerPort: MOVER_PORT }],
          // Kubernetes' restricted profile, as the agent's own pod; the user is the image's (non-root), so files the
          // app made unreadable to it fail the round with their path, and owners are kept only where it may.
          securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ["ALL"] }, seccompProfile: { type: "RuntimeDefault" } },
          readinessProbe: { tcpSocket: { port: MOVER_PORT }, periodSeconds: 1, failureThreshold: 3 },
          volumeMounts: [
            { name: "data", mountPath: "/data" },
            { name: "tls", mountPath: "/tls", readOnly: true },
          ],
        },
      ],
      volumes: [
        { name: "data", persistentVolumeClaim: { claimName: claim.name } },
        { name: "tls", secret: { secretName: name, defaultMode: 0o400 } },
      ],
    },
  };
}

/** The node of a running pod that mounts a ReadWriteOnce claim (only there can it be mounted again), if any. */
async function pinnedNode(objects: KubeObjects, pvc: KubeObject, signal: AbortSignal | undefined): Promise<string | undefined> {
  const modes = ((pvc["spec"] as { accessModes?: string[] } | undefined)?.accessModes ?? []);
  if (!modes.includes("ReadWriteOnce") && !modes.includes("ReadWriteOncePod")) return undefined;
  const namespace = pvc.metadata.namespace ?? "";
  const pods = await objects.list(await objects.resourceFor("v1", "Pod", signal), { namespace }, signal);
  for (const pod of pods) {
    const spec = (pod["spec"] ?? {}) as { nodeName?: string; volumes?: { persistentVolumeClaim?: { claimName?: string } }[] };
    const phase = phaseOf(pod);
    if (spec.nodeName === undefined || spec.nodeName === "" || phase === "Succeeded" || phase === "Failed") continue;
    if ((spec.volumes ?? []).some((v) => v.persistentVolumeClaim?.claimName === pvc.metadata.name)) return spec.nodeName;
  }
  return undefined;
}

async function waitServing(objects: KubeObjects, ref: { apiVersion: string; kind: string; namespace: string; name: string }, timeoutMs: number, signal: AbortSignal | undefined): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let last = "not created yet";
  for (;;) {
    const pod = await objects.get(ref, signal);
    if (pod === undefined) throw new TheseusError("unavailable", `the mover pod ${ref.namespace}/${ref.name} was deleted before it served`, { hint: "run the round again" });
    const status = (pod["status"] ?? {}) as { phase?: string; podIP?: string; conditions?: { type?: string; status?: string }[]; containerStatuses?: { state?: { waiting?: { reason?: string; message?: string } } }[] };
    const ready = status.conditions?.some((c) => c.type === "Ready" && c.status === "True") === true;
    if (status.phase === "Running" && ready && status.podIP !== undefined && status.podIP !== "") return status.podIP;
    if (status.phase === "Failed" || status.phase === "Succeeded") {
      throw new TheseusError("unavailable", `the mover pod ${ref.namespace}/${ref.name} ended (${status.phase}) before it served`, { hint: `kubectl -n ${ref.namespace} describe pod ${ref.name} (before the next round deletes it) says why` });
    }
    const waiting = status.containerStatuses?.[0]?.state?.waiting;
    last = `${status.phase ?? "Pending"}${waiting?.reason === undefined ? "" : ` (${waiting.reason}${waiting.message === undefined ? "" : `: ${waiting.message}`})`}`;
    if (Date.now() > deadline) {
      throw new TheseusError("deadline_exceeded", `the mover pod ${ref.namespace}/${ref.name} did not serve within ${Math.round(timeoutMs / 1000)} s: it is ${last}`, {
        hint: "check that the agent image can be pulled in that namespace and that the claim can be mounted (kubectl describe pod)",
      });
    }
    await sleep(250, signal);
  }
}

function phaseOf(pod: KubeObject | undefined): string | undefined {
  return (pod?.["status"] as { phase?: string } | undefined)?.phase;
}

/** Deletes every mover pod (and Secret) this agent's cluster name labels: at start, none of them can be in use. */
export async function sweepMovers(objects: KubeObjects, clusterName: string, logger: Logger, signal?: AbortSignal): Promise<number> {
  const labelSelector = moverLabelSelector(clusterName);
  let deleted = 0;
  for (const kind of ["Pod", "Secret"]) {
    const items = await objects.list(await objects.resourceFor("v1", kind, signal), { labelSelector }, signal);
    for (const item of items) {
      const ref = { apiVersion: "v1", kind, namespace: item.metadata.namespace ?? "", name: item.metadata.name ?? "" };
      if (await objects.delete(ref, signal).catch(() => false)) deleted++;
    }
  }
  if (deleted > 0) logger.info({ deleted }, "left-over mover pods and Secrets deleted");
  return deleted;
}

/** A counting semaphore whose waiters give up with their signal. */
class Semaphore {
  #free: number;
  readonly #waiters: (() => void)[] = [];
  constructor(size: number) {
    this.#free = size;
  }

  get available(): boolean {
    return this.#free > 0;
  }

  get waiting(): number {
    return this.#waiters.length;
  }

  async acquire(signal?: AbortSignal): Promise<void> {
    if (this.#free > 0) {
      this.#free--;
      return;
    }
    await new Promise<void>((resolve, reject) => {
      const grant = (): void => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      };
      const onAbort = (): void => {
        const i = this.#waiters.indexOf(grant);
        if (i >= 0) this.#waiters.splice(i, 1);
        reject(TheseusError.from(signal?.reason));
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#waiters.push(grant);
    });
  }

  release(): void {
    const next = this.#waiters.shift();
    if (next !== undefined) next();
    else this.#free++;
  }
}
