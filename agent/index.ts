// The agent component: the daemon that runs in each cluster.
export { startAgent } from "./agent.js";
export type { Agent, AgentDependencies } from "./agent.js";
export { parseVolumeList, readConfigFile, resolveAgentOptions, settingsFromEnv } from "./config.js";
export type { AgentOptions, AgentSettings } from "./config.js";
export { SESSION_TOKEN_METADATA } from "./migration/index.js";
