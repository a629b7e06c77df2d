// The plan as text: rewrites shown as a diff, stripped fields summed up per object, runs of skipped objects summed up,
// volumes with classes and sizes, and each problem with its fix. A plain Plan value in, text out (no I/O).
import test from "ava";
import type { Plan, PlanObject } from "../app-model/index.js";
import { formatPlan } from "../coordinator/cli/plan-text.js";

const ref = (kind: string, name: string, namespace = "shop", apiVersion = "v1") => ({ apiVersion, kind, namespace, name });

function skipped(kind: string, name: string, reason: string): PlanObject {
  return { source: ref(kind, name), target: ref(kind, name, "shop-us"), action: "skip", reason, changes: [] };
}

const plan: Plan = {
  source: { cluster: "eu", namespace: "shop" },
  target: { cluster: "us", namespace: "shop-us" },
  objects: [
    {
      source: ref("PersistentVolumeClaim", "data"),
      target: ref("PersistentVolumeClaim", "data", "shop-us"),
      action: "create",
      changes: [
        { path: "/metadata/namespace", op: "replace", before: "shop", after: "shop-us", why: "namespace" },
        { path: "/spec/storageClassName", op: "replace", before: "local-path", after: "fast", why: "storage-class" },
        { path: "/metadata/uid", op: "remove", before: "u-1", why: "sanitise" },
        { path: "/metadata/annotations/pv.kubernetes.io~1bind-completed", op: "remove", before: "yes", why: "sanitise" },
      ],
    },
    {
      source: ref("CronJob", "report", "shop", "batch/v1"),
      target: ref("CronJob", "report", "shop-us", "batch/v1beta1"),
      action: "create",
      changes: [],
    },
    ...["a", "b", "c", "d", "e"].map((n) => skipped("Event", n, "events are the source cluster's history")),
    skipped("Pod", "web-1", "made on the target by its owner ReplicaSet/web"),
    { source: ref("Service", "web"), target: ref("Service", "web", "shop-us"), action: "conflict", reason: "Service/web in shop-us exists on us", changes: [] },
  ],
  volumes: [
    { claim: "data", namespace: "shop", targetNamespace: "shop-us", storageClass: "local-path", targetStorageClass: "fast", requestedBytes: 1 << 30, targetRequestedBytes: 1 << 30, capacityBytes: 1 << 30, usedBytes: 5 << 20, volume: "shop/data", access: "direct" },
  ],
  problems: [
    { severity: "error", check: "conflict", object: ref("Service", "web", "shop-us"), message: "Service/web in shop-us exists on us", hint: "pass --on-conflict adopt, or delete it on the target" },
    { severity: "warning", check: "quota", message: "requests scaled down to fit the quota" },
  ],
};

test("text: rewrites as a diff, source-bound fields summed up, the namespace move said once", (t) => {
  const text = formatPlan(plan);
  t.regex(text, /^Plan: eu\/shop -> us\/shop-us\n/);
  t.regex(text, /create +PersistentVolumeClaim shop-us\/data \[v1\]\n +.*storageClassName.*local-path.*fast/);
  t.notRegex(text, /metadata\/namespace/);
  t.regex(text, /sanitised 2 source-bound fields: uid, pv\.kubernetes\.io\/bind-completed\)/);
  t.regex(text, /CronJob shop-us\/report \[batch\/v1beta1\] \(converted from batch\/v1\)/);
});

test("text: what stays, with why, runs of one kind and reason in one line; conflicts, volumes and problems with fixes", (t) => {
  const text = formatPlan(plan);
  t.regex(text, /Stays on the source \(6\):/);
  t.regex(text, /skip +5 Event objects \(a, b, \.\.\.\) \[v1\]: events are the source cluster's history/);
  t.regex(text, /skip +Pod shop\/web-1 \[v1\]: made on the target by its owner ReplicaSet\/web/);
  t.regex(text, /conflict Service shop-us\/web \[v1\]: Service\/web in shop-us exists on us/);
  t.regex(text, /shop\/data -> shop-us\/data: class local-path -> fast, request 1\.00 GiB, capacity 1\.00 GiB, used 5\.00 MiB, direct access/);
  t.regex(text, /Problems: 1 error, 1 warning/);
  t.regex(text, /error +\[conflict\] Service shop-us\/web: .*\n +fix: pass --on-conflict adopt/);
  t.regex(text, /theseus stage refuses a plan with errors/);
});
