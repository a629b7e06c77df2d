// The plan: what moves and what stays (and why), each moving object as it will be created on the target with every
// change that made it so, each volume with its classes and sizes, and every check that failed. Pure: the source's
// inventory and the target's facts come from the agents.
import type {
  Change,
  ClaimInfo,
  ClusterFacts,
  Inventory,
  KubeObject,
  ObjectRef,
  Plan,
  PlanObject,
  PlanOptions,
  PlanVolume,
  Problem,
  ServedResource,
} from "./types.js";
import { clone, isMap, listAt, mapAt, stringAt } from "./json.js";
import { diffObjects } from "./changes.js";
import { classify, classifyContext } from "./classify.js";
import type { Classification } from "./classify.js";
import { sanitise } from "./sanitise.js";
import { REWRITE_STEPS } from "./rewrite.js";
import type { RewriteContext } from "./rewrite.js";
import { CONVERTIBLE_KINDS, convertApiVersion } from "./convert.js";
import { checkQuotaCounts, fitQuotas } from "./quota.js";
import type { ApplicableQuota } from "./quota.js";
import { applyRules } from "./rules.js";
import { applyOrder } from "./order.js";
import { LABEL_MIGRATION } from "./staging.js";
import { apiVersionOf, describeRef, groupOfApiVersion, groupResourceOf, identityKey, refKey, refOf, versionOfApiVersion } from "./refs.js";
import { formatBytesQuantity, parseQuantity } from "./quantity.js";

const DEFAULT_CLASS_ANNOTATIONS = ["storageclass.kubernetes.io/is-default-class", "storageclass.beta.kubernetes.io/is-default-class"];

/** The target-side ref of a source object: namespace mapped (and the Namespace itself renamed). */
function targetRefOf(object: KubeObject, options: PlanOptions): ObjectRef {
  const ref = refOf(object);
  const mapped = (name: string): string => (name === options.sourceNamespace ? options.targetNamespace : name);
  if (object.kind === "Namespace" && ref.namespace === "") return { ...ref, name: mapped(ref.name) };
  return ref.namespace === "" ? ref : { ...ref, namespace: mapped(ref.namespace) };
}

/** The target-side refs DescribeCluster must look up: everything that may move (its conflicts, its cluster-scoped dependencies). */
export function planLookups(inventory: Inventory, options: PlanOptions): ObjectRef[] {
  const context = classifyContext(inventory);
  const seen = new Set<string>();
  const lookups: ObjectRef[] = [];
  for (const object of inventory.objects) {
    if (!classify(object, context).move) continue;
    const ref = targetRefOf(object, options);
    // The target may serve a convertible kind in another version: any version will do for finding a conflict.
    const lookup = CONVERTIBLE_KINDS.has(ref.kind) ? { ...ref, apiVersion: "" } : ref;
    const key = refKey(lookup);
    if (!seen.has(key)) {
      seen.add(key);
      lookups.push(lookup);
    }
  }
  return lookups;
}

interface Draft {
  readonly original: KubeObject;
  readonly source: ObjectRef;
  object: KubeObject;
  readonly changes: Change[];
  readonly groupResource: string;
}

