// Staging, activation, quiesce and unquiesce per kind, as round trips through JSON merge patches the way the API
// server applies them: what is remembered is the original value, and unquiesce restores only what quiesce changed.
import test from "ava";
import * as mergePatch from "json-merge-patch";
import {
  ANNOTATION_ACTIVATE,
  ANNOTATION_QUIESCED,
  ANNOTATION_STAGED,
  LABEL_MIGRATION,
  activationPatch,
  podMountsClaim,
  quiescePatch,
  stagedForm,
  unquiescePatch,
  workloadReadiness,
} from "../app-model/index.js";
import type { KubeObject, MergePatch } from "../app-model/index.js";
import { find, meta, owner, shopObjects } from "./fixtures/app-model-shop.js";

const shop = shopObjects();
const ID = "m-7f3a";

/** Applies a merge patch as the API server does, and drops the maps it leaves empty (the server stores none). */
function apply(object: KubeObject, patch: MergePatch | undefined): KubeObject {
  if (patch === undefined) return object;
  const result = mergePatch.apply(structuredClone(object), structuredClone(patch)) as KubeObject;
  for (const key of ["annotations", "labels"] as const) {
    if (result.metadata[key] !== undefined && Object.keys(result.metadata[key]).length === 0) delete result.metadata[key];
  }
  return result;
}

function spec(object: KubeObject): Record<string, unknown> {
  return object["spec"] as Record<string, unknown>;
}

const daemonSet = (nodeSelector?: Record<string, string>): KubeObject => ({
  apiVersion: "apps/v1",
  kind: "DaemonSet",
  metadata: meta("agent", "shop", { generation: 1 }),
  spec: { selector: { matchLabels: { app: "agent" } }, template: { metadata: { labels: { app: "agent" } }, spec: { ...(nodeSelector !== undefined && { nodeSelector }), containers: [{ name: "a", image: "a" }] } } },
  status: { desiredNumberScheduled: 2, numberAvailable: 2, updatedNumberScheduled: 2, observedGeneration: 1 },
});

const job = (parallelism: number): KubeObject => ({
  apiVersion: "batch/v1",
  kind: "Job",
  metadata: meta("reindex", "shop"),
  spec: { parallelism, completions: 1, backoffLimit: 6, template: { spec: { containers: [] } } },
  status: { active: 1 },
});

const unownedRs: KubeObject = { ...structuredClone(find(shop, "ReplicaSet", "web-5d8f7c9b4d")), metadata: meta("standalone", "shop") };

const writers: { title: string; object: KubeObject; atRest: (o: KubeObject) => boolean; original: unknown }[] = [
  { title: "Deployment to 0 replicas", object: find(shop, "Deployment", "web"), atRest: (o) => spec(o)["replicas"] === 0, original: { replicas: 3 } },
  { title: "StatefulSet to 0 replicas", object: find(shop, "StatefulSet", "db"), atRest: (o) => spec(o)["replicas"] === 0, original: { replicas: 1 } },
  { title: "DeploymentConfig to 0 replicas", object: find(shop, "DeploymentConfig", "legacy"), atRest: (o) => spec(o)["replicas"] === 0, original: { replicas: 2 } },
  { title: "an unowned ReplicaSet to 0 replicas", object: unownedRs, atRest: (o) => spec(o)["replicas"] === 0, original: { replicas: 3 } },
  { title: "CronJob suspended", object: find(shop, "CronJob", "backup"), atRest: (o) => spec(o)["suspend"] === true, original: { suspend: false } },
  { title: "Job to parallelism 0", object: job(2), atRest: (o) => spec(o)["parallelism"] === 0, original: { parallelism: 2 } },
  {
    title: "DaemonSet parked, its own node selector kept",
    object: daemonSet({ disk: "ssd" }),
    atRest: (o) => JSON.stringify((spec(o)["template"] as { spec: { nodeSelector: unknown } }).spec.nodeSelector) === '{"disk":"ssd","theseus.io/parked":"true"}',
    original: { nodeSelector: { disk: "ssd" } },
  },
  {
    title: "DaemonSet without a node selector parked",
    object: daemonSet(),
    atRest: (o) => JSON.stringify((spec(o)["template"] as { spec: { nodeSelector: unknown } }).spec.nodeSelector) === '{"theseus.io/parked":"true"}',
    original: { nodeSelector: null },
  },
];

