// The plan for a person: what moves (each object with its changes as a readable diff), what stays and why, the
// volumes with their classes and sizes, and every problem with its fix. What is many and expected is summed up so
// that the rewrites a reader must check stand out: the stripped source-bound fields (uid, resourceVersion, status...)
// in one line per object, the namespace move once in the header, and runs of skipped objects of one kind for one
// reason (events, endpoints) in one line.
import { describeChange } from "../../app-model/index.js";
import type { ObjectRef, Plan, PlanObject, Problem } from "../../app-model/index.js";
import { formatBytes } from "../../common/index.js";
import type { StageResult, StagedObject } from "../plan/index.js";

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
    const shown = o.changes.filter((c) => c.why !== "sanitise" && c.path !== "/metadata/namespace");
    for (const c of shown) out.push(`            ${describeChange(c)}`);
    if (sanitised.length > 0) {
      const fields = [...new Set(sanitised.map((c) => lastSegment(c.path)))];
      out.push(`            (sanitised ${sanitised.length} source-bound field${sanitised.length === 1 ? "" : "s"}: ${fields.join(", ")})`);
    }
  }
  if (conflicts.length > 0) {
    out.push("", `In conflict with what the target has (${conflicts.length}):`);
    for (const o of conflicts) out.push(`  conflict ${name(o)}: ${o.reason ?? "exists on the target"}`);
  }
  out.push("", `Stays on the source (${staying.length}):`);
  for (const group of groupSkips(staying)) {
    const [first] = group;
    if (first === undefined) continue;
    if (group.length < SKIP_RUN) for (const o of group) out.push(`  skip    ${ref(o.source)} [${o.source.apiVersion}]: ${o.reason ?? ""}`);
    else {
      const names = group.slice(0, 2).map((o) => o.source.name);
      out.push(`  skip    ${group.length} ${first.source.kind} objects (${names.join(", ")}, ...) [${first.source.apiVersion}]: ${first.reason ?? ""}`);
    }
  }

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
  const what = p.object === undefined ? "" : `${ref(p.object)}: `;
  return [`  ${p.severity.padEnd(7)} [${p.check}] ${what}${p.message}`, ...(p.hint === undefined ? [] : [`          fix: ${p.hint}`])];
}

export function formatStage(result: StageResult, target: string, namespace: string): string {
  const out = [`Staged migration ${result.migrationId} on ${target} (namespace ${namespace}):`];
  for (const o of result.objects) out.push(`  ${o.action.padEnd(9)} ${ref(o.ref)}`);
  out.push("", `Claims (${result.claims.length}):`);
  for (const c of result.claims) out.push(`  ${c.namespace}/${c.name}: class ${c.storageClass}, ${formatBytes(c.capacityBytes)}, volume ${c.volume}${c.access === "" ? ` (not reachable: ${c.reason})` : ` (${c.access} access)`}`);
  return `${out.join("\n")}\n`;
}

/** From this many skipped objects of one kind for one reason, one line says it for all. */
const SKIP_RUN = 4;

function groupSkips(objects: readonly PlanObject[]): PlanObject[][] {
  const groups = new Map<string, PlanObject[]>();
  for (const o of objects) {
    const key = `${o.source.apiVersion}/${o.source.kind}\n${o.reason ?? ""}`;
    groups.set(key, [...(groups.get(key) ?? []), o]);
  }
  return [...groups.values()];
}

function ref(r: ObjectRef): string {
  return `${r.kind} ${r.namespace === "" ? "" : `${r.namespace}/`}${r.name}`;
}

/** The field a JSON pointer ends in, unescaped (RFC 6901: ~1 is "/", ~0 is "~"). */
function lastSegment(pointer: string): string {
  const segment = pointer.split("/").filter(Boolean).slice(-1)[0] ?? pointer;
  return segment.replaceAll("~1", "/").replaceAll("~0", "~");
}

export function formatUnstage(removed: readonly StagedObject[], migrationId: string, target: string, namespace: string): string {
  const lines = removed.map((o) => `  ${o.action.padEnd(9)} ${ref(o.ref)}\n`);
  return `Unstaged migration ${migrationId} on ${target} (namespace ${namespace}): ${removed.length} object${removed.length === 1 ? "" : "s"}\n${lines.join("")}`;
}

function name(o: PlanObject): string {
  const t = o.target;
  const converted = o.source.apiVersion === t.apiVersion ? "" : ` (converted from ${o.source.apiVersion})`;
  return `${ref(t)} [${t.apiVersion}]${converted}`;
}
