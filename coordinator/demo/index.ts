// `theseus demo` (a live migration between two local clusters, proved by the demo app's verifier), the volume-only
// copy demo, and the helpers they share with the tests: the demo app on a local cluster, real agent processes,
// generated trees.
export { resolveDemoOptions, runDemo } from "./live-demo.js";
export type { DemoOptions } from "./live-demo.js";
export { DOWNTIME_TARGET_MS, PREDICTION_TOLERANCE, formatDemoReport, verdictOf } from "./report.js";
export type { DemoPrediction, DemoReport, DemoRound } from "./report.js";
export { DEMO_APP_NAME, DEMO_APP_PORT, demoAppObjects, demoClaimName, demoCluster, demoVolumeDir, deployDemoApp, seedVolume, waitForAppUrl } from "./app.js";
export type { DemoAppOptions, DemoCluster } from "./app.js";
export { downDemoClusters, ensureControlPlane, upDemoClusters } from "./clusters.js";
export { runVolumeDemo } from "./volume-demo.js";
export type { VolumeDemoOptions } from "./volume-demo.js";
export { AGENT_MAIN, describeExit, spawnAgent } from "./agent-process.js";
export type { AgentExit, AgentProcess, AgentProcessOptions } from "./agent-process.js";
export { compareTrees, generateTree } from "./trees.js";
export type { GeneratedTree, TreeDifference } from "./trees.js";
