// Local-path provisioner: PVs backed by directories under the cluster's pv/ directory. Two StorageClasses, so that
// storage-class mapping can be tested: `local-path` (default, WaitForFirstConsumer: the PV is made for the node the
// scheduler picked and carries that node affinity) and `local-path-immediate` (Immediate: made as soon as the claim
// exists). A Released PV is deleted with its directory when its reclaim policy is Delete, and kept when it is Retain.
import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import type { KubeConfig, V1PersistentVolume, V1PersistentVolumeClaim, V1StorageClass } from "@kubernetes/client-node";
import { CoreV1Api, StorageV1Api } from "@kubernetes/client-node";
import type { Logger } from "../common/index.js";
import { describeError, sleep } from "../common/index.js";
import { createIfAbsent, isNotFound, watchTrigger } from "../kube/index.js";

export const PROVISIONER_NAME = "theseus.local/local-path";
export const STORAGE_CLASS_WAIT = "local-path";
export const STORAGE_CLASS_IMMEDIATE = "local-path-immediate";
const ANN_PROVISIONER = "volume.beta.kubernetes.io/storage-provisioner";
const ANN_SELECTED_NODE = "volume.kubernetes.io/selected-node";
const ANN_PROVISIONED_BY = "pv.kubernetes.io/provisioned-by";
const ANN_PV_DIR = "theseus.local/pv-dir";

export function storageClassManifests(): V1StorageClass[] {
  const base = { apiVersion: "storage.k8s.io/v1", kind: "StorageClass", provisioner: PROVISIONER_NAME, reclaimPolicy: "Delete" };
  return [
    {
      ...base,
      metadata: { name: STORAGE_CLASS_WAIT, annotations: { "storageclass.kubernetes.io/is-default-class": "true" } },
      volumeBindingMode: "WaitForFirstConsumer",
    },
    { ...base, metadata: { name: STORAGE_CLASS_IMMEDIATE }, volumeBindingMode: "Immediate" },
  ];
}

export interface ProvisionerOptions {
  readonly kubeConfig: KubeConfig;
  readonly pvDir: string;
  readonly logger: Logger;
  readonly signal: AbortSignal;
  readonly resyncMs?: number;
}

export async function runProvisioner(options: ProvisionerOptions): Promise<void> {
  const { kubeConfig: kc, pvDir, signal } = options;
  const logger = options.logger.child({ component: "local-path-provisioner" });
  const core = kc.makeApiClient(CoreV1Api);
  const storage = kc.makeApiClient(StorageV1Api);
  let wake: (() => void) | undefined;
  const poke = (): void => wake?.();
  void watchTrigger(kc, "/api/v1/persistentvolumeclaims", {}, poke, signal, logger);
  void watchTrigger(kc, "/api/v1/persistentvolumes", {}, poke, signal, logger);
  await mkdir(pvDir, { recursive: true });
  while (!signal.aborted) {
    try {
      await reconcile(core, storage, pvDir, logger);
    } catch (error) {
      logger.warn({ err: describeError(error) }, "provisioner pass failed; retrying");
    }
    await new Promise<void>((resolve) => {
      wake = resolve;
      sleep(options.resyncMs ?? 5000, signal).then(resolve, resolve);
    });
    wake = undefined;
    await sleep(200, signal).catch(() => undefined); // let a burst of watch events coalesce
  }
}

