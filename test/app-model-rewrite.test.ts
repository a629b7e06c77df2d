// The built-in rewrites, through buildPlan as the coordinator calls it: namespace (and its references), service DNS
// names, storage classes, image registries, replica overrides, route hosts, API-version conversion and quota
// fitting. Each change must be recorded with its step's name.
import test from "ava";
import { buildPlan, mapImage } from "../app-model/index.js";
import type { Change, KubeObject, Plan, PlanObject } from "../app-model/index.js";
import { V120, find, freshTarget, meta, planOptions, shopInventory, shopObjects } from "./fixtures/app-model-shop.js";

function planned(plan: Plan, kind: string, name: string): PlanObject & { object: KubeObject } {
  const found = plan.objects.find((o) => o.source.kind === kind && o.source.name === name);
  if (found?.object === undefined) throw new Error(`the plan does not move ${kind}/${name}`);
  return found as PlanObject & { object: KubeObject };
}

function changed(object: PlanObject, why: string): Change[] {
  return object.changes.filter((c) => c.why === why);
}

const basePlan = buildPlan(shopInventory(), freshTarget(), planOptions({ imageRegistries: new Map([["registry.eu.example.com", "registry.us.example.com"]]), routeHosts: new Map([["apps.eu.example.com", "apps.us.example.com"]]) }));

test("namespace: every namespaced object, the Namespace itself, and service-account subjects of bindings", (t) => {
  for (const object of basePlan.objects.filter((o) => o.action === "create" && o.source.namespace === "shop")) {
    t.is(object.target.namespace, "shop2", `${object.source.kind}/${object.source.name}`);
    t.is(object.object?.metadata.namespace, "shop2");
  }
  t.is(planned(basePlan, "Namespace", "shop").object.metadata.name, "shop2");
  t.deepEqual(planned(basePlan, "RoleBinding", "web-reader").object["subjects"], [{ kind: "ServiceAccount", name: "web", namespace: "shop2" }]);
  const crb = planned(basePlan, "ClusterRoleBinding", "shop-metrics");
  t.deepEqual(crb.object["subjects"], [
    { kind: "ServiceAccount", name: "web", namespace: "shop2" },
    { kind: "ServiceAccount", name: "agent", namespace: "monitoring" },
  ]);
  t.deepEqual(changed(crb, "namespace"), [{ path: "/subjects/0/namespace", op: "replace", before: "shop", after: "shop2", why: "namespace" }]);
});

const dnsRows: { title: string; before: string; after: string }[] = [
  { title: "NAME.NS.svc", before: "postgres://db.shop.svc:5432/shop", after: "postgres://db.shop2.svc:5432/shop" },
  { title: "NAME.NS.svc.cluster.local", before: "db.shop.svc.cluster.local", after: "db.shop2.svc.cluster.local" },
  { title: "NAME.NS alone", before: "web.shop", after: "web.shop2" },
  { title: "not inside a longer domain", before: "https://www.shop.example.com", after: "https://www.shop.example.com" },
  { title: "not a Service of the app", before: "cache.shop.svc", after: "cache.shop.svc" },
  { title: "a pod behind a headless Service", before: "db-0.db.shop.svc.cluster.local:5432", after: "db-0.db.shop2.svc.cluster.local:5432" },
];

for (const row of dnsRows) {
  test(`service DNS in ConfigMaps and env values: ${row.title}`, (t) => {
    const objects = shopObjects();
    const config = find(objects, "ConfigMap", "shop-config");
    config["data"] = { VALUE: row.before };
    const web = find(objects, "Deployment", "web");
    const env = (web["spec"] as { template: { spec: { containers: { env: { name: string; value: string }[] }[] } } }).template.spec.containers[0]?.env ?? [];
    env.splice(0, env.length, { name: "VALUE", value: row.before });
    const plan = buildPlan(shopInventory(objects), freshTarget(), planOptions());
    t.deepEqual(planned(plan, "ConfigMap", "shop-config").object["data"], { VALUE: row.after });
    const container = (planned(plan, "Deployment", "web").object["spec"] as { template: { spec: { containers: { env: unknown[] }[] } } }).template.spec.containers[0];
    t.deepEqual(container?.env, [{ name: "VALUE", value: row.after }]);
    t.is(changed(planned(plan, "ConfigMap", "shop-config"), "service-dns").length, row.before === row.after ? 0 : 1);
  });
}

