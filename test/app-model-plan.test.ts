// The plan as a whole: what moves and what stays (with the reason, never dropped silently), the checks, conflicts
// with adopt or fail, creation order, the volumes, and the target lookups DescribeCluster must make.
import test from "ava";
import { applyOrder, buildPlan, deleteOrder, planLookups, planObjectsToStage, refKey, refOf, LABEL_MIGRATION } from "../app-model/index.js";
import type { KubeObject, Plan, PlanObject } from "../app-model/index.js";
import { V120, find, freshTarget, meta, planOptions, shopInventory, shopObjects, storageClass } from "./fixtures/app-model-shop.js";

const shop = shopObjects();
const inventory = shopInventory(shop);
const plan = buildPlan(inventory, freshTarget(), planOptions());

function entry(p: Plan, kind: string, name: string): PlanObject {
  const found = p.objects.find((o) => o.source.kind === kind && o.source.name === name);
  if (found === undefined) throw new Error(`${kind}/${name} is not in the plan`);
  return found;
}

test("every discovered object is in the plan exactly once", (t) => {
  t.deepEqual(plan.objects.map((o) => refKey(o.source)).sort(), shop.map((o) => refKey(refOf(o))).sort());
  t.deepEqual(plan.problems, [], plan.problems.map((p) => p.message).join("\n"));
});

const skips: [kind: string, name: string, reason: RegExp][] = [
  ["ReplicaSet", "web-5d8f7c9b4d", /owner Deployment\/web/],
  ["Pod", "web-5d8f7c9b4d-x7k2p", /owner ReplicaSet\/web-5d8f7c9b4d/],
  ["Pod", "db-0", /owner StatefulSet\/db/],
  ["ControllerRevision", "db-6b7c8d9f5", /revisions|owner/],
  ["Job", "backup-1606727400", /owner CronJob\/backup/],
  ["ReplicationController", "legacy-1", /owner DeploymentConfig\/legacy/],
  ["Endpoints", "web", /endpoints controller/],
  ["EndpointSlice", "web-x2k9d", /EndpointSlice controller/],
  ["Event", "web.164b2c", /history/],
  ["Secret", "default-token-x1y2z", /token controller/],
  ["Secret", "web-token-ab12c", /token controller makes the token of ServiceAccount web/],
  ["ServiceAccount", "default", /default ServiceAccount/],
  ["ConfigMap", "kube-root-ca.crt", /CA bundle/],
  ["PersistentVolume", "pvc-0a1b2c3d-0000-4000-8000-000000000001", /provisioner makes a new volume/],
  ["StorageClass", "local-path", /--storage-class/],
];

for (const [kind, name, reason] of skips) {
  test(`stays: ${kind}/${name}, with its reason`, (t) => {
    const object = entry(plan, kind, name);
    t.is(object.action, "skip");
    t.regex(object.reason ?? "", reason);
    t.is(object.object, undefined);
  });
}

const moves = [
  "Namespace/shop", "Deployment/web", "StatefulSet/db", "PersistentVolumeClaim/web-data", "PersistentVolumeClaim/data-db-0",
  "Service/db", "Service/web", "Service/web-nodeport", "ConfigMap/shop-config", "Secret/shop-secret", "ServiceAccount/web",
  "Role/web-reader", "RoleBinding/web-reader", "ClusterRole/shop-metrics", "ClusterRoleBinding/shop-metrics", "Ingress/web",
  "NetworkPolicy/web", "CronJob/backup", "HorizontalPodAutoscaler/web", "PodDisruptionBudget/web", "LimitRange/limits",
  "CustomResourceDefinition/widgets.example.com", "Widget/blue", "Route/web", "Route/api", "DeploymentConfig/legacy",
];

test("moves: the workloads, configuration, services, routes, claims, RBAC, custom resources and their CRD", (t) => {
  const created = plan.objects.filter((o) => o.action === "create").map((o) => `${o.source.kind}/${o.source.name}`);
  t.deepEqual(created.sort(), [...moves].sort());
});

