// The application model: what a composite application is (its objects, claims and dependencies), how it is cleaned of
// everything bound to its source cluster, rewritten for its target, checked, ordered, staged, quiesced and activated.
// Pure functions without I/O, shared by the agent (which does the Kubernetes reads and writes) and the coordinator
// (which plans). The transaction drives these through the agent's RPCs and never needs to know a kind's details.
export type * from "./types.js";
