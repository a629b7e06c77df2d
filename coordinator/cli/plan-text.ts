// The plan for a person: what moves (each object with its changes as a readable diff), what stays and why, the
// volumes with their classes and sizes, and every problem with its fix. Changes that only strip source-bound fields
// (uid, resourceVersion, status...) are summed up in one line per object: they are many, expected, and drown the
// rewrites a reader must check.
import { describeChange } from "../../app-model/index.js";
import type { Plan, PlanObject, Problem } from "../../app-model/index.js";
import { formatBytes } from "../../common/index.js";
import type { StageResult } from "../plan/index.js";

export function formatPlan(plan: Plan): string {
  const out: string[] = [];
  const moving = plan.objects.filter((o) => o.action === "create" || o.action === "adopt");
  const staying = plan.objects.filter((o) => o.action === "skip");
  const conflicts = plan.objects.filter((o) => o.action === "conflict");
  out.push(`Plan: ${plan.source.cluster}/${plan.source.namespace} -> ${plan.target.cluster}/${plan.target.namespace}`, "");

  out.push(`Will move (${moving.length}):`);
  for (const o of moving) {
    out.push(`  ${o.action.padEnd(7)} ${name(o)}`);
    const sanitised = o.changes.filter((c) => c.why === "sanitise");
    for (const c of o.changes.filter((x) => x.why !== "sanitise")) out.push(`            ${describeChange(c)}`);
    if (sanitised.length > 0) {
      const fields = [...new Set(sanitised.map((c) => c.path.split("/").filter(Boolean).slice(-1)[0] ?? c.path))];
      out.push(`            (sanitised ${sanitised.length} source-bound field${sanitised.length === 1 ? "" : "s"}: ${fields.join(", ")})`);
    }
  }
  if (conflicts.length > 0) {
    out.push("", `In conflict with what the target has (${conflicts.length}):`);
    for (const o of conflicts) out.push(`  conflict ${name(o)}: ${o.reason ?? "exists on the target"}`);
  }
  out.push("", `Stays (${staying.length}):`);
  for (const o of staying) out.push(`  skip    ${name(o)}: ${o.reason ?? ""}`);

  out.push("", `Volumes (${plan.volumes.length}):`);
  for (const v of plan.volumes) {
    const cls = v.storageClass === v.targetStorageClass ? v.storageClass : `${v.storageClass} -> ${v.targetStorageClass}`;
    const request = v.requestedBytes === v.targetRequestedBytes ? formatBytes(v.requestedBytes) : `${formatBytes(v.requestedBytes)} -> ${formatBytes(v.targetRequestedBytes)}`;
    out.push(`  ${v.namespace}/${v.claim} -> ${v.targetNamespace}/${v.claim}: class ${cls || "(default)"}, request ${request}, capacity ${formatBytes(v.capacityBytes)}, used ${formatBytes(v.usedBytes)}${v.access === "" ? "" : `, ${v.access} access`}`);
  }

  const errors = plan.problems.filter((p) => p.severity === "error");
  const warnings = plan.problems.filter((p) => p.severity === "warning");
  out.push("", `Problems: ${errors.length} error${errors.length === 1 ? "" : "s"}, ${warnings.length} warning${warnings.length === 1 ? "" : "s"}`);
  for (const p of [...errors, ...warnings]) out.push(...formatProblem(p));
  out.push("", errors.length === 0 ? "Ready to stage: theseus stage with the same arguments." : "Fix the errors above, then plan again; theseus stage refuses a plan with errors.");
  return `${out.join("\n")}\n`;
}

export function formatProblem(p: Problem): string[] {
  const what = p.object === undefined ? "" : `${p.object.kind} ${p.object.namespace === "" ? "" : `${p.object.namespace}/`}${p.object.name}: `;
  return [`  ${p.severity.padEnd(7)} [${p.check}] ${what}${p.message}`, ...(p.hint === undefined ? [] : [`          fix: ${p.hint}`])];
}

export function formatStage(result: StageResult, target: string, namespace: string): string {
  const out = [`Staged migration ${result.migrationId} on ${target} (namespace ${namespace}):`];
  for (const o of result.objects) out.push(`  ${o.action.padEnd(9)} ${o.ref.kind} ${o.ref.namespace === "" ? "" : `${o.ref.namespace}/`}${o.ref.name}`);
  out.push("", `Claims (${result.claims.length}):`);
  for (const c of result.claims) out.push(`  ${c.namespace}/${c.name}: class ${c.storageClass}, ${formatBytes(c.capacityBytes)}, volume ${c.volume}${c.access === "" ? ` (not reachable: ${c.reason})` : ` (${c.access} access)`}`);
  return `${out.join("\n")}\n`;
}

function name(o: PlanObject): string {
  const t = o.target;
  const converted = o.source.apiVersion === t.apiVersion ? "" : ` (converted from ${o.source.apiVersion})`;
  return `${t.kind} ${t.namespace === "" ? "" : `${t.namespace}/`}${t.name} [${t.apiVersion}]${converted}`;
}
