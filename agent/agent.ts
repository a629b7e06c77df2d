// The agent daemon: one mTLS gRPC endpoint serving the control service to coordinators and the transfer service to its
// peer agent, over the volumes it is configured with.
import { mkdir, readFile } from "node:fs/promises";
import { TheseusError, VERSION, silentLogger } from "../common/index.js";
import type { Logger } from "../common/index.js";
import { createRpcServer } from "../rpc/index.js";
import type { TlsMaterial } from "../rpc/index.js";
import { AgentService } from "../proto/gen/theseus/v1/agent_pb.js";
import { MigrationService } from "../proto/gen/theseus/v1/migration_pb.js";
import { TransferService } from "../proto/gen/theseus/v1/transfer_pb.js";
import type { AgentOptions } from "./config.js";
import { createAppService } from "./app-service.js";
import { connectCluster } from "./cluster/index.js";
import { createControlService } from "./control-service.js";
import { createMigrations } from "./migration/index.js";
import { createMigrationService } from "./migration-service.js";
import { SessionRegistry } from "./migration/index.js";
import { SyncSources } from "./sync/index.js";
import { createTransferService } from "./transfer-service.js";
import { VolumeRegistry } from "./volumes.js";

export interface Agent {
  /** host:port the agent listens on (the real port when configured with port 0). */
  readonly address: string;
  readonly port: number;
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
  const tls = deps.tls ?? (await readTls(options));
  await mkdir(options.stateDir, { recursive: true, mode: 0o700 });
  const cluster = connectCluster(options.cluster, options.nodeName);
  const volumes = new VolumeRegistry(options.volumes, cluster?.volumes);
  const sessions = new SessionRegistry();
  const syncSources = new SyncSources(options.stateDir, logger.child({ component: "sync-source" }));

  const migrations = createMigrations({
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
  });

  const server = createRpcServer({ tls, logger, keepaliveTimeMs: options.keepaliveMs, keepaliveTimeoutMs: options.keepaliveMs * 4 });
  server.add(
    AgentService,
    createControlService({
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
    }),
    { allowedRoles: ["coordinator"] },
  );
  server.add(MigrationService, createMigrationService(migrations), { allowedRoles: ["coordinator"] });
  server.add(TransferService, createTransferService({ volumes, sessions, logger, syncSources }), { allowedRoles: ["agent"] });
  const port = await server.listen(options.listenHost, options.listenPort);
  const address = `${options.listenHost.includes(":") ? `[${options.listenHost}]` : options.listenHost}:${port}`;
  logger.info({ address, volumes: volumes.names(), cluster: options.cluster.kind, version: VERSION }, "agent listening");
  // The migrations persisted in the cluster carry on: sessions restored, rounds pulled again, leases watched.
  await migrations.resume();

  return {
    address,
    port,
    async close(graceMs = options.shutdownGraceMs) {
      logger.info({ graceMs }, "agent shutting down");
      // Rounds first: cancelled, they checkpoint what they applied before the calls that watch them end.
      await migrations.close();
      await server.shutdown(graceMs);
      await volumes.close();
    },
  };
}

async function readTls(options: AgentOptions): Promise<TlsMaterial> {
  const read = async (path: string, what: string): Promise<string> => {
    try {
      return await readFile(path, "utf8");
    } catch (error) {
      throw new TheseusError("invalid_argument", `cannot read the agent's ${what} at ${path}`, {
        cause: error,
        hint: "create it with `theseus certs init` and `theseus certs issue agent --cluster NAME`",
      });
    }
  };
  return {
    caPem: await read(options.tls.caPath, "CA certificate"),
    certPem: await read(options.tls.certPath, "certificate"),
    keyPem: await read(options.tls.keyPath, "key"),
  };
}
