// The Kubernetes client helpers that every component talking to an API server shares (the agent, the local clusters'
// node daemon): kubeconfig loading, in-cluster credentials, ApiException status helpers, level-triggered watches.
// Production code: the local clusters depend on it, never the other way round.
export { createIfAbsent, isConflict, isNotFound, loadKubeConfig, statusCode, watchTrigger } from "./client.js";
export { SERVICE_ACCOUNT_DIR, hostPathFor, inClusterKubeConfig } from "./in-cluster.js";