export function buildPlan(inventory: Inventory, target: ClusterFacts, options: PlanOptions): Plan {
  const problems: Problem[] = inventory.warnings.map((message) => ({
    severity: "warning",
    check: "discovery",
    message,
    hint: "the source agent could not list this kind: grant its service account list on it, or check the API service",
  }));
  const existing = new Map(target.objects.map((o) => [identityKey(refOf(o)), o]));
  const targetCrds = new Map(target.objects.filter((o) => o.kind === "CustomResourceDefinition").map((o) => [o.metadata.name ?? "", o]));
  const context = classifyContext(inventory);

  const skipped: PlanObject[] = [];
  const drafts: Draft[] = [];
  for (const original of applyOrder(inventory.objects)) {
    let verdict: Classification = classify(original, context);
    if (verdict.move && original.kind === "CustomResourceDefinition" && targetCrds.has(original.metadata.name ?? "")) {
      verdict = { move: false, reason: "the target has this definition already" };
    }
    const source = refOf(original);
    if (!verdict.move) {
      skipped.push({ source, target: targetRefOf(original, options), action: "skip", reason: verdict.reason, changes: [] });
      if (verdict.warn === true) problems.push({ severity: "warning", check: "stays", object: source, message: `${describeRef(source)} stays: ${verdict.reason}` });
      continue;
    }
    const sanitised = sanitise(original, { keepNodePorts: options.keepNodePorts });
    drafts.push({ original, source, object: sanitised.object, changes: sanitised.changes, groupResource: groupResourceOf(original, inventory.resources) });
  }

  const rewriteContext: RewriteContext = {
    options,
    serviceNames: new Set(drafts.filter((d) => d.original.kind === "Service").map((d) => d.original.metadata.name ?? "")),
    sourceDefaultClass: inventory.objects.find((o) => o.kind === "StorageClass" && DEFAULT_CLASS_ANNOTATIONS.some((a) => o.metadata.annotations?.[a] === "true"))?.metadata.name,
  };
  const served = servedOnTarget(target.resources, [...drafts.map((d) => d.object), ...targetCrds.values()]);
  for (const draft of drafts) {
    for (const step of REWRITE_STEPS) record(draft, step.why, (o) => step.apply(o, rewriteContext));
    problems.push(...convertIfNeeded(draft, served, targetCrds, target.cluster));
  }

  // Quotas charge the whole app at once, so they are fitted across every object, then each object's change recorded.
  const inTarget = (o: KubeObject): boolean => o.metadata.namespace === options.targetNamespace;
  const quotas: ApplicableQuota[] = [
    ...target.objects.filter((o) => o.kind === "ResourceQuota" && inTarget(o)).map((object) => ({ object, existing: true })),
    ...drafts.filter((d) => d.object.kind === "ResourceQuota" && !existing.has(identityKey(refOf(d.object)))).map((d) => ({ object: d.object, existing: false })),
  ];
  const limitRanges = [
    ...target.objects.filter((o) => o.kind === "LimitRange" && inTarget(o)),
    ...drafts.filter((d) => d.object.kind === "LimitRange").map((d) => d.object),
  ];
  const before = drafts.map((d) => clone(d.object));
  problems.push(...fitQuotas(drafts.map((d) => d.object), quotas, limitRanges, options.targetNamespace));
  drafts.forEach((d, i) => d.changes.push(...diffObjects(before[i] ?? d.object, d.object, "quota")));

  for (const draft of drafts) {
    const ruled = applyRules(options.rules, draft.original, draft.object, draft.groupResource);
    draft.object = ruled.object;
    draft.changes.push(...ruled.changes);
    problems.push(...ruled.problems);
  }

  const moving = drafts.map((d) => d.object);
  problems.push(...checkQuotaCounts(moving, quotas, inventory.resources, options.targetNamespace));
  problems.push(...checkReplicaOverrides(inventory.objects, options));
  const volumes = planVolumes(inventory, drafts, options);
  problems.push(...checkStorage(volumes, inventory.claims, drafts, target));

  const planned = drafts.map((draft) => {
    const resolved = resolveExisting(draft, existing.get(identityKey(refOf(draft.object))), options, target.cluster);
    if (resolved.problem !== undefined) problems.push(resolved.problem);
    return resolved.object;
  });

  const order = new Map(applyOrder(inventory.objects).map((o, i) => [refKey(refOf(o)), i]));
  const objects = [...planned, ...skipped].sort((a, b) => (order.get(refKey(a.source)) ?? 0) - (order.get(refKey(b.source)) ?? 0));
  return {
    source: { cluster: inventory.cluster, namespace: options.sourceNamespace },
    target: { cluster: target.cluster, namespace: options.targetNamespace },
    objects,
    volumes,
    problems,
  };
}

