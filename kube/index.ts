// The Kubernetes client helpers that every component talking to an API server shares (the agent, the local clusters'
// node daemon): kubeconfig loading, in-cluster credentials, raw JSON requests, API discovery, generic objects of any
// kind, ApiException mapped to TheseusError, level-triggered watches and waits.
// Production code: the local clusters depend on it, never the other way round.
export { createIfAbsent, isConflict, isNotFound, loadKubeConfig, statusCode, watchTrigger } from "./client.js";
export { SERVICE_ACCOUNT_DIR, hostPathFor, inClusterKubeConfig } from "./in-cluster.js";
export { kubeError } from "./errors.js";
export { createKubeRest } from "./rest.js";
export type { HttpMethod, KubeRequest, KubeRest } from "./rest.js";
export { apiVersionOf, discoverResources, groupResourceOf } from "./discovery.js";
export type { Discovery } from "./discovery.js";
export { createKubeObjects } from "./objects.js";
export type { KubeObjects, ListOptions } from "./objects.js";
export { waitUntil } from "./wait.js";
export type { WaitOptions, WaitResult } from "./wait.js";
export { mapConcurrent } from "./pool.js";
