// An exported claim must request at least what its files use: local-path and hostPath volumes do not enforce requests,
// so a claim can hold more than it asks for, and a chart that kept the request could not hold its own data on a class
// that enforces it (found exporting 528 MiB from a 64Mi local-path claim: the export was refused with a hint about a
// rules file that export does not take).
import test from "ava";
import type { ClaimInfo, Inventory, KubeObject } from "../app-model/index.js";
import { fitClaimRequests } from "../coordinator/export/index.js";

const MiB = 2 ** 20;

function claim(name: string, requestedBytes: number, usedBytes: number): ClaimInfo {
  return { namespace: "shop", name, storageClass: "local-path", requestedBytes, capacityBytes: requestedBytes, usedBytes, volumeName: `pv-${name}`, accessModes: ["ReadWriteOnce"], access: "direct", reason: "", volume: `shop/${name}` };
}
function pvc(name: string, storage: string): KubeObject {
  return { apiVersion: "v1", kind: "PersistentVolumeClaim", metadata: { namespace: "shop", name }, spec: { accessModes: ["ReadWriteOnce"], resources: { requests: { storage } } } };
}
const inventory = (claims: ClaimInfo[], objects: KubeObject[]): Inventory => ({ cluster: "eu", serverVersion: "v1.20.2", objects, claims, resources: [], warnings: [] });

test("an overfull claim is exported requesting what its files use plus a tenth, and the export says so", (t) => {
  const source = inventory([claim("web-data", 64 * MiB, 528 * MiB), claim("db", 1024 * MiB, 16 * MiB)], [pvc("web-data", "64Mi"), pvc("db", "1Gi")]);
  const { inventory: fitted, warnings } = fitClaimRequests(source);
  const requestOf = (name: string): unknown => (fitted.objects.find((o) => o.metadata.name === name)?.["spec"] as { resources: { requests: { storage: unknown } } }).resources.requests.storage;
  t.is(requestOf("web-data"), "581Mi");
  t.is(fitted.claims.find((c) => c.name === "web-data")?.requestedBytes, 581 * MiB);
  t.is(requestOf("db"), "1Gi", "a claim that holds its data keeps its request");
  t.is(warnings.length, 1);
  t.regex(warnings[0] ?? "", /web-data requests 64\.0 MiB but its files use 528\.0 MiB.*the chart requests 581Mi/);
  t.is((source.objects[0]?.["spec"] as { resources: { requests: { storage: unknown } } }).resources.requests.storage, "64Mi", "the discovered objects are not changed");
});

test("nothing overfull: the inventory is returned as it is", (t) => {
  const source = inventory([claim("db", 1024 * MiB, 16 * MiB)], [pvc("db", "1Gi")]);
  const fitted = fitClaimRequests(source);
  t.is(fitted.inventory, source);
  t.deepEqual(fitted.warnings, []);
});