/** What to do with a planned object given what the target has under its name: create, adopt, or a conflict. */
function resolveExisting(draft: Draft, found: KubeObject | undefined, options: PlanOptions, cluster: string): { object: PlanObject; problem?: Problem } {
  const ref = refOf(draft.object);
  const base = { source: draft.source, target: ref, object: draft.object, changes: draft.changes };
  if (found === undefined || (options.migrationId !== undefined && found.metadata.labels?.[LABEL_MIGRATION] === options.migrationId)) {
    return { object: { ...base, action: "create" } };
  }
  if (found.metadata.uid !== undefined && found.metadata.uid === draft.original.metadata.uid) {
    return { object: { source: draft.source, target: ref, action: "skip", reason: "the same object: source and target are one cluster", changes: [] } };
  }
  if (draft.object.kind === "Namespace") {
    return { object: { ...base, action: "adopt", reason: "the namespace exists on the target: the app is staged into it and unstaging leaves it" } };
  }
  const by = found.metadata.labels?.[LABEL_MIGRATION];
  const reason = `${describeRef(ref)} exists on ${cluster}${by === undefined ? "" : ` (staged by migration ${by})`}`;
  if (options.onConflict === "adopt") {
    return { object: { ...base, action: "adopt", reason: `${reason}: adopted as it is (labelled, never removed by unstage)` } };
  }
  return {
    object: { ...base, action: "conflict", reason },
    problem: {
      severity: "error",
      check: "conflict",
      object: ref,
      message: `${reason} and was not made by this migration`,
      hint: `adopt it as it is (--on-conflict adopt), or delete or rename it on ${cluster}`,
    },
  };
}

/** Runs a step on the draft's object and records what it changed under `why`. */
function record(draft: Draft, why: string, step: (object: KubeObject) => void): void {
  const before = clone(draft.object);
  step(draft.object);
  draft.changes.push(...diffObjects(before, draft.object, why));
}

type Serves = (apiVersion: string, kind: string) => boolean;

/** What the target will serve once staged: its resources, plus the kinds of its CRDs and of those moving with the app. */
function servedOnTarget(resources: readonly ServedResource[], definitions: readonly KubeObject[]): Serves {
  const served = new Set<string>();
  for (const r of resources) {
    if (!r.resource.includes("/") && (r.verbs.length === 0 || r.verbs.includes("create"))) served.add(`${apiVersionOf(r.group, r.version)}/${r.kind}`);
  }
  for (const crd of definitions.filter((o) => o.kind === "CustomResourceDefinition")) {
    for (const [apiVersion, kind] of crdKinds(crd)) served.add(`${apiVersion}/${kind}`);
  }
  return (apiVersion, kind) => served.has(`${apiVersion}/${kind}`);
}

function crdKinds(crd: KubeObject): [string, string][] {
  const spec = mapAt(crd, "spec");
  const group = stringAt(spec, "group") ?? "";
  const kind = stringAt(mapAt(spec, "names"), "kind") ?? "";
  const versions = listAt(spec, "versions").filter((v) => !(isMap(v) && v["served"] === false));
  const names = versions.map((v) => stringAt(v, "name") ?? "");
  // apiextensions.k8s.io/v1beta1 CRDs may name one spec.version instead of a list.
  const single = stringAt(spec, "version");
  return [...names, ...(single === undefined ? [] : [single])].map((version) => [apiVersionOf(group, version), kind]);
}

