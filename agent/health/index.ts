// The agent's health: the plain HTTP port (/healthz, /readyz, /metrics) and the TLS material reloaded on rotation.
export { startHealthServer } from "./server.js";
export type { HealthServer, HealthServerOptions, ReadinessCheck } from "./server.js";
export { createTlsReloader, validateTls } from "./tls-reload.js";
export type { TlsPaths, TlsReloader, TlsReloaderOptions, TlsState } from "./tls-reload.js";
