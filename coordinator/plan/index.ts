// Planning and staging an application across two agents: the calls (Discover, DescribeCluster, Stage, Unstage), the
// options they take, and the plan as a document. Used by `theseus plan|stage|unstage` and by the transaction.
export { resolvePlanInput, validateNamespace } from "./options.js";
export type { AppSelection, PlanInput, ResolvedPlanInput } from "./options.js";
export { createPlan, describeTarget, discoverInventory, planErrors, stagePlan, unstageMigration } from "./plan.js";
export type { PlanRequest, PlanResult, StageRequestOptions, StageResult, StagedObject, UnstageRequestOptions } from "./plan.js";
export { newMigrationId, planReport, validateMigrationId } from "./report.js";
export type { PlanReport, ReportObject } from "./report.js";
