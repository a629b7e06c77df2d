// The demo app as a Kubernetes application of a local cluster: a namespace, a claim, a one-replica Deployment of the
// demo-app image and a Service, plus what the demo and the end-to-end tests need to find of it (its pod's address,
// its volume's directory). Dev tooling: it reads the local clusters' kubeconfigs, which a real coordinator never has.
import { randomBytes } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { KubeObject } from "../../app-model/index.js";
import { TheseusError } from "../../common/index.js";
import { createKubeObjects, createKubeRest, loadKubeConfig, waitUntil } from "../../kube/index.js";
import type { KubeObjects } from "../../kube/index.js";
import type { LocalCluster } from "../../local-clusters/index.js";

export const DEMO_APP_NAME = "ledger";
export const DEMO_APP_PORT = 8080;
const DEMO_IMAGE = "theseus.local/demo-app:dev";
const APP_LABEL = "app.kubernetes.io/name";

export interface DemoAppOptions {
  readonly namespace: string;
  readonly storageClass: string;
  readonly sizeBytes: number;
  readonly signal?: AbortSignal | undefined;
}

/** The app's objects, in creation order. */
export function demoAppObjects(options: Pick<DemoAppOptions, "namespace" | "storageClass" | "sizeBytes">): KubeObject[] {
  const { namespace } = options;
  const labels = { [APP_LABEL]: DEMO_APP_NAME };
  const meta = { name: DEMO_APP_NAME, namespace, labels };
  return [
    {
      apiVersion: "v1",
      kind: "PersistentVolumeClaim",
      metadata: { ...meta, name: `${DEMO_APP_NAME}-data` },
      spec: { accessModes: ["ReadWriteOnce"], storageClassName: options.storageClass, resources: { requests: { storage: String(options.sizeBytes) } } },
    },
    {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: meta,
      spec: {
        replicas: 1,
        // One writer per volume: the old pod is gone before a new one mounts the claim.
        strategy: { type: "Recreate" },
        selector: { matchLabels: labels },
        template: {
          metadata: { labels },
          spec: {
            terminationGracePeriodSeconds: 10,
            containers: [
              {
                name: "server",
                image: DEMO_IMAGE,
                args: ["serve", "--port", String(DEMO_APP_PORT)],
                env: [{ name: "DATA_DIR", value: "/data" }],
                ports: [{ name: "http", containerPort: DEMO_APP_PORT }],
                // The shortest period Kubernetes allows: readiness is part of the cutover's downtime.
                readinessProbe: { httpGet: { path: "/healthz", port: DEMO_APP_PORT }, periodSeconds: 1 },
                volumeMounts: [{ name: "data", mountPath: "/data" }],
              },
            ],
            volumes: [{ name: "data", persistentVolumeClaim: { claimName: `${DEMO_APP_NAME}-data` } }],
          },
        },
      },
    },
    {
      apiVersion: "v1",
      kind: "Service",
      metadata: meta,
      spec: { selector: labels, ports: [{ name: "http", port: DEMO_APP_PORT, targetPort: DEMO_APP_PORT }] },
    },
  ];
}

export function demoClaimName(): string {
  return `${DEMO_APP_NAME}-data`;
}

/** The Kubernetes side of one local cluster, as the demo sees it. */
export interface DemoCluster {
  readonly cluster: LocalCluster;
  readonly objects: KubeObjects;
}

export function demoCluster(cluster: LocalCluster): DemoCluster {
  return { cluster, objects: createKubeObjects(createKubeRest(loadKubeConfig(cluster.kubeconfigPath))) };
}

/** Creates the namespace and the app and waits until its pod is ready; returns the pod's URL. */
export async function deployDemoApp(target: DemoCluster, options: DemoAppOptions): Promise<string> {
  const { objects } = target;
  const { namespace, signal } = options;
  await objects.create({ apiVersion: "v1", kind: "Namespace", metadata: { name: namespace } }, signal);
  // The ServiceAccount admission plugin refuses pods until the namespace's default token exists.
  await waitUntil({
    what: `the default service account's token in ${namespace}`,
    timeoutMs: 60_000,
    signal,
    intervalMs: 200,
    probe: async () => {
      const sa = await objects.get({ apiVersion: "v1", kind: "ServiceAccount", namespace, name: "default" }, signal);
      return Array.isArray(sa?.["secrets"]) && sa["secrets"].length > 0 ? { done: true, value: undefined } : { done: false, pending: "no token yet" };
    },
  });
  for (const object of demoAppObjects(options)) await objects.create(object, signal);
  return waitForAppUrl(target, namespace, { ready: true, timeoutMs: 120_000, signal });
}