test("service DNS is left alone unless asked", (t) => {
  const plan = buildPlan(shopInventory(), freshTarget(), planOptions({ rewriteServiceDns: false }));
  t.is((planned(plan, "ConfigMap", "shop-config").object["data"] as Record<string, string>)["DATABASE_URL"], "postgres://db.shop.svc:5432/shop");
});

test("storage classes: claims and StatefulSet claim templates; a claim without a class gets its default's mapping", (t) => {
  const objects = shopObjects();
  const noClass: KubeObject = { apiVersion: "v1", kind: "PersistentVolumeClaim", metadata: meta("scratch", "shop"), spec: { accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "1Gi" } } } };
  const plan = buildPlan(shopInventory([...objects, noClass]), freshTarget(), planOptions());
  const claim = planned(plan, "PersistentVolumeClaim", "web-data");
  t.is((claim.object["spec"] as { storageClassName: string }).storageClassName, "fast");
  t.deepEqual(changed(claim, "storage-class"), [{ path: "/spec/storageClassName", op: "replace", before: "local-path", after: "fast", why: "storage-class" }]);
  const db = planned(plan, "StatefulSet", "db").object["spec"] as { volumeClaimTemplates: { spec: { storageClassName: string } }[] };
  t.is(db.volumeClaimTemplates[0]?.spec.storageClassName, "fast");
  t.is((planned(plan, "PersistentVolumeClaim", "scratch").object["spec"] as { storageClassName?: string }).storageClassName, "fast");
  const volume = plan.volumes.find((v) => v.claim === "web-data");
  t.like(volume, { storageClass: "local-path", targetStorageClass: "fast", targetNamespace: "shop2", targetRequestedBytes: 2 ** 30 });
});

const imageRows: [string, string][] = [
  ["registry.eu.example.com/shop/web:1.4", "registry.us.example.com/shop/web:1.4"],
  ["registry.eu.example.com:5000/shop/web:1.4", "registry.eu.example.com:5000/shop/web:1.4"],
  ["registry.eu.example.com.evil/web", "registry.eu.example.com.evil/web"],
  ["docker.io/library/postgres:13", "mirror.us/library/postgres:13"],
  ["docker.io/library/redis:6", "mirror.us/library/redis:6"],
  ["docker.io/bitnami/redis:6", "mirror.us/docker/bitnami/redis:6"],
];
const registries = new Map([["registry.eu.example.com", "registry.us.example.com"], ["docker.io", "mirror.us/docker"], ["docker.io/library/", "mirror.us/library"]]);

for (const [from, to] of imageRows) {
  test(`image registry mapping: ${from}`, (t) => {
    t.is(mapImage(from, registries), to);
  });
}

test("image registry mapping reaches every pod template: containers, init containers, CronJob job templates, DeploymentConfigs", (t) => {
  const images = (object: KubeObject): string[] => JSON.stringify(object).match(/"image":"[^"]+"/g) ?? [];
  for (const [kind, name] of [["Deployment", "web"], ["CronJob", "backup"], ["DeploymentConfig", "legacy"]] as const) {
    const object = planned(basePlan, kind, name);
    const all = images(object.object);
    t.true(all.length > 0);
    t.true(all.every((i) => i.includes("registry.us.example.com")), `${kind}/${name}: ${all.join(" ")}`);
    t.true(changed(object, "image-registry").length > 0);
  }
  t.deepEqual(changed(planned(basePlan, "Deployment", "web"), "image-registry").map((c) => c.path), [
    "/spec/template/spec/containers/0/image",
    "/spec/template/spec/initContainers/0/image",
  ]);
});

test("replica overrides; one naming a workload the app lacks is an error", (t) => {
  const plan = buildPlan(shopInventory(), freshTarget(), planOptions({ replicas: new Map([["Deployment/web", 1], ["StatefulSet/cache", 2]]) }));
  const web = planned(plan, "Deployment", "web");
  t.is((web.object["spec"] as { replicas: number }).replicas, 1);
  t.deepEqual(changed(web, "replicas"), [{ path: "/spec/replicas", op: "replace", before: 3, after: 1, why: "replicas" }]);
  t.true(plan.problems.some((p) => p.check === "options" && p.severity === "error" && p.message.includes("StatefulSet/cache")));
});

