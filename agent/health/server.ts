// The agent's plain HTTP port for probes and Prometheus. Every gRPC call needs a client certificate, which kubelet
// probes and scrapers do not have, so these live apart: /healthz (the process answers), /readyz (the API server and
// the TLS material are usable, so a coordinator's call can succeed), /metrics. It serves no data and accepts no
// commands, so it needs no authentication; the chart's NetworkPolicy keeps it inside the namespace.
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { TheseusError, describeError } from "../../common/index.js";
import type { Logger } from "../../common/index.js";
import type { Registry } from "prom-client";

/** One readiness condition: ok, or why not. */
export interface ReadinessCheck {
  readonly name: string;
  check(signal: AbortSignal): Promise<void>;
}

export interface HealthServerOptions {
  readonly host: string;
  readonly port: number;
  readonly registry: Registry;
  readonly checks: readonly ReadinessCheck[];
  readonly logger: Logger;
  /** Each check's answer is reused this long, so probes and scrapes do not hammer the API server. */
  readonly cacheMs?: number;
  /** Each check gets this long. */
  readonly checkTimeoutMs?: number;
}

export interface HealthServer {
  readonly address: string;
  readonly port: number;
  close(): Promise<void>;
}

export async function startHealthServer(options: HealthServerOptions): Promise<HealthServer> {
  const logger = options.logger.child({ component: "health" });
  const cacheMs = options.cacheMs ?? 2000;
  const timeoutMs = options.checkTimeoutMs ?? 3000;
  let cached: { atMs: number; failures: string[] } | undefined;
  let running: Promise<string[]> | undefined;

  const readiness = async (): Promise<string[]> => {
    if (cached !== undefined && Date.now() - cached.atMs < cacheMs) return cached.failures;
    running ??= (async () => {
      const failures: string[] = [];
      for (const c of options.checks) {
        try {
          await c.check(AbortSignal.timeout(timeoutMs));
        } catch (error) {
          failures.push(`${c.name}: ${describeError(error).split("\n")[0] ?? ""}`);
        }
      }
      cached = { atMs: Date.now(), failures };
      return failures;
    })().finally(() => (running = undefined));
    return running;
  };

  const server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    const send = (status: number, body: string, type = "text/plain; charset=utf-8"): void => {
      res.writeHead(status, { "content-type": type, "cache-control": "no-store" });
      res.end(body);
    };
    if (req.method !== "GET" && req.method !== "HEAD") return send(405, "only GET\n");
    if (path === "/healthz" || path === "/livez") return send(200, "ok\n");
    if (path === "/readyz") {
      void readiness().then(
        (failures) => (failures.length === 0 ? send(200, "ok\n") : send(503, `not ready:\n${failures.map((f) => `- ${f}`).join("\n")}\n`)),
        (error: unknown) => send(500, `${describeError(error)}\n`),
      );
      return;
    }
    if (path === "/metrics") {
      void options.registry.metrics().then(
        (text) => send(200, text, options.registry.contentType),
        (error: unknown) => {
          logger.warn({ err: error }, "metrics collection failed");
          send(500, `${describeError(error)}\n`);
        },
      );
      return;
    }
    send(404, "not found: /healthz, /readyz, /metrics\n");
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (error) => reject(TheseusError.from(error, "unavailable")));
    server.listen(options.port, options.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const address = `${options.host.includes(":") ? `[${options.host}]` : options.host}:${port}`;
  logger.info({ address }, "health and metrics listening");
  return {
    address,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