for (const row of writers) {
  test(`quiesce and unquiesce round-trip: ${row.title}`, (t) => {
    const patch = quiescePatch(row.object, ID);
    t.truthy(patch);
    const quiesced = apply(row.object, patch);
    t.true(row.atRest(quiesced));
    t.deepEqual(JSON.parse(quiesced.metadata.annotations?.[ANNOTATION_QUIESCED] ?? "{}"), { migration: ID, original: row.original });
    t.is(quiescePatch(quiesced, ID), undefined, "quiesce again: nothing to do");
    t.is(unquiescePatch(quiesced, "m-other"), undefined, "another migration restores nothing");
    const restored = apply(quiesced, unquiescePatch(quiesced, ID));
    t.deepEqual(restored, row.object, "exactly as it was");
    t.is(unquiescePatch(restored, ID), undefined, "unquiesce again: nothing to do");
  });
}

test("a CronJob the user had suspended is not touched, and stays suspended after unquiesce", (t) => {
  const suspended = structuredClone(find(shop, "CronJob", "backup"));
  spec(suspended)["suspend"] = true;
  t.is(quiescePatch(suspended, ID), undefined);
  t.is(unquiescePatch(suspended, ID), undefined);
});

const atRest: [string, KubeObject][] = [
  ["a Deployment at 0 replicas", { ...structuredClone(find(shop, "Deployment", "web")), spec: { ...spec(find(shop, "Deployment", "web")), replicas: 0 } }],
  ["a ReplicaSet its Deployment controls (the Deployment is scaled)", find(shop, "ReplicaSet", "web-5d8f7c9b4d")],
  ["a ReplicationController its DeploymentConfig controls", find(shop, "ReplicationController", "legacy-1")],
  ["a finished Job", find(shop, "Job", "backup-1606727400")],
  ["a Service (not a writer)", find(shop, "Service", "web")],
  ["a Pod (its controller is quiesced)", find(shop, "Pod", "db-0")],
];

for (const [title, object] of atRest) {
  test(`quiesce leaves alone ${title}`, (t) => {
    t.is(quiescePatch(object, ID), undefined);
  });
}

test("unquiesce leaves alone a ReplicaSet that carries its Deployment's copied quiesce record", (t) => {
  const rs = find(shop, "ReplicaSet", "web-5d8f7c9b4d");
  const record = JSON.stringify({ migration: ID, original: { replicas: 3 } });
  const copied: KubeObject = { ...structuredClone(rs), metadata: { ...structuredClone(rs.metadata), annotations: { ...rs.metadata.annotations, [ANNOTATION_QUIESCED]: record } } };
  t.is(unquiescePatch(copied, ID), undefined);
});

test("unquiesce after someone scaled it by hand keeps their value and drops only the record", (t) => {
  const web = find(shop, "Deployment", "web");
  const quiesced = apply(web, quiescePatch(web, ID));
  spec(quiesced)["replicas"] = 5;
  const patch = unquiescePatch(quiesced, ID);
  t.deepEqual(patch, { metadata: { annotations: { [ANNOTATION_QUIESCED]: null } } });
  t.is(spec(apply(quiesced, patch))["replicas"], 5);
});

const staged: { title: string; object: KubeObject; atRest: (o: KubeObject) => boolean; remembered?: unknown }[] = [
  { title: "a Deployment at 0 replicas", object: find(shop, "Deployment", "web"), atRest: (o) => spec(o)["replicas"] === 0, remembered: { replicas: 3 } },
  { title: "a StatefulSet at 0 replicas", object: find(shop, "StatefulSet", "db"), atRest: (o) => spec(o)["replicas"] === 0, remembered: { replicas: 1 } },
  { title: "a DeploymentConfig at 0 replicas", object: find(shop, "DeploymentConfig", "legacy"), atRest: (o) => spec(o)["replicas"] === 0, remembered: { replicas: 2 } },
  { title: "a CronJob suspended", object: find(shop, "CronJob", "backup"), atRest: (o) => spec(o)["suspend"] === true, remembered: { suspend: false } },
  { title: "a Job at parallelism 0", object: job(2), atRest: (o) => spec(o)["parallelism"] === 0, remembered: { parallelism: 2 } },
  {
    title: "a DaemonSet parked",
    object: daemonSet({ disk: "ssd" }),
    atRest: (o) => (spec(o)["template"] as { spec: { nodeSelector: Record<string, string> } }).spec.nodeSelector["theseus.io/parked"] === "true",
    remembered: { nodeSelector: { disk: "ssd" } },
  },
  { title: "a ConfigMap (nothing to hold back)", object: find(shop, "ConfigMap", "shop-config"), atRest: () => true },
];

