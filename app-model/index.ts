// The application model: what a composite application is (its objects, claims and dependencies), how it is cleaned of
// everything bound to its source cluster, rewritten for its target, checked, ordered, staged, quiesced and activated.
// Pure functions without I/O, shared by the agent (which does the Kubernetes reads and writes) and the coordinator
// (which plans). The transaction drives these through the agent's RPCs and never needs to know a kind's details.
export type * from "./types.js";
export {
  ANNOTATION_ACTIVATE,
  ANNOTATION_QUIESCED,
  ANNOTATION_STAGED,
  LABEL_MIGRATION,
  PARKED_NODE_LABEL,
  SWITCHED_KINDS,
  activationPatch,
  podMountsClaim,
  quiescePatch,
  stagedForm,
  unquiescePatch,
  workloadReadiness,
} from "./staging.js";
export { describeRef, groupOfApiVersion, refKey, refOf } from "./refs.js";
export { matchesSelector, parseLabelSelector } from "./selector.js";
export type { LabelRequirement, LabelSelector } from "./selector.js";
export { buildPlan, planLookups, planObjectsToStage } from "./plan.js";
export { RULES_SCHEMA, parseRules } from "./rules.js";
export { sanitise } from "./sanitise.js";
export type { SanitiseOptions } from "./sanitise.js";
export { mapImage } from "./rewrite.js";
export { applyOrder, deleteOrder } from "./order.js";
export { describeChange } from "./changes.js";
export { formatBytesQuantity, parseQuantity } from "./quantity.js";
export { REPLICATED_KINDS, containersOf, podSpecOf } from "./pod-templates.js";
