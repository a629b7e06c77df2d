// The local demo, and the helpers it shares with the tests: real agent processes and generated trees.
export { runDemo } from "./demo.js";
export type { DemoOptions } from "./demo.js";
export { AGENT_MAIN, spawnAgent } from "./agent-process.js";
export type { AgentProcess, AgentProcessOptions } from "./agent-process.js";
export { compareTrees, generateTree } from "./trees.js";
export type { GeneratedTree, TreeDifference } from "./trees.js";
