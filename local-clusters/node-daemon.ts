// The detached process behind every local cluster's nodes: one emulated kubelet per Node, the local-path
// provisioner, the DeploymentConfig controller and the NodePort proxy. Started by upCluster as `node dist/local-clusters/node-daemon.js
// CLUSTER_DIR`; stops its pods and exits on SIGTERM (downCluster).
import { setMaxListeners } from "node:events";
import { join } from "node:path";
import { CoreV1Api } from "@kubernetes/client-node";
import { createLogger, describeError } from "../common/index.js";
import { loadKubeConfig } from "../kube/index.js";
import { runKubelet } from "./kubelet.js";
import { runDeploymentConfigController } from "./openshift.js";
import { runProvisioner } from "./provisioner.js";
import { runServiceProxy } from "./service-proxy.js";
import { nodeIpOf, readState } from "./state.js";

async function main(): Promise<void> {
  const dir = process.argv[2];
  if (dir === undefined) throw new Error("usage: node-daemon.js CLUSTER_DIR");
  const state = await readState(dir);
  if (state === undefined) throw new Error(`no state.json in ${dir}`);
  const logger = createLogger({ name: `theseus-local-${state.name}`, level: (process.env["THESEUS_LOG_LEVEL"] as "info" | undefined) ?? "info" });
  const kc = loadKubeConfig(state.kubeconfigPath);
  const controller = new AbortController();
  for (const sig of ["SIGTERM", "SIGINT"] as const) {
    process.on(sig, () => {
      logger.info({ signal: sig }, "stopping");
      controller.abort();
    });
  }
  const signal = controller.signal;
  // Every loop sleeps on this one signal; the default limit of 10 listeners would only produce noise.
  setMaxListeners(1000, signal);

  // Pod IPs: 127.<cluster index>.X.Y, never reused while this daemon lives; start after the highest one in use.
  const prefix = state.podIpPrefix;
  const pods = await kc.makeApiClient(CoreV1Api).listPodForAllNamespaces();
  let next = 256;
  for (const p of pods.items) {
    const ip = p.status?.podIP;
    if (ip?.startsWith(`${prefix}.`) === true) {
      const [, , x, y] = ip.split(".").map(Number);
      if (x !== undefined && y !== undefined) next = Math.max(next, x * 256 + y + 1);
    }
  }
  const podIp = (existing: string | undefined): string => {
    if (existing?.startsWith(`${prefix}.`) === true) return existing;
    if (next % 256 === 0 || next % 256 === 255) next += next % 256 === 0 ? 1 : 2;
    const n = next++;
    return `${prefix}.${Math.floor(n / 256) % 256}.${n % 256}`;
  };

  await Promise.all([
    ...state.nodes.map((nodeName) =>
      runKubelet({ kubeConfig: kc, nodeName, nodeIp: nodeIpOf(state, nodeName), podsDir: join(dir, "pods"), apiServerPort: state.ports.apiServer, podIp, logger, signal }),
    ),
    runServiceProxy({ kubeConfig: kc, nodeIps: state.nodes.map((n) => nodeIpOf(state, n)), logger, signal }),
    runProvisioner({ kubeConfig: kc, pvDir: join(dir, "pv"), logger, signal }),
    runDeploymentConfigController({ kubeConfig: kc, logger, signal }),
  ]);
  logger.info("stopped");
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`node daemon failed: ${describeError(error)}\n`);
    process.exit(1);
  },
);