test("finished Pods and Jobs stay; a standalone running Job moves; a user's Endpoints of a selector-less Service move", (t) => {
  const objects = shopObjects();
  const doneJob: KubeObject = { apiVersion: "batch/v1", kind: "Job", metadata: meta("once", "shop"), spec: { template: { spec: { containers: [] } } }, status: { conditions: [{ type: "Failed", status: "True" }] } };
  const runningJob: KubeObject = { apiVersion: "batch/v1", kind: "Job", metadata: meta("reindex", "shop"), spec: { parallelism: 2, template: { spec: { containers: [] } } }, status: { active: 2 } };
  const donePod: KubeObject = { apiVersion: "v1", kind: "Pod", metadata: meta("debug", "shop"), spec: { containers: [] }, status: { phase: "Succeeded" } };
  const external: KubeObject = { apiVersion: "v1", kind: "Service", metadata: meta("legacy-db", "shop"), spec: { clusterIP: "10.1.3.3", ports: [{ port: 5432 }] } };
  const externalEndpoints: KubeObject = { apiVersion: "v1", kind: "Endpoints", metadata: meta("legacy-db", "shop"), subsets: [{ addresses: [{ ip: "192.0.2.40" }], ports: [{ port: 5432 }] }] };
  const p = buildPlan(shopInventory([...objects, doneJob, runningJob, donePod, external, externalEndpoints]), freshTarget(), planOptions());
  t.like(entry(p, "Job", "once"), { action: "skip" });
  t.regex(entry(p, "Job", "once").reason ?? "", /finished/);
  t.like(entry(p, "Pod", "debug"), { action: "skip" });
  t.like(entry(p, "Job", "reindex"), { action: "create" });
  t.like(entry(p, "Endpoints", "legacy-db"), { action: "create" });
});

test("a CRD the target has already stays, and its custom resources still move", (t) => {
  const crd = structuredClone(find(shop, "CustomResourceDefinition", "widgets.example.com"));
  crd.metadata.uid = "another-uid";
  const p = buildPlan(inventory, freshTarget([crd]), planOptions());
  t.like(entry(p, "CustomResourceDefinition", "widgets.example.com"), { action: "skip", reason: "the target has this definition already" });
  t.like(entry(p, "Widget", "blue"), { action: "create" });
  t.deepEqual(p.problems, []);
});

test("a custom resource whose CRD neither moves nor is on the target is an error naming the fix", (t) => {
  const p = buildPlan(shopInventory(shop.filter((o) => o.kind !== "CustomResourceDefinition")), freshTarget(), planOptions());
  const problem = p.problems.find((x) => x.object?.kind === "Widget");
  t.like(problem, { severity: "error", check: "crd" });
  t.regex(problem?.hint ?? "", /install the definition of widgets\.example\.com/);
});

test("a CRD on the target that does not serve the custom resource's version is an error", (t) => {
  const crd = structuredClone(find(shop, "CustomResourceDefinition", "widgets.example.com"));
  (crd["spec"] as { versions: { name: string }[] }).versions = [{ name: "v2" }];
  const p = buildPlan(inventory, freshTarget([crd]), planOptions());
  const problem = p.problems.find((x) => x.object?.kind === "Widget");
  t.like(problem, { severity: "error", check: "crd" });
  t.regex(problem?.message ?? "", /does not serve version v1/);
});

test("checks: a storage class the target lacks, with the flag that fixes it", (t) => {
  const target = { ...freshTarget(), objects: [storageClass("gold", true)] };
  const p = buildPlan(inventory, target, planOptions({ storageClasses: new Map() }));
  const problems = p.problems.filter((x) => x.check === "storage-class");
  t.is(problems.length, 3, "two claims and the StatefulSet's claim template");
  t.regex(problems[0]?.message ?? "", /claim web-data in shop needs StorageClass local-path, which us does not have \(it has gold\)/);
  t.is(problems[0]?.hint, "map the class: --storage-class local-path=gold");
  t.true(problems.every((x) => x.severity === "error"));
});

