// The plan as one document for scripts (`theseus plan -o json|yaml`): flat objects a `jq` filter reads without
// knowing app-model's types, the volumes and the problems as they are. This shape is a promise to users; add to it,
// never rename.
import { randomUUID } from "node:crypto";
import type { Change, ObjectRef, Plan, PlanAction, PlanVolume, Problem } from "../../app-model/index.js";
import { TheseusError } from "../../common/index.js";

export interface PlanReport {
  readonly source: { readonly cluster: string; readonly namespace: string };
  readonly target: { readonly cluster: string; readonly namespace: string };
  readonly summary: Readonly<Record<PlanAction, number>> & { readonly errors: number; readonly warnings: number };
  readonly objects: readonly ReportObject[];
  readonly volumes: readonly PlanVolume[];
  readonly problems: readonly Problem[];
}

/** One object as it will be on the target (kind, apiVersion, namespace, name), with where it comes from. */
export interface ReportObject {
  readonly kind: string;
  readonly apiVersion: string;
  readonly namespace: string;
  readonly name: string;
  readonly action: PlanAction;
  readonly reason?: string;
  readonly source: ObjectRef;
  readonly changes: readonly Change[];
}

export function planReport(plan: Plan): PlanReport {
  const count = (action: PlanAction): number => plan.objects.filter((o) => o.action === action).length;
  return {
    source: plan.source,
    target: plan.target,
    summary: {
      create: count("create"),
      adopt: count("adopt"),
      skip: count("skip"),
      conflict: count("conflict"),
      errors: plan.problems.filter((p) => p.severity === "error").length,
      warnings: plan.problems.filter((p) => p.severity === "warning").length,
    },
    objects: plan.objects.map((o) => ({
      kind: o.target.kind,
      apiVersion: o.target.apiVersion,
      namespace: o.target.namespace,
      name: o.target.name,
      action: o.action,
      ...(o.reason === undefined ? {} : { reason: o.reason }),
      source: o.source,
      changes: o.changes,
    })),
    volumes: plan.volumes,
    problems: plan.problems,
  };
}

// A label value: what the agent marks every staged object with.
const MIGRATION_ID = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;

export function newMigrationId(): string {
  return randomUUID();
}

export function validateMigrationId(id: string): string {
  if (!MIGRATION_ID.test(id)) {
    throw new TheseusError("invalid_argument", `--migration-id "${id}" is not a valid id`, {
      hint: "use the id `theseus stage` printed; ids are 1-63 letters, digits, '-', '_' or '.' (a Kubernetes label value)",
    });
  }
  return id;
}
