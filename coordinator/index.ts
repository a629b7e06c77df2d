// The coordinator component: the CLI, certificates, and the operations it drives across agents.
export { createProgram } from "./cli/program.js";
export * from "./certs/index.js";
export * from "./copy/index.js";
export * from "./demo/index.js";