test("checks: a target claim smaller than the used bytes is an error, smaller than the capacity a warning", (t) => {
  const inv = { ...inventory, claims: inventory.claims.map((c) => (c.name === "web-data" ? { ...c, usedBytes: 3 * 2 ** 30, capacityBytes: 4 * 2 ** 30 } : { ...c, capacityBytes: 8 * 2 ** 30 })) };
  const p = buildPlan(inv, freshTarget(), planOptions());
  const web = p.problems.find((x) => x.check === "capacity" && x.message.includes("web-data"));
  t.like(web, { severity: "error", object: { kind: "PersistentVolumeClaim", name: "web-data", namespace: "shop2" } });
  t.regex(web?.message ?? "", /requests 1Gi, less than the 3Gi its files use/);
  const db = p.problems.find((x) => x.check === "capacity" && x.message.includes("data-db-0"));
  t.like(db, { severity: "warning" });
});

test("checks: count and storage quotas of the target namespace", (t) => {
  const quota: KubeObject = {
    apiVersion: "v1",
    kind: "ResourceQuota",
    metadata: meta("objects", "shop2"),
    spec: { hard: { persistentvolumeclaims: "1", "requests.storage": "2Gi", services: "10", pods: "4", "count/deployments.apps": "1", "fast.storageclass.storage.k8s.io/requests.storage": "10Gi" } },
    status: { used: { persistentvolumeclaims: "0", "requests.storage": "0", pods: "1" } },
  };
  const p = buildPlan(inventory, freshTarget([quota]), planOptions());
  const messages = p.problems.filter((x) => x.check === "quota").map((x) => x.message);
  t.deepEqual(messages, [
    "ResourceQuota/objects in shop2 allows 1 more persistentvolumeclaims in shop2, the app needs 2",
    "ResourceQuota/objects in shop2 allows 2Gi more requests.storage in shop2, the app needs 3Gi",
    // web 3, db 1, legacy 2, backup 1: activation runs 7 pods; 3 are left.
    "ResourceQuota/objects in shop2 allows 3 more pods in shop2, the app needs 7",
  ]);
});

test("conflicts: an object of the same name on the target fails the plan, or is adopted when asked", (t) => {
  const existingService: KubeObject = { apiVersion: "v1", kind: "Service", metadata: meta("web", "shop2"), spec: { ports: [{ port: 80 }] } };
  const existingNs: KubeObject = { apiVersion: "v1", kind: "Namespace", metadata: meta("shop2", undefined) };
  const failing = buildPlan(inventory, freshTarget([existingService, existingNs]), planOptions());
  t.like(entry(failing, "Service", "web"), { action: "conflict", reason: "Service/web in shop2 exists on us" });
  const problem = failing.problems.find((x) => x.check === "conflict");
  t.like(problem, { severity: "error", object: { kind: "Service", name: "web", namespace: "shop2" } });
  t.regex(problem?.hint ?? "", /--on-conflict adopt/);
  t.like(entry(failing, "Namespace", "shop"), { action: "adopt" });
  t.is(failing.problems.filter((x) => x.check === "conflict").length, 1, "an existing namespace is no conflict");

  const adopting = buildPlan(inventory, freshTarget([existingService]), planOptions({ onConflict: "adopt" }));
  t.like(entry(adopting, "Service", "web"), { action: "adopt" });
  t.truthy(entry(adopting, "Service", "web").object);
  t.deepEqual(adopting.problems, []);
});

test("conflicts: an object this migration staged before is planned again, one of another migration is a conflict", (t) => {
  const staged: KubeObject = { apiVersion: "v1", kind: "Service", metadata: meta("web", "shop2", { labels: { [LABEL_MIGRATION]: "m-1" } }), spec: {} };
  t.like(entry(buildPlan(inventory, freshTarget([staged]), planOptions({ migrationId: "m-1" })), "Service", "web"), { action: "create" });
  const other = entry(buildPlan(inventory, freshTarget([staged]), planOptions({ migrationId: "m-2" })), "Service", "web");
  t.like(other, { action: "conflict" });
  t.regex(other.reason ?? "", /staged by migration m-1/);
});

