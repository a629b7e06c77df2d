// Stage: the planned objects created on this (target) cluster in dependency order, each in app-model's staged form
// (labelled with the migration, workloads at zero replicas, CronJobs suspended), then the claims bound and reachable.
// Idempotent: an object this migration staged before is left as it is ("unchanged"), so a re-run creates nothing
// twice. Conflicts are all found before anything is written, so a refused staging leaves the cluster untouched.
import { createHash } from "node:crypto";
import { ANNOTATION_STAGED, LABEL_MIGRATION, applyOrder, refOf, stagedForm } from "../../app-model/index.js";
import type { ClaimInfo, ConflictPolicy, KubeObject, ObjectRef } from "../../app-model/index.js";
import { TheseusError } from "../../common/index.js";
import type { Logger } from "../../common/index.js";
import { waitUntil } from "../../kube/index.js";
import { claimInfo } from "./claims.js";
import { getIfServed } from "./cluster.js";
import type { ClusterAccess } from "./cluster.js";

export interface StageInput {
  readonly migrationId: string;
  readonly namespace: string;
  readonly onConflict: ConflictPolicy;
  readonly timeoutMs: number;
  readonly objects: readonly KubeObject[];
}

export type StageAction = "created" | "adopted" | "unchanged";

export interface StageResult {
  readonly objects: ReadonlyArray<{ readonly ref: ObjectRef; readonly action: StageAction }>;
  readonly claims: readonly ClaimInfo[];
}

/** The image of the pod that makes a WaitForFirstConsumer claim bind (the agent's own, in its `hold` mode). */
export const HOLDER_IMAGE = "theseus.local/agent";

export async function stageApp(cluster: ClusterAccess, input: StageInput, logger: Logger, signal?: AbortSignal): Promise<StageResult> {
  const { objects } = cluster;
  const { migrationId, namespace } = input;
  for (const object of input.objects) validateObject(object, namespace);
  const isNamespace = (o: KubeObject): boolean => o.apiVersion === "v1" && o.kind === "Namespace" && o.metadata.name === namespace;
  const namespaceObject = input.objects.find(isNamespace) ?? { apiVersion: "v1", kind: "Namespace", metadata: { name: namespace } };
  // The namespace takes its place in the order (after CRDs, which are cluster-scoped and must be Established first).
  const ordered = applyOrder([namespaceObject, ...input.objects.filter((o) => !isNamespace(o))]);

  const existing = new Map<KubeObject, KubeObject | undefined>();
  const conflicts: string[] = [];
  for (const object of ordered) {
    const found = await getIfServed(cluster, refOf(object), signal);
    existing.set(object, found);
    // A namespace that exists already is where the app goes, not a conflict; it is neither labelled nor deleted.
    if (found !== undefined && !ours(found, migrationId) && object !== namespaceObject) conflicts.push(describeRef(refOf(object)));
  }
  if (conflicts.length > 0 && input.onConflict === "fail") {
    throw new TheseusError("already_exists", `${conflicts.length} object(s) already exist on this cluster and were not staged by migration ${migrationId}: ${conflicts.join(", ")}`, {
      hint: "remove or rename them on the target, or stage with conflicts adopted (they are then left as they are and never deleted)",
    });
  }

  const results: Array<{ ref: ObjectRef; action: StageAction }> = [];
  for (const object of ordered) {
    let current = existing.get(object);
    if (object === namespaceObject && current !== undefined && !ours(current, migrationId)) continue;
    let action: StageAction;
    if (current === undefined) {
      const created = await createOrFind(cluster, stagedForm(object, migrationId, "created"), signal);
      action = created.created ? "created" : classify(created.object, migrationId, input.onConflict, object);
      current = created.object;
    } else {
      action = classify(current, migrationId, input.onConflict, object);
    }
    if (action === "adopted" && !ours(current, migrationId)) {
      await objects.mergePatch(refOf(object), { metadata: { labels: { [LABEL_MIGRATION]: migrationId }, annotations: { [ANNOTATION_STAGED]: "adopted" } } }, signal);
    }
    results.push({ ref: refOf(object), action });
    if (object.kind === "CustomResourceDefinition") await waitEstablished(cluster, object.metadata.name ?? "", input.timeoutMs, signal);
  }
  logger.info({ migrationId, namespace, created: results.filter((r) => r.action === "created").length, adopted: results.filter((r) => r.action === "adopted").length }, "objects staged");

  const claims = ordered.filter((o) => o.apiVersion === "v1" && o.kind === "PersistentVolumeClaim").map((o) => o.metadata.name ?? "");
  await bindClaims(cluster, migrationId, namespace, claims, input.timeoutMs, logger, signal);
  const infos: ClaimInfo[] = [];
  for (const name of claims) {
    const pvc = await objects.get({ apiVersion: "v1", kind: "PersistentVolumeClaim", namespace, name }, signal);
    if (pvc === undefined) throw new TheseusError("not_found", `claim ${namespace}/${name} disappeared while it was staged`);
    const { info } = await claimInfo(cluster, pvc, signal);
    if (info.access === "") {
      throw new TheseusError("failed_precondition", `claim ${namespace}/${name} is bound, but this agent cannot reach its files: ${info.reason}`, {
        hint: "use a storage class whose volumes this agent can reach (local or hostPath PVs today)",
      });
    }
    infos.push(info);
  }
  return { objects: results, claims: infos };
}