/** Converts an object the target does not serve in its version, or says why it cannot move. */
function convertIfNeeded(draft: Draft, serves: Serves, targetCrds: ReadonlyMap<string, KubeObject>, cluster: string): Problem[] {
  const object = draft.object;
  if (serves(object.apiVersion, object.kind)) return [];
  const ref = refOf(object);
  const group = groupOfApiVersion(object.apiVersion);
  const version = versionOfApiVersion(object.apiVersion);
  const definition = [...targetCrds.values()].find((crd) => crdKinds(crd).some(([apiVersion, kind]) => groupOfApiVersion(apiVersion) === group && kind === object.kind));
  if (definition !== undefined) {
    return [{
      severity: "error",
      check: "crd",
      object: ref,
      message: `${describeRef(ref)} is ${object.apiVersion}, but ${cluster}'s CustomResourceDefinition ${definition.metadata.name ?? "?"} does not serve version ${version}`,
      hint: `upgrade the definition (or its operator) on ${cluster} to serve ${version}`,
    }];
  }
  const result = convertApiVersion(object, (apiVersion) => serves(apiVersion, object.kind));
  if ("converted" in result) {
    draft.changes.push(...diffObjects(object, result.converted, "api-version"));
    draft.object = result.converted;
    return [];
  }
  const why = "refused" in result ? `it cannot be converted (${result.refused})` : `${cluster} does not serve ${object.apiVersion} ${object.kind}`;
  const problem = { severity: "error" as const, object: ref, message: `${describeRef(ref)} cannot move: ${why}` };
  if (group.endsWith(".openshift.io")) {
    return [{ ...problem, check: "kind-served", hint: `${cluster} is not OpenShift (or lacks this API): use an OpenShift target, or leave the object out (--selector)` }];
  }
  if (!isBuiltInGroup(group)) {
    return [{ ...problem, check: "crd", hint: `install the definition of ${draft.groupResource} (its CRD or operator) on ${cluster}, or include its CRD in the selection` }];
  }
  return [{ ...problem, check: "kind-served", hint: `use a target that serves ${object.kind}, or leave the object out (--selector)` }];
}

/** Groups Kubernetes itself serves; any other group is a custom resource's (or an aggregated API's). */
function isBuiltInGroup(group: string): boolean {
  return group === "" || group.endsWith(".k8s.io") || ["apps", "batch", "autoscaling", "policy", "extensions"].includes(group);
}

function checkReplicaOverrides(objects: readonly KubeObject[], options: PlanOptions): Problem[] {
  const names = new Set(objects.map((o) => `${o.kind}/${o.metadata.name ?? ""}`));
  return [...options.replicas.keys()]
    .filter((key) => !names.has(key))
    .map((key) => ({
      severity: "error" as const,
      check: "options",
      message: `--replicas ${key}: the app has no ${key}`,
      hint: "name a workload of the app as Kind/name, e.g. Deployment/web=2",
    }));
}

function planVolumes(inventory: Inventory, drafts: readonly Draft[], options: PlanOptions): PlanVolume[] {
  const claims = new Map(drafts.filter((d) => d.original.kind === "PersistentVolumeClaim").map((d) => [`${d.original.metadata.namespace ?? ""}/${d.original.metadata.name ?? ""}`, d.object]));
  return inventory.claims.map((claim) => {
    const planned = claims.get(`${claim.namespace}/${claim.name}`);
    const spec = mapAt(planned, "spec");
    const requested = parseQuantity(mapAt(spec, "resources", "requests")?.["storage"]);
    return {
      claim: claim.name,
      namespace: claim.namespace,
      targetNamespace: planned?.metadata.namespace ?? (claim.namespace === options.sourceNamespace ? options.targetNamespace : claim.namespace),
      storageClass: claim.storageClass,
      targetStorageClass: stringAt(spec, "storageClassName") ?? options.storageClasses.get(claim.storageClass) ?? claim.storageClass,
      requestedBytes: claim.requestedBytes,
      targetRequestedBytes: requested ?? claim.requestedBytes,
      capacityBytes: claim.capacityBytes,
      usedBytes: claim.usedBytes,
      volume: claim.volume,
      access: claim.access,
    };
  });
}