test("route hosts by suffix; a generated host is left to the target's router", (t) => {
  const api = planned(basePlan, "Route", "api");
  t.is((api.object["spec"] as { host: string }).host, "api.apps.us.example.com");
  t.is(changed(api, "route-host").length, 1);
  t.is((planned(basePlan, "Route", "web").object["spec"] as { host?: string }).host, undefined);
});

// A 1.25+ source (batch/v1 CronJob, policy/v1 PDB, autoscaling/v2 HPA) into a target that serves only the older versions.
function newerSource(): KubeObject[] {
  const objects = shopObjects();
  find(objects, "CronJob", "backup").apiVersion = "batch/v1";
  find(objects, "PodDisruptionBudget", "web").apiVersion = "policy/v1";
  const hpa = find(objects, "HorizontalPodAutoscaler", "web");
  hpa.apiVersion = "autoscaling/v2";
  hpa["spec"] = { scaleTargetRef: { apiVersion: "apps/v1", kind: "Deployment", name: "web" }, minReplicas: 2, maxReplicas: 6, metrics: [{ type: "Resource", resource: { name: "cpu", target: { type: "Utilization", averageUtilization: 70 } } }] };
  return objects;
}

const olderTarget = V120.filter(([group, version, kind]) => !(kind === "Ingress" && group === "networking.k8s.io" && version === "v1"));

test("API versions: a newer source's CronJob, PDB, HPA and Ingress convert to what a 1.18-like target serves", (t) => {
  const plan = buildPlan(shopInventory(newerSource()), freshTarget([], olderTarget), planOptions());
  t.deepEqual(plan.problems.filter((p) => p.check === "kind-served"), []);
  t.is(planned(plan, "CronJob", "backup").object.apiVersion, "batch/v1beta1");
  t.is(planned(plan, "PodDisruptionBudget", "web").object.apiVersion, "policy/v1beta1");
  t.is(planned(plan, "HorizontalPodAutoscaler", "web").object.apiVersion, "autoscaling/v2beta2");
  const ingress = planned(plan, "Ingress", "web");
  t.is(ingress.object.apiVersion, "networking.k8s.io/v1beta1");
  t.deepEqual((ingress.object["spec"] as { rules: { http: { paths: unknown[] } }[] }).rules[0]?.http.paths[0], { path: "/", pathType: "Prefix", backend: { serviceName: "web", servicePort: 80 } });
  t.true(changed(ingress, "api-version").some((c) => c.path === "/apiVersion"));
});

test("API versions: an old manifest's v1beta1 kinds convert forward for a target that removed them", (t) => {
  const objects = shopObjects();
  const ingress = find(objects, "Ingress", "web");
  ingress.apiVersion = "extensions/v1beta1";
  ingress["spec"] = { backend: { serviceName: "web", servicePort: "http" }, rules: [{ http: { paths: [{ path: "/api", backend: { serviceName: "web", servicePort: 80 } }] } }] };
  const modern = V120.filter(([group, version]) => version !== "v1beta1" || group === "discovery.k8s.io").concat([["batch", "v1", "CronJob", "cronjobs", true], ["policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", true]]);
  const plan = buildPlan(shopInventory(objects), freshTarget([], modern), planOptions());
  t.deepEqual(plan.problems.filter((p) => p.check === "kind-served"), []);
  t.is(planned(plan, "CronJob", "backup").object.apiVersion, "batch/v1");
  t.is(planned(plan, "PodDisruptionBudget", "web").object.apiVersion, "policy/v1");
  t.deepEqual(planned(plan, "Ingress", "web").object["spec"], {
    defaultBackend: { service: { name: "web", port: { name: "http" } } },
    rules: [{ http: { paths: [{ path: "/api", pathType: "ImplementationSpecific", backend: { service: { name: "web", port: { number: 80 } } } }] } }],
  });
});