function validateObject(object: KubeObject, namespace: string): void {
  const named = `${object.kind || "(no kind)"} ${object.metadata.name ?? "(no name)"}`;
  if (typeof object.apiVersion !== "string" || object.apiVersion === "" || typeof object.kind !== "string" || object.kind === "" || !object.metadata.name) {
    throw new TheseusError("invalid_argument", `staged object ${named} needs apiVersion, kind and metadata.name`);
  }
  const ns = object.metadata.namespace;
  if (ns !== undefined && ns !== "" && ns !== namespace) {
    throw new TheseusError("invalid_argument", `staged object ${named} is in namespace ${ns}, not in the staging namespace ${namespace}`, { hint: "the plan maps every object into the target namespace" });
  }
}

function ours(object: KubeObject, migrationId: string): boolean {
  return object.metadata.labels?.[LABEL_MIGRATION] === migrationId;
}

function classify(current: KubeObject, migrationId: string, onConflict: ConflictPolicy, planned: KubeObject): StageAction {
  if (ours(current, migrationId)) return "unchanged";
  if (onConflict === "adopt") return "adopted";
  throw new TheseusError("already_exists", `${describeRef(refOf(planned))} appeared on this cluster while staging, and was not staged by migration ${migrationId}`);
}

export function describeRef(ref: ObjectRef): string {
  return `${ref.kind} ${ref.namespace === "" ? "" : `${ref.namespace}/`}${ref.name} (${ref.apiVersion})`;
}

async function createOrFind(cluster: ClusterAccess, object: KubeObject, signal?: AbortSignal): Promise<{ object: KubeObject; created: boolean }> {
  try {
    return { object: await cluster.objects.create(object, signal), created: true };
  } catch (error) {
    if (!(error instanceof TheseusError && error.code === "already_exists")) throw error;
    const found = await cluster.objects.get(refOf(object), signal);
    if (found === undefined) throw error;
    return { object: found, created: false };
  }
}

async function waitEstablished(cluster: ClusterAccess, name: string, timeoutMs: number, signal?: AbortSignal): Promise<void> {
  await waitUntil({
    what: `CustomResourceDefinition ${name} to be established`,
    timeoutMs,
    signal,
    intervalMs: 250,
    probe: async () => {
      const crd = await cluster.objects.get({ apiVersion: "apiextensions.k8s.io/v1", kind: "CustomResourceDefinition", namespace: "", name }, signal);
      const conditions = ((crd?.["status"] as { conditions?: Array<{ type?: string; status?: string }> } | undefined)?.conditions ?? []);
      return conditions.some((c) => c.type === "Established" && c.status === "True") ? { done: true, value: undefined } : { done: false, pending: "not established yet" };
    },
  });
}

/**
 * Waits until every claim is Bound. A WaitForFirstConsumer claim binds only once a pod that mounts it is scheduled,
 * so one small holder pod (the agent image in `hold` mode) mounts those, pinned to this agent's node when it has one,
 * and is deleted once they are bound.
 */
