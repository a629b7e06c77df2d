// The application model: what a composite application is (its objects, claims and dependencies), how it is cleaned of
// everything bound to its source cluster, rewritten for its target, checked, ordered, staged, quiesced and activated.
// Pure functions without I/O, shared by the agent (which does the Kubernetes reads and writes) and the coordinator
// (which plans). The transaction drives these through the agent's RPCs and never needs to know a kind's details.
import type {
  Change,
  ClusterFacts,
  Inventory,
  KubeObject,
  MergePatch,
  ObjectRef,
  Plan,
  PlanOptions,
  Rule,
} from "./types.js";
import { TheseusError } from "../common/index.js";

export type * from "./types.js";

export const LABEL_MIGRATION = "theseus.io/migration";
export const ANNOTATION_STAGED = "theseus.io/staged";
export const ANNOTATION_ACTIVATE = "theseus.io/activate";
export const ANNOTATION_QUIESCED = "theseus.io/quiesced";

export interface LabelRequirement {
  readonly key: string;
  readonly operator: "=" | "!=" | "in" | "notin" | "exists" | "!";
  readonly values: readonly string[];
}
export interface LabelSelector {
  readonly requirements: readonly LabelRequirement[];
}

function pending(name: string): never {
  throw new TheseusError("internal", `app-model: ${name} is not implemented yet`);
}

export function refOf(_object: KubeObject): ObjectRef { return pending("refOf"); }
export function refKey(_ref: ObjectRef): string { return pending("refKey"); }
export function groupOfApiVersion(_apiVersion: string): string { return pending("groupOfApiVersion"); }
export function parseLabelSelector(_selector: string): LabelSelector { return pending("parseLabelSelector"); }
export function matchesSelector(_labels: Readonly<Record<string, string>> | undefined, _selector: LabelSelector): boolean { return pending("matchesSelector"); }
export function planLookups(_inventory: Inventory, _options: PlanOptions): ObjectRef[] { return pending("planLookups"); }
export function buildPlan(_inventory: Inventory, _target: ClusterFacts, _options: PlanOptions): Plan { return pending("buildPlan"); }
export function parseRules(_text: string, _source: string): Rule[] { return pending("parseRules"); }
export function sanitise(_object: KubeObject, _options?: { keepNodePorts?: boolean }): { object: KubeObject; changes: Change[] } { return pending("sanitise"); }
export function stagedForm(_object: KubeObject, _migrationId: string, _staged: "created" | "adopted"): KubeObject { return pending("stagedForm"); }
export function activationPatch(_object: KubeObject, _migrationId: string): MergePatch | undefined { return pending("activationPatch"); }
export function quiescePatch(_object: KubeObject, _migrationId: string): MergePatch | undefined { return pending("quiescePatch"); }
export function unquiescePatch(_object: KubeObject, _migrationId: string): MergePatch | undefined { return pending("unquiescePatch"); }
export function podMountsClaim(_pod: KubeObject, _claimNames: ReadonlySet<string>): boolean { return pending("podMountsClaim"); }
export function workloadReadiness(_object: KubeObject): { ready: boolean; detail: string } | undefined { return pending("workloadReadiness"); }
export function applyOrder(_objects: readonly KubeObject[]): KubeObject[] { return pending("applyOrder"); }
export function deleteOrder(_objects: readonly KubeObject[]): KubeObject[] { return pending("deleteOrder"); }
export function describeChange(_change: Change): string { return pending("describeChange"); }