async function reconcile(core: CoreV1Api, storage: StorageV1Api, pvDir: string, logger: Logger): Promise<void> {
  const classes = new Map((await storage.listStorageClass()).items.map((sc) => [sc.metadata?.name ?? "", sc]));
  const pvs = (await core.listPersistentVolume()).items;
  const pvNames = new Set(pvs.map((pv) => pv.metadata?.name));
  for (const pvc of (await core.listPersistentVolumeClaimForAllNamespaces()).items) {
    const sc = classes.get(pvc.spec?.storageClassName ?? "");
    if (sc?.provisioner !== PROVISIONER_NAME) continue;
    if (pvc.status?.phase !== "Pending" || (pvc.spec?.volumeName ?? "") !== "") continue;
    if (pvc.metadata?.annotations?.[ANN_PROVISIONER] !== PROVISIONER_NAME) continue; // the PV controller has not asked yet
    if (pvc.metadata.deletionTimestamp !== undefined) continue;
    const selectedNode = pvc.metadata.annotations[ANN_SELECTED_NODE];
    if (sc.volumeBindingMode === "WaitForFirstConsumer" && selectedNode === undefined) continue;
    const name = `pvc-${pvc.metadata.uid ?? ""}`;
    if (pvNames.has(name)) continue;
    await provision(core, pvc, sc, name, pvDir, selectedNode, logger);
  }
  for (const pv of pvs) {
    if (pv.metadata?.annotations?.[ANN_PROVISIONED_BY] !== PROVISIONER_NAME) continue;
    if (pv.status?.phase !== "Released" || pv.spec?.persistentVolumeReclaimPolicy !== "Delete") continue;
    await reclaim(core, pv, logger);
  }
}

async function provision(
  core: CoreV1Api,
  pvc: V1PersistentVolumeClaim,
  sc: V1StorageClass,
  name: string,
  pvDir: string,
  selectedNode: string | undefined,
  logger: Logger,
): Promise<void> {
  const dir = join(pvDir, name);
  await mkdir(dir, { recursive: true, mode: 0o777 });
  const pv: V1PersistentVolume = {
    apiVersion: "v1",
    kind: "PersistentVolume",
    metadata: { name, annotations: { [ANN_PROVISIONED_BY]: PROVISIONER_NAME, [ANN_PV_DIR]: dir } },
    spec: {
      capacity: { storage: pvc.spec?.resources?.requests?.["storage"] ?? "1Gi" },
      accessModes: pvc.spec?.accessModes ?? ["ReadWriteOnce"],
      persistentVolumeReclaimPolicy: sc.reclaimPolicy ?? "Delete",
      storageClassName: sc.metadata?.name ?? "",
      volumeMode: pvc.spec?.volumeMode ?? "Filesystem",
      hostPath: { path: dir, type: "DirectoryOrCreate" },
      claimRef: {
        apiVersion: "v1",
        kind: "PersistentVolumeClaim",
        namespace: pvc.metadata?.namespace ?? "default",
        name: pvc.metadata?.name ?? "",
        uid: pvc.metadata?.uid ?? "",
      },
      ...(selectedNode === undefined
        ? {}
        : {
            nodeAffinity: {
              required: {
                nodeSelectorTerms: [{ matchExpressions: [{ key: "kubernetes.io/hostname", operator: "In", values: [selectedNode] }] }],
              },
            },
          }),
    },
  };
  await createIfAbsent(() => core.createPersistentVolume({ body: pv }));
  logger.info({ pv: name, claim: `${pvc.metadata?.namespace}/${pvc.metadata?.name}`, dir }, "provisioned");
  await recordEvent(core, pvc, "ProvisioningSucceeded", `Successfully provisioned volume ${name} (directory ${dir})`);
}

async function reclaim(core: CoreV1Api, pv: V1PersistentVolume, logger: Logger): Promise<void> {
  const name = pv.metadata?.name ?? "";
  const dir = pv.metadata?.annotations?.[ANN_PV_DIR] ?? pv.spec?.hostPath?.path;
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  try {
    await core.deletePersistentVolume({ name });
  } catch (error) {
    if (!isNotFound(error)) throw error;
  }
  logger.info({ pv: name, dir }, "released volume deleted (reclaim policy Delete)");
}

async function recordEvent(core: CoreV1Api, pvc: V1PersistentVolumeClaim, reason: string, message: string): Promise<void> {
  const now = new Date();
  const namespace = pvc.metadata?.namespace ?? "default";
  await core
    .createNamespacedEvent({
      namespace,
      body: {
        metadata: { generateName: `${pvc.metadata?.name ?? "pvc"}.`, namespace },
        involvedObject: { kind: "PersistentVolumeClaim", apiVersion: "v1", namespace, name: pvc.metadata?.name ?? "", uid: pvc.metadata?.uid ?? "" },
        reason,
        message,
        type: "Normal",
        source: { component: PROVISIONER_NAME },
        firstTimestamp: now,
        lastTimestamp: now,
        count: 1,
      },
    })
    .catch(() => undefined);
}
