// The agent daemon: one mTLS gRPC endpoint serving the control service to coordinators and the transfer service to its
// peer agent, over the volumes it is configured with.
import { mkdir } from "node:fs/promises";
import { TheseusError, VERSION, silentLogger } from "../common/index.js";
import type { Logger } from "../common/index.js";
import { createKubeRest } from "../kube/index.js";
import { createRpcServer, describeIdentity } from "../rpc/index.js";
import type { CallContext, TlsMaterial } from "../rpc/index.js";
import { AgentService } from "../proto/gen/theseus/v1/agent_pb.js";
import { MigrationService } from "../proto/gen/theseus/v1/migration_pb.js";
import { TransferService } from "../proto/gen/theseus/v1/transfer_pb.js";
import type { AgentOptions } from "./config.js";
import { createAppService } from "./app-service.js";
import { createArchiveService } from "./archive-service.js";
import { connectCluster, sweepMovers } from "./cluster/index.js";
import { createControlService } from "./control-service.js";
import { createMigrations } from "./migration/index.js";
import { createMigrationService } from "./migration-service.js";
import { SessionRegistry } from "./migration/index.js";
import { SyncSources, sweepAllLeftovers } from "./sync/index.js";
import { createTransferService } from "./transfer-service.js";
import { VolumeRegistry } from "./volumes.js";
import { createTlsReloader, startHealthServer, validateTls } from "./health/index.js";
import type { HealthServer, ReadinessCheck, TlsReloader } from "./health/index.js";
import { createAgentMetrics, observeService, observeSteps, participantCollector, syncVolumeRounds } from "./metrics/index.js";
import type { AgentMetrics } from "./metrics/index.js";

export interface Agent {
  /** host:port the agent listens on (the real port when configured with port 0). */
  readonly address: string;
  readonly port: number;
  /** host:port of the plain HTTP health and metrics port, when configured. */
  readonly healthAddress: string | undefined;
  readonly metrics: AgentMetrics;
  /** Stops accepting calls, lets in-flight work finish within the grace time, then cancels it. */
  close(graceMs?: number): Promise<void>;
}

export interface AgentDependencies {
  readonly logger?: Logger;
  /** TLS material given directly (tests, sync-dirs); otherwise read from the paths in the options. */
  readonly tls?: TlsMaterial;
}

