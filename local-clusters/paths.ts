// Where things live: the cached control-plane binaries (built by scripts/build-kubernetes.sh), the per-cluster state
// under THESEUS_HOME, and the repository root (for the programs that known images map to).
import { accessSync, constants } from "node:fs";
import { homedir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { TheseusError } from "../common/index.js";

export const KUBERNETES_VERSION = "v1.20.2";
export const BUILD_SCRIPT = "scripts/build-kubernetes.sh";

/** The repository root: this file compiles to <repo>/dist/local-clusters/paths.js. */
export const repoRoot: string = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");

export function theseusHome(): string {
  return process.env["THESEUS_HOME"] ?? join(homedir(), ".theseus");
}

export function clustersRoot(): string {
  return join(theseusHome(), "clusters");
}

export function clusterDir(name: string): string {
  return join(clustersRoot(), name);
}

export function kubernetesBinDir(): string {
  const cache = process.env["THESEUS_CACHE"] ?? join(homedir(), ".cache", "theseus");
  return join(cache, `kubernetes-${KUBERNETES_VERSION}`, "bin");
}

export interface ControlPlaneBinaries {
  readonly etcd: string;
  readonly kubeApiserver: string;
  readonly kubeControllerManager: string;
  readonly kubeScheduler: string;
}

/** Finds the binaries or fails with a message that names the build script. */
export function controlPlaneBinaries(): ControlPlaneBinaries {
  const bin = kubernetesBinDir();
  const found: ControlPlaneBinaries = {
    etcd: process.env["THESEUS_ETCD"] ?? "/usr/bin/etcd",
    kubeApiserver: join(bin, "kube-apiserver"),
    kubeControllerManager: join(bin, "kube-controller-manager"),
    kubeScheduler: join(bin, "kube-scheduler"),
  };
  for (const path of [found.etcd, found.kubeApiserver, found.kubeControllerManager, found.kubeScheduler]) {
    try {
      accessSync(path, constants.X_OK);
    } catch (cause) {
      throw new TheseusError("failed_precondition", `control-plane binary ${path} is missing`, {
        cause,
        hint: `build (or reuse) the local Kubernetes ${KUBERNETES_VERSION} control plane first: ${BUILD_SCRIPT} (first run: apt packages and about 5-7 minutes of compiling; later runs reuse ${bin})`,
      });
    }
  }
  return found;
}

const CLUSTER_NAME = /^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/;

export function validateClusterName(name: string): string {
  if (!CLUSTER_NAME.test(name)) {
    throw new TheseusError("invalid_argument", `invalid cluster name ${JSON.stringify(name)}`, {
      hint: "use 1-32 lower-case letters, digits and dashes, starting and ending with a letter or digit (e.g. source, target-1)",
    });
  }
  return name;
}