test("conflicts: within one cluster (same uid) a cluster-scoped dependency is the same object, not a conflict", (t) => {
  const p = buildPlan(inventory, freshTarget([find(shop, "ClusterRole", "shop-metrics")]), planOptions());
  t.like(entry(p, "ClusterRole", "shop-metrics"), { action: "skip", reason: "the same object: source and target are one cluster" });
  t.deepEqual(p.problems, []);
});

test("a bound claim the source agent cannot reach is an error; discovery's warnings are reported", (t) => {
  const inv = { ...inventory, warnings: ["metrics.k8s.io/v1beta1 pods: the server is currently unable to handle the request"], claims: inventory.claims.map((c) => (c.name === "web-data" ? { ...c, access: "", reason: "an NFS volume needs a mover pod" } : c)) };
  const p = buildPlan(inv, freshTarget(), planOptions());
  t.like(p.problems.find((x) => x.check === "volume-access"), { severity: "error", message: "claim web-data in shop: the source agent cannot reach its files (an NFS volume needs a mover pod)" });
  t.like(p.problems.find((x) => x.check === "discovery"), { severity: "warning" });
});

test("volumes: one per claim, with classes and sizes before and after", (t) => {
  t.deepEqual(plan.volumes, [
    { claim: "web-data", namespace: "shop", targetNamespace: "shop2", storageClass: "local-path", targetStorageClass: "fast", requestedBytes: 2 ** 30, targetRequestedBytes: 2 ** 30, capacityBytes: 2 ** 30, usedBytes: 300 * 2 ** 20, volume: "shop/web-data", access: "direct" },
    { claim: "data-db-0", namespace: "shop", targetNamespace: "shop2", storageClass: "local-path", targetStorageClass: "fast", requestedBytes: 2 * 2 ** 30, targetRequestedBytes: 2 * 2 ** 30, capacityBytes: 2 * 2 ** 30, usedBytes: 2 ** 30, volume: "shop/data-db-0", access: "direct" },
  ]);
});

test("order: dependencies first, custom resources after their CRD, routes and webhooks last; deletion the reverse", (t) => {
  const webhook: KubeObject = { apiVersion: "admissionregistration.k8s.io/v1", kind: "ValidatingWebhookConfiguration", metadata: meta("shop-check", undefined), webhooks: [] };
  const ordered = applyOrder([...shop, webhook]).map((o) => o.kind);
  const index = (kind: string): number => ordered.indexOf(kind);
  const chain = ["CustomResourceDefinition", "Namespace", "StorageClass", "PersistentVolume", "PersistentVolumeClaim", "ClusterRole", "Role", "ServiceAccount", "ClusterRoleBinding", "RoleBinding", "Secret", "ConfigMap", "LimitRange", "Service", "Deployment", "Route", "Ingress", "ValidatingWebhookConfiguration"];
  for (let i = 1; i < chain.length; i++) t.true(index(chain[i - 1] ?? "") < index(chain[i] ?? ""), `${chain[i - 1] ?? ""} before ${chain[i] ?? ""}`);
  t.true(index("CustomResourceDefinition") < index("Widget"));
  t.is(ordered[ordered.length - 1], "ValidatingWebhookConfiguration");
  t.deepEqual(deleteOrder([...shop, webhook]).map((o) => o.kind), [...ordered].reverse());
  const staged = planObjectsToStage(plan);
  t.is(staged[0]?.kind, "CustomResourceDefinition");
  t.is(staged.length, moves.length);
});

