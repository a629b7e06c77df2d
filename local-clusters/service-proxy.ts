// The local clusters' kube-proxy, for NodePorts only: every node's address (127.<cluster>.0.<n>) answers on the
// nodePort of each NodePort or LoadBalancer Service and relays the TCP connection, bytes untouched, to one ready pod
// that the Service selects. It resolves the selector itself at each connection instead of reading Endpoints: the API
// server refuses Endpoints with loopback addresses ("may not be in the loopback range"), and every pod IP here is one. It is what lets a Helm-installed agent keep one address (node address and nodePort) while
// its pod, and with it the pod IP, is replaced. ClusterIPs are not proxied: nothing here dials them.
//
// Level-based like the kubelet: a watch on Services only says "look now"; each pass lists them and reconciles the
// listeners, and a resync runs every couple of seconds anyway.
import { createServer, connect } from "node:net";
import type { Server, Socket } from "node:net";
import type { KubeConfig, V1Pod, V1Service } from "@kubernetes/client-node";
import { CoreV1Api } from "@kubernetes/client-node";
import type { Logger } from "../common/index.js";
import { describeError, sleep } from "../common/index.js";
import { watchTrigger } from "../kube/index.js";

export interface ServiceProxyOptions {
  readonly kubeConfig: KubeConfig;
  /** The addresses the NodePorts answer on: every node's. */
  readonly nodeIps: readonly string[];
  readonly logger: Logger;
  readonly signal: AbortSignal;
}

/** Where one nodePort leads: a Service's port, resolved to a ready pod at each connection. */
interface Route {
  readonly namespace: string;
  readonly service: string;
  readonly selector: Readonly<Record<string, string>>;
  /** The port's targetPort: a container port's name or number. */
  readonly targetPort: string | number;
}

const RESYNC_MS = 2_000;

export async function runServiceProxy(options: ServiceProxyOptions): Promise<void> {
  const { kubeConfig: kc, signal } = options;
  const logger = options.logger.child({ component: "service-proxy" });
  const core = kc.makeApiClient(CoreV1Api);
  // nodePort -> its route (the table the listeners read at each connection) and its listeners, one per node address.
  const routes = new Map<number, Route>();
  const listeners = new Map<number, Server[]>();

  // The pods are read at each connection, so a replaced pod is reached as soon as it is ready. Connections are few
  // (a gRPC channel lives long), so the list costs nothing that matters.
  const relay = async (nodePort: number, client: Socket): Promise<void> => {
    client.pause();
    client.on("error", () => undefined);
    const route = routes.get(nodePort);
    const selector = Object.entries(route?.selector ?? {}).map(([k, v]) => `${k}=${v}`).join(",");
    const pods = route === undefined || selector === "" ? [] : (await core.listNamespacedPod({ namespace: route.namespace, labelSelector: selector }).catch(() => ({ items: [] as V1Pod[] }))).items;
    const target = route === undefined ? undefined : pickReadyPod(pods, route.targetPort);
    if (target === undefined) {
      // As kube-proxy's REJECT for a Service without ready endpoints: the caller's connection ends at once.
      client.destroy();
      return;
    }
    const upstream = connect({ host: target.ip, port: target.port });
    client.on("error", () => upstream.destroy());
    upstream.on("error", () => client.destroy());
    client.pipe(upstream).pipe(client);
    client.resume();
  };

  const listen = async (nodePort: number): Promise<void> => {
    const servers: Server[] = [];
    for (const ip of options.nodeIps) {
      const server = createServer((socket) => void relay(nodePort, socket));
      await new Promise<void>((resolve) => {
        server.once("error", (error) => {
          // Another process on this machine holds the port on this address: the Service is unreachable there, said once.
          logger.warn({ nodePort, ip, err: describeError(error) }, "cannot listen on a NodePort");
          resolve();
        });
        server.listen(nodePort, ip, () => resolve());
      });
      if (!server.listening) continue;
      // After listen, an accept that fails (EMFILE) is an 'error' on the server: logged, never the node daemon's end.
      server.on("error", (error) => logger.warn({ nodePort, ip, err: describeError(error) }, "NodePort listener error"));
      servers.push(server);
    }
    listeners.set(nodePort, servers);
  };

  const reconcile = async (): Promise<void> => {
    const services = await core.listServiceForAllNamespaces();
    const wanted = new Map<number, Route>();
    for (const s of services.items) for (const [nodePort, route] of nodePortsOf(s)) wanted.set(nodePort, route);
    for (const [nodePort, servers] of listeners) {
      if (wanted.has(nodePort)) continue;
      for (const server of servers) server.close();
      listeners.delete(nodePort);
      routes.delete(nodePort);
      logger.info({ nodePort }, "NodePort closed");
    }
    for (const [nodePort, route] of wanted) {
      routes.set(nodePort, route);
      if (listeners.has(nodePort)) continue;
      await listen(nodePort);
      logger.info({ nodePort, service: `${route.namespace}/${route.service}`, targetPort: route.targetPort, on: options.nodeIps }, "NodePort open");
    }
  };

  let wake: (() => void) | undefined;
  let pending = false;
  const trigger = (): void => {
    pending = true;
    wake?.();
  };
  void watchTrigger(kc, "/api/v1/services", {}, trigger, signal, logger);
  try {
    while (!signal.aborted) {
      pending = false;
      await reconcile().catch((error: unknown) => logger.warn({ err: describeError(error) }, "service proxy pass failed"));
      if (pending) continue;
      await new Promise<void>((resolve) => {
        wake = resolve;
        sleep(RESYNC_MS, signal).then(resolve, resolve);
      });
      wake = undefined;
    }
  } finally {
    for (const servers of listeners.values()) for (const server of servers) server.close();
  }
}

function nodePortsOf(service: V1Service): [number, Route][] {
  const type = service.spec?.type ?? "ClusterIP";
  if (type !== "NodePort" && type !== "LoadBalancer") return [];
  const namespace = service.metadata?.namespace ?? "";
  const name = service.metadata?.name ?? "";
  const selector = service.spec?.selector ?? {};
  return (service.spec?.ports ?? [])
    .filter((p) => p.nodePort !== undefined && (p.protocol ?? "TCP") === "TCP")
    .map((p) => [p.nodePort ?? 0, { namespace, service: name, selector, targetPort: p.targetPort ?? p.port }]);
}

/** A ready pod's address for the target port, chosen at random as kube-proxy's iptables mode does. */
function pickReadyPod(pods: readonly V1Pod[], targetPort: string | number): { ip: string; port: number } | undefined {
  const candidates: { ip: string; port: number }[] = [];
  for (const pod of pods) {
    const ip = pod.status?.podIP;
    const ready = pod.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") === true;
    if (ip === undefined || !ready || pod.metadata?.deletionTimestamp !== undefined) continue;
    const port =
      typeof targetPort === "number"
        ? targetPort
        : (pod.spec?.containers ?? []).flatMap((c) => c.ports ?? []).find((p) => p.name === targetPort)?.containerPort ?? (/^\d+$/.test(targetPort) ? Number(targetPort) : undefined);
    if (port !== undefined) candidates.push({ ip, port });
  }
  return candidates[Math.floor(Math.random() * candidates.length)];
}
