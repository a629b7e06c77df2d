// In-cluster credentials for programs that run as pods (the agent, its movers), on a real cluster or a local one. A
// real pod reads its service-account token at /var/run/secrets/kubernetes.io/serviceaccount; a local process cannot
// mount, so the local clusters' emulated kubelet passes the directory in THESEUS_MOUNTS. This works in both worlds: on a real cluster the mapping is
// absent and the standard path is used.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { KubeConfig } from "@kubernetes/client-node";
import { TheseusError } from "../common/index.js";

export const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

/** The host directory behind a container path, per THESEUS_MOUNTS (longest matching mountPath); else the path itself. */
export function hostPathFor(containerPath: string, env: NodeJS.ProcessEnv = process.env): string {
  let mounts: Record<string, string> = {};
  try {
    mounts = JSON.parse(env["THESEUS_MOUNTS"] ?? "{}") as Record<string, string>;
  } catch {
    return containerPath;
  }
  let best: [string, string] | undefined;
  for (const [mountPath, host] of Object.entries(mounts)) {
    const mp = mountPath.replace(/\/+$/, "");
    if ((containerPath === mp || containerPath.startsWith(`${mp}/`)) && (best === undefined || mp.length > best[0].length)) best = [mp, host];
  }
  return best === undefined ? containerPath : join(best[1], containerPath.slice(best[0].length));
}

/** A KubeConfig from the pod's service account, as client-node's loadFromCluster() would build it on a real node. */
export function inClusterKubeConfig(env: NodeJS.ProcessEnv = process.env): KubeConfig {
  const host = env["KUBERNETES_SERVICE_HOST"];
  const port = env["KUBERNETES_SERVICE_PORT"];
  if (host === undefined || port === undefined) {
    throw new TheseusError("failed_precondition", "not running in a pod: KUBERNETES_SERVICE_HOST/PORT are not set", {
      hint: "pass a kubeconfig instead, or run this inside a pod",
    });
  }
  const dir = hostPathFor(SERVICE_ACCOUNT_DIR, env);
  let token: string;
  try {
    token = readFileSync(join(dir, "token"), "utf8").trim();
  } catch (cause) {
    throw new TheseusError("failed_precondition", `no service-account token in ${dir}`, {
      cause,
      hint: "the pod needs a service account with automountServiceAccountToken enabled",
    });
  }
  const kc = new KubeConfig();
  const server = `https://${host.includes(":") ? `[${host}]` : host}:${port}`;
  kc.loadFromOptions({
    clusters: [{ name: "in-cluster", server, caFile: join(dir, "ca.crt"), skipTLSVerify: false }],
    users: [{ name: "in-cluster", token }],
    contexts: [{ name: "in-cluster", cluster: "in-cluster", user: "in-cluster", namespace: readNamespace(dir) }],
    currentContext: "in-cluster",
  });
  return kc;
}

function readNamespace(dir: string): string {
  try {
    return readFileSync(join(dir, "namespace"), "utf8").trim();
  } catch {
    return "default";
  }
}