function checkStorage(volumes: readonly PlanVolume[], claims: readonly ClaimInfo[], drafts: readonly Draft[], target: ClusterFacts): Problem[] {
  const problems: Problem[] = [];
  const classes = target.objects.filter((o) => o.kind === "StorageClass").map((o) => o.metadata.name ?? "");
  const hasDefault = target.objects.some((o) => o.kind === "StorageClass" && DEFAULT_CLASS_ANNOTATIONS.some((a) => o.metadata.annotations?.[a] === "true"));
  const checkClass = (storageClass: string | undefined, sourceClass: string, what: string, ref: ObjectRef | undefined): void => {
    if (storageClass === "" || (storageClass === undefined && hasDefault) || (storageClass !== undefined && classes.includes(storageClass))) return;
    const available = classes.length === 0 ? "it has none" : `it has ${classes.join(", ")}`;
    problems.push({
      severity: "error",
      check: "storage-class",
      ...(ref !== undefined && { object: ref }),
      message:
        storageClass === undefined
          ? `${what} names no storage class and ${target.cluster} has no default one (${available})`
          : `${what} needs StorageClass ${storageClass}, which ${target.cluster} does not have (${available})`,
      hint: `map the class: --storage-class ${sourceClass === "" ? "SRC" : sourceClass}=${classes[0] ?? "DST"}`,
    });
  };
  const claimRefs = new Map(drafts.filter((d) => d.object.kind === "PersistentVolumeClaim").map((d) => [`${d.object.metadata.namespace ?? ""}/${d.object.metadata.name ?? ""}`, refOf(d.object)]));
  for (const volume of volumes) {
    const ref = claimRefs.get(`${volume.targetNamespace}/${volume.claim}`);
    const what = `claim ${volume.claim} in ${volume.namespace}`;
    checkClass(volume.targetStorageClass === "" ? undefined : volume.targetStorageClass, volume.storageClass, what, ref);
    const size = (n: number): string => formatBytesQuantity(n);
    const grow = `raise its request on the target with a rules file (mergePatches: spec.resources.requests.storage) for persistentvolumeclaims`;
    if (volume.targetRequestedBytes < volume.usedBytes) {
      problems.push({
        severity: "error",
        check: "capacity",
        ...(ref !== undefined && { object: ref }),
        message: `${what}: the target claim requests ${size(volume.targetRequestedBytes)}, less than the ${size(volume.usedBytes)} its files use on the source`,
        hint: grow,
      });
    } else if (volume.targetRequestedBytes < volume.capacityBytes) {
      problems.push({
        severity: "warning",
        check: "capacity",
        ...(ref !== undefined && { object: ref }),
        message: `${what}: the target claim requests ${size(volume.targetRequestedBytes)}, less than the source volume's ${size(volume.capacityBytes)} capacity (its data fits today: ${size(volume.usedBytes)} used)`,
        hint: grow,
      });
    }
  }
  // An unbound claim has no data to copy; a bound one the agent cannot read would arrive empty.
  for (const claim of claims.filter((c) => c.access === "" && c.volumeName !== "")) {
    problems.push({
      severity: "error",
      check: "volume-access",
      message: `claim ${claim.name} in ${claim.namespace}: the source agent cannot reach its files${claim.reason === "" ? "" : ` (${claim.reason})`}`,
      hint: "run the agent where it can reach the volume (local and hostPath volumes today)",
    });
  }
  for (const draft of drafts.filter((d) => d.object.kind === "StatefulSet")) {
    for (const template of listAt(mapAt(draft.object, "spec"), "volumeClaimTemplates")) {
      const name = stringAt(mapAt(template, "metadata"), "name") ?? "?";
      const source = stringAt(mapAt(template, "spec"), "storageClassName");
      const sourceClass = stringAt(mapAt(listAt(mapAt(draft.original, "spec"), "volumeClaimTemplates").find((t) => stringAt(mapAt(t, "metadata"), "name") === name), "spec"), "storageClassName");
      checkClass(source, sourceClass ?? "", `claim template ${name} of ${describeRef(refOf(draft.object))}`, refOf(draft.object));
    }
  }
  return problems;
}

/** The objects the target agent's Stage takes, in creation order: what the plan creates or adopts. */
export function planObjectsToStage(plan: Plan): KubeObject[] {
  return applyOrder(plan.objects.flatMap((o) => (o.object !== undefined && (o.action === "create" || o.action === "adopt") ? [o.object] : [])));
}