test("lookups: the target refs of everything that may move, any version for kinds the target may serve otherwise", (t) => {
  const lookups = planLookups(inventory, planOptions());
  const keys = new Set(lookups.map(refKey));
  t.true(keys.has("v1/Service/shop2/web"));
  t.true(keys.has("v1/Namespace//shop2"));
  t.true(keys.has("rbac.authorization.k8s.io/v1/ClusterRole//shop-metrics"));
  t.true(keys.has("apiextensions.k8s.io/v1/CustomResourceDefinition//widgets.example.com"));
  t.true(keys.has("/CronJob/shop2/backup"), "a convertible kind is looked up in any version");
  t.false(lookups.some((r) => r.kind === "Pod" || r.kind === "Event" || r.kind === "PersistentVolume"));
  t.is(lookups.length, moves.length);
});

test("the plan is plain JSON (the coordinator prints it with -o json)", (t) => {
  t.deepEqual(JSON.parse(JSON.stringify(plan)), plan);
});

test("OpenShift kinds on a target that is not OpenShift: an error that says so", (t) => {
  const plain = freshTarget([], V120.filter(([group]) => !group.endsWith(".openshift.io")));
  const p = buildPlan(inventory, plain, planOptions());
  const routes = p.problems.filter((x) => x.object?.kind === "Route" || x.object?.kind === "DeploymentConfig");
  t.is(routes.length, 3);
  t.true(routes.every((x) => x.severity === "error" && x.check === "kind-served" && /is not OpenShift/.test(x.hint ?? "")));
});

test("checks: a CronJob its user suspended charges no pods", (t) => {
  const objects = shopObjects();
  (find(objects, "CronJob", "backup")["spec"] as { suspend: boolean }).suspend = true;
  const quota: KubeObject = { apiVersion: "v1", kind: "ResourceQuota", metadata: meta("pods", "shop2"), spec: { hard: { pods: "5" } } };
  const p = buildPlan(shopInventory(objects), freshTarget([quota]), planOptions());
  t.deepEqual(p.problems.map((x) => x.message), ["ResourceQuota/pods in shop2 allows 5 more pods in shop2, the app needs 6"]);
});

test("a bare Pod that mounts a claim stays, with a warning: nothing could hold it at rest on the target", (t) => {
  const bare: KubeObject = { apiVersion: "v1", kind: "Pod", metadata: meta("maintenance", "shop"), spec: { containers: [{ name: "c", image: "x" }], volumes: [{ name: "d", persistentVolumeClaim: { claimName: "web-data" } }] }, status: { phase: "Running" } };
  const idle: KubeObject = { apiVersion: "v1", kind: "Pod", metadata: meta("toolbox", "shop"), spec: { containers: [{ name: "c", image: "x" }] }, status: { phase: "Running" } };
  const p = buildPlan(shopInventory([...shopObjects(), bare, idle]), freshTarget(), planOptions());
  t.like(entry(p, "Pod", "maintenance"), { action: "skip" });
  t.regex(entry(p, "Pod", "maintenance").reason ?? "", /mounts claim web-data/);
  t.like(p.problems.find((x) => x.check === "stays"), { severity: "warning", object: { kind: "Pod", name: "maintenance" } });
  t.like(entry(p, "Pod", "toolbox"), { action: "create" }, "a bare Pod without claims moves");
});

test("OpenShift's own ServiceAccounts stay; one a user named builder moves", (t) => {
  const made: KubeObject = { apiVersion: "v1", kind: "ServiceAccount", metadata: meta("deployer", "shop"), secrets: [{ name: "deployer-token-q8w2e" }, { name: "deployer-dockercfg-z7x4c" }], imagePullSecrets: [{ name: "deployer-dockercfg-z7x4c" }] };
  const users: KubeObject = { apiVersion: "v1", kind: "ServiceAccount", metadata: meta("builder", "shop") };
  const p = buildPlan(shopInventory([...shopObjects(), made, users]), freshTarget(), planOptions());
  t.like(entry(p, "ServiceAccount", "deployer"), { action: "skip", reason: "OpenShift makes it in every namespace" });
  t.like(entry(p, "ServiceAccount", "builder"), { action: "create" });
});
