// The agent's own cluster: from a kubeconfig (an agent running outside the cluster), in-cluster from its service
// account, or none (static volumes only; the application-model calls then fail with a hint).
import type { KubeConfig } from "@kubernetes/client-node";
import { TheseusError } from "../../common/index.js";
import { createKubeObjects, createKubeRest, inClusterKubeConfig, loadKubeConfig } from "../../kube/index.js";
import type { KubeObjects } from "../../kube/index.js";
import type { KubeObject, ObjectRef } from "../../app-model/index.js";
import type { Logger } from "../../common/index.js";
import { createMoverAccess } from "./movers.js";
import type { MoverSettings } from "./movers.js";
import { createDirectVolumeAccess, selectVolumeAccess } from "./volume-access.js";
import type { VolumeAccess, VolumeAccessMode } from "./volume-access.js";

export type ClusterSource = { readonly kind: "kubeconfig"; readonly path: string } | { readonly kind: "in-cluster" } | { readonly kind: "none" };

export interface ClusterAccess {
  readonly kubeConfig: KubeConfig;
  readonly objects: KubeObjects;
  readonly volumes: VolumeAccess;
  /** The node holder pods are pinned to (where this agent reaches volumes); undefined: any node. */
  readonly nodeName: string | undefined;
}

/** How claims are reached (--volume-access) and what movers need; without it, direct access only. */
export interface VolumeAccessSettings {
  readonly mode: VolumeAccessMode;
  readonly movers: MoverSettings;
  readonly clusterName: string;
  readonly tls: { readonly caPem: string; readonly certPem: string; readonly keyPem: string };
  readonly logger: Logger;
}

export function connectCluster(source: ClusterSource, nodeName?: string, access?: VolumeAccessSettings): ClusterAccess | undefined {
  if (source.kind === "none") return undefined;
  let kubeConfig: KubeConfig;
  try {
    kubeConfig = source.kind === "kubeconfig" ? loadKubeConfig(source.path) : inClusterKubeConfig();
  } catch (error) {
    if (error instanceof TheseusError) throw error;
    throw new TheseusError("invalid_argument", source.kind === "kubeconfig" ? `cannot load the kubeconfig ${source.path}` : "cannot load the in-cluster configuration", {
      cause: error,
      hint: "check the --kubeconfig path and that the file is a valid kubeconfig",
    });
  }
  const objects = createKubeObjects(createKubeRest(kubeConfig));
  const direct = createDirectVolumeAccess(objects);
  const movers = access === undefined || access.mode === "direct" ? undefined : createMoverAccess({ ...access.movers, objects, clusterName: access.clusterName, tls: access.tls, logger: access.logger });
  return { kubeConfig, objects, volumes: selectVolumeAccess(access?.mode ?? "direct", direct, movers), nodeName };
}

/** The cluster, or the error every application-model call gives when the agent has none. */
export function requireCluster(cluster: ClusterAccess | undefined): ClusterAccess {
  if (cluster === undefined) {
    throw new TheseusError("failed_precondition", "this agent has no Kubernetes cluster configured", {
      hint: "start it with --kubeconfig PATH (or THESEUS_KUBECONFIG, or `kubeconfig` in its config file), or run it in a pod",
    });
  }
  return cluster;
}

/** The object, or undefined when absent or when its kind is not served yet (a custom resource whose CRD comes first). */
export async function getIfServed(cluster: ClusterAccess, ref: ObjectRef, signal?: AbortSignal): Promise<KubeObject | undefined> {
  try {
    return await cluster.objects.get(ref, signal);
  } catch (error) {
    if (error instanceof TheseusError && error.code === "not_found") return undefined;
    throw error;
  }
}

