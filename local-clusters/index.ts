// Local Kubernetes clusters for the demo and the tests: a real control plane (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler v1.20.2 built from Debian's source by scripts/build-kubernetes.sh) with the
// kubelet emulated by a node daemon that runs pods of known images as local processes.
export { downCluster, getCluster, listClusters, upCluster } from "./cluster.js";
export type { ClusterStatus, ClusterSummary, LocalCluster, UpOptions } from "./cluster.js";
export { KNOWN_IMAGES, imageRepository, resolveImage } from "./images.js";
export type { KnownImage } from "./images.js";
export { installOpenShiftKinds } from "./openshift.js";
export { BUILD_SCRIPT, KUBERNETES_VERSION, clusterDir, controlPlaneBinaries, kubernetesBinDir, repoRoot, theseusHome } from "./paths.js";
export { PROVISIONER_NAME, STORAGE_CLASS_IMMEDIATE, STORAGE_CLASS_WAIT } from "./provisioner.js";
export { registerLocalCommands } from "./cli.js";
export { clusterPort, portIsFree } from "./processes.js";
export type { AgentHow, LocalCommandHooks } from "./cli.js";
export type { LocalAgentOptions } from "./agent.js";
export { AGENT_CHART_DIR, helmBinary } from "./agent-chart.js";