interface PodView {
  readonly metadata: { readonly name?: string; readonly deletionTimestamp?: string };
  readonly status?: { readonly podIP?: string; readonly conditions?: readonly { readonly type: string; readonly status: string }[] };
}

/**
 * The URL of the app's pod in the namespace: as soon as it has an address (the load client retries until it serves),
 * or once it is Ready.
 */
export async function waitForAppUrl(target: DemoCluster, namespace: string, options: { ready: boolean; timeoutMs: number; signal?: AbortSignal | undefined }): Promise<string> {
  const pods = await target.objects.resourceFor("v1", "Pod", options.signal);
  return waitUntil({
    what: `a ${options.ready ? "ready" : "running"} pod of ${DEMO_APP_NAME} in ${target.cluster.name}/${namespace}`,
    timeoutMs: options.timeoutMs,
    signal: options.signal,
    intervalMs: 100,
    watch: { kubeConfig: loadKubeConfig(target.cluster.kubeconfigPath), paths: [`/api/v1/namespaces/${namespace}/pods`] },
    probe: async () => {
      const list = (await target.objects.list(pods, { namespace, labelSelector: `${APP_LABEL}=${DEMO_APP_NAME}` }, options.signal)) as unknown as PodView[];
      const pod = list.find((p) => p.metadata.deletionTimestamp === undefined && p.status?.podIP !== undefined && (!options.ready || p.status.conditions?.some((c) => c.type === "Ready" && c.status === "True") === true));
      return pod?.status?.podIP === undefined ? { done: false, pending: `${list.length} pods, none ${options.ready ? "ready" : "with an address"}` } : { done: true, value: `http://${pod.status.podIP}:${DEMO_APP_PORT}` };
    },
  });
}

/** The host directory behind the app's claim (local-path PVs are directories of the cluster). */
export async function demoVolumeDir(target: DemoCluster, namespace: string, signal?: AbortSignal): Promise<string> {
  const claim = await target.objects.get({ apiVersion: "v1", kind: "PersistentVolumeClaim", namespace, name: demoClaimName() }, signal);
  const volumeName = (claim?.["spec"] as { volumeName?: string } | undefined)?.volumeName;
  if (volumeName === undefined || volumeName === "") {
    throw new TheseusError("not_found", `claim ${namespace}/${demoClaimName()} in ${target.cluster.name} is not bound to a volume`, { hint: "is the app deployed and its pod scheduled?" });
  }
  const pv = await target.objects.get({ apiVersion: "v1", kind: "PersistentVolume", namespace: "", name: volumeName }, signal);
  const path = (pv?.["spec"] as { hostPath?: { path?: string } } | undefined)?.hostPath?.path;
  if (path === undefined) throw new TheseusError("not_found", `volume ${volumeName} of ${target.cluster.name} is not a local-path directory`);
  return path;
}

const SEED_FILE_BYTES = 4 * 1024 * 1024;

/**
 * Fills a volume directory with random (incompressible) files beside the app's own, so that round 0 has a volume's
 * worth to copy and the later rounds have many files to scan; returns the bytes written.
 */
export async function seedVolume(dir: string, totalBytes: number, signal?: AbortSignal): Promise<number> {
  await mkdir(dir, { recursive: true });
  let written = 0;
  for (let i = 0; written < totalBytes; i++) {
    signal?.throwIfAborted();
    const size = Math.min(SEED_FILE_BYTES, totalBytes - written);
    await writeFile(join(dir, `blob-${String(i).padStart(5, "0")}.bin`), randomBytes(size));
    written += size;
  }
  return written;
}
