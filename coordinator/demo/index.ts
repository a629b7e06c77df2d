// The local demo, and the helpers it shares with the tests: real agent processes and generated trees.
export { runVolumeDemo } from "./volume-demo.js";
export type { VolumeDemoOptions } from "./volume-demo.js";
export { AGENT_MAIN, spawnAgent } from "./agent-process.js";
export type { AgentProcess, AgentProcessOptions } from "./agent-process.js";
export { compareTrees, generateTree } from "./trees.js";
export type { GeneratedTree, TreeDifference } from "./trees.js";