async function bindClaims(cluster: ClusterAccess, migrationId: string, namespace: string, claims: readonly string[], timeoutMs: number, logger: Logger, signal?: AbortSignal): Promise<void> {
  const { objects } = cluster;
  const read = async (name: string): Promise<KubeObject> => {
    const pvc = await objects.get({ apiVersion: "v1", kind: "PersistentVolumeClaim", namespace, name }, signal);
    if (pvc === undefined) throw new TheseusError("not_found", `claim ${namespace}/${name} disappeared while it was staged`);
    return pvc;
  };
  const phase = (pvc: KubeObject): string => (pvc["status"] as { phase?: string } | undefined)?.phase ?? "Pending";
  const waiting: string[] = [];
  for (const name of claims) {
    const pvc = await read(name);
    if (phase(pvc) === "Bound") continue;
    const className = (pvc["spec"] as { storageClassName?: string } | undefined)?.storageClassName ?? "";
    const sc = className === "" ? undefined : await objects.get({ apiVersion: "storage.k8s.io/v1", kind: "StorageClass", namespace: "", name: className }, signal);
    if (sc?.["volumeBindingMode"] === "WaitForFirstConsumer") waiting.push(name);
  }
  const holder = { apiVersion: "v1", kind: "Pod", namespace, name: `theseus-holder-${createHash("sha256").update(migrationId).digest("hex").slice(0, 10)}` };
  if (waiting.length > 0) {
    // The ServiceAccount admission plugin refuses pods until the namespace's default service account exists.
    await waitUntil({
      what: `the default service account in ${namespace}`,
      timeoutMs,
      signal,
      intervalMs: 250,
      probe: async () => ((await objects.get({ apiVersion: "v1", kind: "ServiceAccount", namespace, name: "default" }, signal)) === undefined ? { done: false, pending: "not created yet" } : { done: true, value: undefined }),
    });
    await createOrFind(cluster, holderPod(holder.name, namespace, migrationId, waiting, cluster.nodeName), signal);
    logger.info({ migrationId, namespace, claims: waiting, pod: holder.name }, "holder pod started to bind WaitForFirstConsumer claims");
  }
  try {
    await waitUntil({
      what: `claims in ${namespace} to be bound`,
      timeoutMs,
      signal,
      watch: { kubeConfig: cluster.kubeConfig, paths: [`/api/v1/namespaces/${namespace}/persistentvolumeclaims`] },
      probe: async () => {
        const pending: string[] = [];
        for (const name of claims) {
          const pvc = await read(name);
          if (phase(pvc) !== "Bound") pending.push(`${name} (${phase(pvc)})`);
        }
        if (pending.length === 0) return { done: true, value: undefined };
        const pod = waiting.length === 0 ? undefined : await objects.get(holder, signal);
        const podPhase = (pod?.["status"] as { phase?: string } | undefined)?.phase;
        return { done: false, pending: `${pending.join(", ")} not bound${podPhase === undefined ? "" : `; holder pod ${holder.name} is ${podPhase}`}` };
      },
    });
  } finally {
    if (waiting.length > 0) await objects.delete(holder).catch((error: unknown) => logger.warn({ err: error, pod: holder.name }, "could not delete the holder pod; Unstage removes it"));
  }
}

function holderPod(name: string, namespace: string, migrationId: string, claims: readonly string[], nodeName: string | undefined): KubeObject {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace, labels: { [LABEL_MIGRATION]: migrationId }, annotations: { [ANNOTATION_STAGED]: "created" } },
    spec: {
      automountServiceAccountToken: false,
      terminationGracePeriodSeconds: 5,
      restartPolicy: "Never",
      ...(nodeName === undefined ? {} : { nodeSelector: { "kubernetes.io/hostname": nodeName } }),
      containers: [
        {
          name: "hold",
          image: HOLDER_IMAGE,
          args: ["hold"],
          volumeMounts: claims.map((claim, i) => ({ name: `claim-${i}`, mountPath: `/volumes/${claim}` })),
        },
      ],
      volumes: claims.map((claim, i) => ({ name: `claim-${i}`, persistentVolumeClaim: { claimName: claim } })),
    },
  };
}