test("API versions: what cannot convert, or is not served at all, is an error with the reason, never a silent drop", (t) => {
  const objects = newerSource();
  find(objects, "PodDisruptionBudget", "web")["spec"] = { maxUnavailable: 1, selector: {} };
  objects.push({ apiVersion: "snapshot.storage.k8s.io/v1", kind: "VolumeSnapshotClass", metadata: meta("csi", undefined), driver: "x" });
  const plan = buildPlan(shopInventory(objects), freshTarget(), planOptions());
  const pdb = plan.problems.find((p) => p.object?.kind === "PodDisruptionBudget");
  t.like(pdb, { severity: "error", check: "kind-served" });
  t.regex(pdb?.message ?? "", /empty spec\.selector/);
  const snapshotClass = plan.problems.find((p) => p.object?.kind === "VolumeSnapshotClass");
  t.like(snapshotClass, { severity: "error" });
  t.regex(snapshotClass?.message ?? "", /does not serve snapshot\.storage\.k8s\.io\/v1 VolumeSnapshotClass/);
  t.truthy(plan.objects.find((o) => o.source.kind === "PodDisruptionBudget"), "the object is still in the plan");
});

test("quota fitting: requests scaled proportionally to what the target namespace's quota leaves, and said so", (t) => {
  const quota: KubeObject = {
    apiVersion: "v1",
    kind: "ResourceQuota",
    metadata: meta("compute", "shop2"),
    spec: { hard: { "requests.cpu": "3", "limits.memory": "8Gi" } },
    status: { hard: { "requests.cpu": "3", "limits.memory": "8Gi" }, used: { "requests.cpu": "500m", "limits.memory": "0" } },
  };
  const plan = buildPlan(shopInventory(), freshTarget([quota]), planOptions());
  // web 3 × 500m, db 1, backup and legacy state none (the moved LimitRange defaults them, the quota cannot see that):
  // 2.5 cores wanted, 2.5 left, so nothing scales yet.
  t.deepEqual(plan.problems.filter((p) => p.check === "quota"), []);
  const tight = { ...quota, status: { used: { "requests.cpu": "1500m" } } };
  const fitted = buildPlan(shopInventory(), freshTarget([tight]), planOptions());
  const web = planned(fitted, "Deployment", "web");
  const containers = (o: KubeObject): { resources: { requests: Record<string, string>; limits?: Record<string, string> } }[] =>
    (o["spec"] as { template: { spec: { containers: never[] } } }).template.spec.containers;
  t.is(containers(web.object)[0]?.resources.requests["cpu"], "300m");
  t.is(containers(planned(fitted, "StatefulSet", "db").object)[0]?.resources.requests["cpu"], "600m");
  t.deepEqual(changed(web, "quota").map((c) => [c.path, c.before, c.after]), [
    ["/spec/template/spec/containers/0/resources/requests/cpu", "500m", "300m"],
    ["/spec/template/spec/initContainers/0/resources/requests/cpu", "100m", "60m"],
  ]);
  const warning = fitted.problems.find((p) => p.check === "quota");
  t.like(warning, { severity: "warning" });
  t.regex(warning?.message ?? "", /requests\.cpu .* scaled to 60%/);
});

test("quota fitting: a LimitRange's max clamps, and limits never end below requests", (t) => {
  const range: KubeObject = { apiVersion: "v1", kind: "LimitRange", metadata: meta("small", "shop2"), spec: { limits: [{ type: "Container", max: { cpu: "1500m", memory: "1Gi" } }] } };
  const plan = buildPlan(shopInventory(), freshTarget([range]), planOptions());
  const db = planned(plan, "StatefulSet", "db");
  const resources = (db.object["spec"] as { template: { spec: { containers: { resources: unknown }[] } } }).template.spec.containers[0]?.resources;
  t.deepEqual(resources, { requests: { cpu: "1", memory: "1Gi" }, limits: { cpu: "1500m", memory: "1Gi" } });
  t.true(changed(db, "quota").length === 2);
  t.true(plan.problems.some((p) => p.check === "quota" && p.severity === "warning" && p.message.includes("max")));
});

test("quota fitting: a quota'd resource that a container does not state, without a LimitRange default, is an error", (t) => {
  const objects = shopObjects().filter((o) => o.kind !== "LimitRange");
  const quota: KubeObject = { apiVersion: "v1", kind: "ResourceQuota", metadata: meta("compute", "shop2"), spec: { hard: { "limits.cpu": "100" } } };
  const plan = buildPlan(shopInventory(objects), freshTarget([quota]), planOptions());
  const problem = plan.problems.find((p) => p.check === "quota" && p.object?.name === "legacy");
  t.like(problem, { severity: "error" });
  t.regex(problem?.message ?? "", /container legacy of DeploymentConfig\/legacy/);
});
