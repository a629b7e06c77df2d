// The target's real API server is the judge of the pure core: the composite "shop" app, as a 1.25+ source would
// return it (batch/v1 CronJob, policy/v1 PDB, autoscaling/v2 HPA), planned onto a real v1.20.2 local cluster and
// created there in its staged form, object by object in applyOrder; then activated, quiesced and unquiesced with the
// merge patches app-model makes, read back from the server. No other component is involved.
import { rm } from "node:fs/promises";
import anyTest from "ava";
import type { TestFn } from "ava";
import {
  ANNOTATION_QUIESCED,
  activationPatch,
  buildPlan,
  planObjectsToStage,
  quiescePatch,
  refOf,
  stagedForm,
  unquiescePatch,
} from "../app-model/index.js";
import type { KubeObject, Plan } from "../app-model/index.js";
import { createKubeObjects, createKubeRest, loadKubeConfig } from "../kube/index.js";
import type { KubeObjects } from "../kube/index.js";
import { downCluster, installOpenShiftKinds, upCluster } from "../local-clusters/index.js";
import { eventually, privateTheseusHome, withHint } from "./local-clusters-support.js";
import { find, planOptions, shopInventory, shopObjects } from "./fixtures/app-model-shop.js";

interface Context {
  home: string;
  objects: KubeObjects;
  plan: Plan;
}
const test = anyTest as TestFn<Context>;
const NAME = "am-judge";
const ID = "m-judge";
const NS = "judge";

test.before(async (t) => {
  t.context.home = privateTheseusHome();
  try {
    const cluster = await upCluster(NAME, { nodes: 1 });
    await installOpenShiftKinds(cluster.kubeconfigPath);
    t.context.objects = createKubeObjects(createKubeRest(loadKubeConfig(cluster.kubeconfigPath)));
  } catch (error) {
    throw withHint(error);
  }
  const source = shopObjects();
  find(source, "CronJob", "backup").apiVersion = "batch/v1";
  find(source, "PodDisruptionBudget", "web").apiVersion = "policy/v1";
  const hpa = find(source, "HorizontalPodAutoscaler", "web");
  hpa.apiVersion = "autoscaling/v2";
  hpa["spec"] = { scaleTargetRef: { apiVersion: "apps/v1", kind: "Deployment", name: "web" }, minReplicas: 2, maxReplicas: 6, metrics: [{ type: "Resource", resource: { name: "cpu", target: { type: "Utilization", averageUtilization: 70 } } }] };
  const discovery = await t.context.objects.discovery();
  const storageClasses = await t.context.objects.list(await t.context.objects.resourceFor("storage.k8s.io/v1", "StorageClass"), {});
  t.context.plan = buildPlan(
    shopInventory(source),
    { cluster: NAME, serverVersion: discovery.serverVersion, resources: discovery.resources, objects: storageClasses },
    planOptions({ targetNamespace: NS, storageClasses: new Map([["local-path", "local-path-immediate"]]) }),
  );
});

test.after.always(async (t) => {
  await downCluster(NAME).catch(() => undefined);
  if (t.context.home !== undefined) await rm(t.context.home, { recursive: true, force: true });
});

async function read(objects: KubeObjects, object: KubeObject): Promise<KubeObject> {
  const found = await objects.get({ ...refOf(object), namespace: object.metadata.namespace ?? "" });
  if (found === undefined) throw new Error(`${object.kind}/${object.metadata.name ?? ""} is not on the server`);
  return found;
}

function spec(object: KubeObject): Record<string, unknown> {
  return object["spec"] as Record<string, unknown>;
}

test.serial("the plan converts what 1.20 does not serve and finds nothing wrong", (t) => {
  const { plan } = t.context;
  t.deepEqual(plan.problems.map((p) => p.message), []);
  const version = (kind: string): string | undefined => plan.objects.find((o) => o.source.kind === kind)?.object?.apiVersion;
  t.is(version("CronJob"), "batch/v1beta1");
  t.is(version("PodDisruptionBudget"), "policy/v1beta1");
  t.is(version("HorizontalPodAutoscaler"), "autoscaling/v2beta2");
});

test.serial("the API server accepts every planned object in its staged form, in applyOrder", async (t) => {
  const { objects, plan } = t.context;
  const staged = planObjectsToStage(plan);
  t.true(staged.length > 20);
  for (const object of staged) {
    const form = stagedForm(object, ID, "created");
    await t.notThrowsAsync(objects.create(form), `${object.apiVersion} ${object.kind}/${object.metadata.name ?? ""}`);
    if (object.kind === "CustomResourceDefinition") {
      // A CRD's kind is served once it is Established, as the agent's Stage waits for too.
      await eventually(`${object.metadata.name ?? ""} established`, async () => {
        const crd = await read(objects, object);
        const conditions = (crd["status"] as { conditions?: { type: string; status: string }[] } | undefined)?.conditions ?? [];
        return conditions.some((c) => c.type === "Established" && c.status === "True") ? true : undefined;
      });
      await objects.discovery(undefined, true);
    }
  }
  const web = await read(objects, find(staged, "Deployment", "web"));
  t.is(spec(web)["replicas"], 0);
  t.is(spec(await read(objects, find(staged, "CronJob", "backup")))["suspend"], true);
  const service = await read(objects, find(staged, "Service", "web-nodeport"));
  t.not((spec(service)["ports"] as { nodePort: number }[])[0]?.nodePort, undefined, "the target allocated its own nodePort");
});

test.serial("activation patches bring the staged workloads to their remembered values on the server", async (t) => {
  const { objects, plan } = t.context;
  const staged = planObjectsToStage(plan);
  for (const object of staged) {
    const current = await read(objects, object);
    const patch = activationPatch(current, ID);
    if (patch !== undefined) await objects.mergePatch(refOf(current), patch);
  }
  t.is(spec(await read(objects, find(staged, "Deployment", "web")))["replicas"], 3);
  t.is(spec(await read(objects, find(staged, "StatefulSet", "db")))["replicas"], 1);
  t.is(spec(await read(objects, find(staged, "DeploymentConfig", "legacy")))["replicas"], 2);
  t.is(spec(await read(objects, find(staged, "CronJob", "backup")))["suspend"], false);
  for (const object of staged) t.is(activationPatch(await read(objects, object), ID), undefined, `${object.kind}/${object.metadata.name ?? ""} again`);
});

test.serial("quiesce and unquiesce round-trip on the server, per kind", async (t) => {
  const { objects, plan } = t.context;
  const staged = planObjectsToStage(plan);
  for (const [kind, name] of [["Deployment", "web"], ["StatefulSet", "db"], ["DeploymentConfig", "legacy"], ["CronJob", "backup"]] as const) {
    const before = await read(objects, find(staged, kind, name));
    const patch = quiescePatch(before, "m-q");
    if (patch === undefined) return t.fail(`${kind}/${name}: nothing to quiesce`);
    const quiesced = await objects.mergePatch(refOf(before), patch);
    t.truthy(quiesced.metadata.annotations?.[ANNOTATION_QUIESCED]);
    t.is(quiescePatch(quiesced, "m-q"), undefined);
    const restore = unquiescePatch(quiesced, "m-q");
    if (restore === undefined) return t.fail(`${kind}/${name}: nothing to restore`);
    const after = await objects.mergePatch(refOf(before), restore);
    t.deepEqual(after["spec"], before["spec"], `${kind}/${name}`);
    t.deepEqual(after.metadata.annotations, before.metadata.annotations);
  }
});
