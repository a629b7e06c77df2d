// Named agents (like kubectl contexts), kept in the coordinator's config file under THESEUS_HOME.
export { createAgentRegistry, defaultConfigPath, validateAddress } from "./registry.js";
export type { AgentEntry, AgentInput, AgentRegistry, AgentRegistryOptions, AgentTarget } from "./registry.js";
export { dialAgent } from "./dial.js";
export type { AgentClient } from "./dial.js";