export async function startAgent(options: AgentOptions, deps: AgentDependencies = {}): Promise<Agent> {
  const logger = (deps.logger ?? silentLogger()).child({ component: "agent", cluster: options.clusterName });
  const metrics = createAgentMetrics({ cluster: options.clusterName });
  // The TLS files are watched for rotation; material given directly (tests) is used as it is. `tls` reads through to
  // the reloader's latest good material, so the dialers to the peer agent pick a rotation up on their next dial.
  let onTlsChange: (material: TlsMaterial) => void = () => undefined;
  let reloader: TlsReloader | undefined;
  let tls: TlsMaterial;
  if (deps.tls !== undefined) {
    tls = deps.tls;
  } else {
    reloader = await createTlsReloader({ paths: options.tls, identity: { role: "agent", name: options.clusterName }, intervalMs: options.tlsReloadIntervalMs, logger, onChange: (m) => onTlsChange(m), onLoad: (r, n) => metrics.tlsLoaded(r, n) });
    tls = reloader.material;
  }
  await mkdir(options.stateDir, { recursive: true, mode: 0o700 });
  const cluster = connectCluster(options.cluster, options.nodeName, { mode: options.volumeAccess, movers: options.movers, clusterName: options.clusterName, tls, logger });
  const volumes = new VolumeRegistry(options.volumes, cluster?.volumes);
  const sessions = new SessionRegistry();
  // Scratch files of rounds a kill -9 of this agent (or of another agent on this state directory) cut short.
  sweepAllLeftovers(options.stateDir, logger.child({ component: "sync" }));
  const syncSources = new SyncSources(options.stateDir, logger.child({ component: "sync-source" }), options.syncState);

  const migrations = observeSteps(createMigrations({
    clusterName: options.clusterName,
    cluster,
    namespace: options.namespace,
    volumes,
    sessions,
    syncSources,
    tls,
    stateDir: options.stateDir,
    logger,
    defaultTimeoutMs: options.kubeTimeoutMs,
    minRoundIntervalMs: 1000,
    retryDelayMs: 2000,
  }), metrics);
  metrics.onCollect(participantCollector((signal) => migrations.list(signal), metrics));

  const server = createRpcServer({ tls, logger, keepaliveTimeMs: options.keepaliveMs, keepaliveTimeoutMs: options.keepaliveMs * 4 });
  onTlsChange = (material) => server.updateTls(material);
  // A mover serves only its own agent (the same identity): not coordinators, and not the peer agent.
  const mover = options.mode === "mover";
  const guard = <T extends object>(impl: T): T => (mover ? onlyPeer(impl, options.clusterName) : impl);
  server.add(
    AgentService,
    observeService("AgentService", guard(createControlService({
      clusterName: options.clusterName,
      version: VERSION,
      volumes,
      sessions,
      tls,
      sessionTtlMs: options.sessionTtlMs,
      logger,
      stateDir: options.stateDir,
      syncSources,
      app: createAppService({ clusterName: options.clusterName, cluster, logger, defaultTimeoutMs: options.kubeTimeoutMs }),
      archive: createArchiveService({ cluster, volumes, logger }),
    })), metrics, syncVolumeRounds(metrics)),
    { allowedRoles: mover ? ["agent"] : ["coordinator"] },
  );
  if (!mover) server.add(MigrationService, observeService("MigrationService", createMigrationService(migrations), metrics), { allowedRoles: ["coordinator"] });
  const transfer = createTransferService({ volumes, sessions, logger, syncSources, ...(mover ? { awaitPeerEnd: true } : { mover: { clusterName: options.clusterName, tls } }) });
  server.add(TransferService, observeService("TransferService", guard(transfer), metrics), { allowedRoles: ["agent"] });

  // Ready once serving, with usable TLS material and an API server that answers with our credentials.
  let serving = false;
  const checks: ReadinessCheck[] = [
    { name: "grpc", check: () => (serving ? Promise.resolve() : Promise.reject(new Error("not serving yet (resuming migrations)"))) },
    { name: "tls", check: () => Promise.resolve(void validateTls(tls, { role: "agent", name: options.clusterName })) },
  ];
  if (cluster !== undefined) {
    const rest = createKubeRest(cluster.kubeConfig);
    // /api needs an authenticated caller (system:discovery), so it proves the credentials work, not just the network.
    checks.push({ name: "kubernetes", check: (signal) => rest.json({ path: "/api", what: "reach the API server", signal }).then(() => undefined) });
  }
  const health: HealthServer | undefined =
    options.health === undefined ? undefined : await startHealthServer({ ...options.health, registry: metrics.registry, checks, logger });

  // Mover pods left by a crashed predecessor are deleted, not adopted, also those of migrations that resume: the next
  // round starts a fresh one. Adopting would trust what died with the process: the pod may still run a round the dead
  // agent drove (a second one on the same claim beside it), carry TLS material rotated since, and sit outside this
  // process's slot count and loss watch; a fresh mover costs one pod start per agent crash, not one per round. Before
  // the port opens, so that no mover a call starts meanwhile is swept.
  if (cluster !== undefined && options.volumeAccess !== "direct" && !mover) {
    await sweepMovers(cluster.objects, options.clusterName, logger).catch((error: unknown) => logger.warn({ err: error }, "could not sweep left-over mover pods"));
  }
  const port = await server.listen(options.listenHost, options.listenPort);
  const address = `${options.listenHost.includes(":") ? `[${options.listenHost}]` : options.listenHost}:${port}`;
  logger.info({ address, volumes: volumes.names(), cluster: options.cluster.kind, version: VERSION }, "agent listening");
  // The migrations persisted in the cluster carry on: sessions restored, rounds pulled again, leases watched.
  await migrations.resume();
  serving = true;

  return {
    address,
    port,
    healthAddress: health?.address,
    metrics,
    async close(graceMs = options.shutdownGraceMs) {
      logger.info({ graceMs }, "agent shutting down");
      serving = false;
      reloader?.close();
      // Rounds first: cancelled, they checkpoint what they applied before the calls that watch them end. Within the
      // grace time only: a step that does not honour its cancellation must not keep the agent (and its port) alive.
      let graceTimer: NodeJS.Timeout | undefined;
      const drained = await Promise.race([
        migrations.close().then(() => true),
        new Promise<false>((resolve) => (graceTimer = setTimeout(() => resolve(false), graceMs))),
      ]);
      clearTimeout(graceTimer);
      if (!drained) logger.warn({ graceMs }, "migration steps still running after the grace time; shutting down without them");
      await server.shutdown(graceMs);
      await volumes.close();
      await health?.close();
    },
  };
}

/** Every method refuses callers whose certificate names another cluster than `name` (a mover's own agent). */
function onlyPeer<T extends object>(impl: T, name: string): T {
  const wrapped: Record<string, unknown> = {};
  for (const [method, fn] of Object.entries(impl)) {
    if (typeof fn !== "function") continue;
    wrapped[method] = (request: unknown, ctx: CallContext): unknown => {
      if (ctx.peer.name !== name) {
        throw new TheseusError("permission_denied", `${describeIdentity(ctx.peer)} may not call a mover of agent/${name}`, { hint: "a mover serves only the agent that started it" });
      }
      return (fn as (r: unknown, c: CallContext) => unknown).call(impl, request, ctx);
    };
  }
  return wrapped as T;
}