for (const row of staged) {
  test(`staging and activation round-trip: ${row.title}`, (t) => {
    const form = stagedForm(row.object, ID, "created");
    t.is(form.metadata.labels?.[LABEL_MIGRATION], ID);
    t.is(form.metadata.annotations?.[ANNOTATION_STAGED], "created");
    t.true(row.atRest(form));
    const remembered = form.metadata.annotations?.[ANNOTATION_ACTIVATE];
    t.deepEqual(remembered === undefined ? undefined : JSON.parse(remembered), row.remembered);
    t.is(activationPatch(form, "m-other"), undefined, "another migration's activation does nothing");
    const active = apply(form, activationPatch(form, ID));
    const expected = structuredClone(row.object);
    expected.metadata.labels = { ...expected.metadata.labels, [LABEL_MIGRATION]: ID };
    expected.metadata.annotations = { ...expected.metadata.annotations, [ANNOTATION_STAGED]: "created" };
    t.deepEqual(active, expected, "up with the remembered values, still labelled as staged");
    t.is(activationPatch(active, ID), undefined, "activating again: nothing to do");
  });
}

test("a CronJob suspended on the source is staged suspended and stays so after activation", (t) => {
  const suspended = structuredClone(find(shop, "CronJob", "backup"));
  spec(suspended)["suspend"] = true;
  const form = stagedForm(suspended, ID, "created");
  t.is(form.metadata.annotations?.[ANNOTATION_ACTIVATE], undefined);
  t.is(activationPatch(form, ID), undefined);
  t.is(spec(form)["suspend"], true);
});

test("an adopted object gets only the label and the annotation, and activation leaves it alone", (t) => {
  const web = find(shop, "Deployment", "web");
  const form = stagedForm(web, ID, "adopted");
  const expected = structuredClone(web);
  expected.metadata.labels = { ...expected.metadata.labels, [LABEL_MIGRATION]: ID };
  expected.metadata.annotations = { ...expected.metadata.annotations, [ANNOTATION_STAGED]: "adopted" };
  t.deepEqual(form, expected);
  t.is(activationPatch(form, ID), undefined);
});

const readiness: [string, KubeObject, { ready: boolean; detail: RegExp } | undefined][] = [
  ["a Deployment with every replica available", find(shop, "Deployment", "web"), { ready: true, detail: /3\/3 available/ }],
  ["a Deployment still rolling out", { ...find(shop, "Deployment", "web"), status: { observedGeneration: 4, updatedReplicas: 3, availableReplicas: 1 } }, { ready: false, detail: /1\/3 available/ }],
  ["a Deployment whose status is older than its spec", { ...find(shop, "Deployment", "web"), status: { observedGeneration: 3, updatedReplicas: 3, availableReplicas: 3 } }, { ready: false, detail: /not yet observed/ }],
  ["a StatefulSet with its replica ready", find(shop, "StatefulSet", "db"), { ready: true, detail: /1\/1 ready/ }],
  ["a DeploymentConfig", find(shop, "DeploymentConfig", "legacy"), { ready: true, detail: /2\/2 available/ }],
  ["a DaemonSet", daemonSet(), { ready: true, detail: /2\/2 available/ }],
  ["a ReplicationController not ready", find(shop, "ReplicationController", "legacy-1"), { ready: false, detail: /0\/2 ready/ }],
  ["a ConfigMap (no readiness)", find(shop, "ConfigMap", "shop-config"), undefined],
];

for (const [title, object, expected] of readiness) {
  test(`readiness: ${title}`, (t) => {
    const verdict = workloadReadiness(object);
    if (expected === undefined) {
      t.is(verdict, undefined);
      return;
    }
    t.is(verdict?.ready, expected.ready);
    t.regex(verdict?.detail ?? "", expected.detail);
  });
}

test("podMountsClaim: persistentVolumeClaim volumes and generic ephemeral volumes", (t) => {
  const claims = new Set(["data-db-0", "worker-0-scratch"]);
  t.true(podMountsClaim(find(shop, "Pod", "db-0"), claims));
  t.false(podMountsClaim(find(shop, "Pod", "web-5d8f7c9b4d-x7k2p"), claims));
  const ephemeral: KubeObject = { apiVersion: "v1", kind: "Pod", metadata: { ...meta("worker-0", "shop"), ownerReferences: [owner(find(shop, "StatefulSet", "db"))] }, spec: { containers: [], volumes: [{ name: "scratch", ephemeral: { volumeClaimTemplate: { spec: {} } } }] } };
  t.true(podMountsClaim(ephemeral, claims));
  t.false(podMountsClaim({ apiVersion: "v1", kind: "Pod", metadata: { name: "bare" } }, claims));
});
