// The plan's flags, validated once into app-model's PlanOptions: defaults, repeatable mappings, and errors that name
// the flag and show an example (table-driven, no I/O but the rules file).
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import test from "ava";
import { TheseusError } from "../common/index.js";
import { resolvePlanInput } from "../coordinator/plan/index.js";
import type { PlanInput } from "../coordinator/plan/index.js";

test("defaults: same namespace, no mappings, fail on conflict, the whole namespace", async (t) => {
  const { app, options } = await resolvePlanInput({ namespace: "shop" });
  t.deepEqual(app, { namespace: "shop", labelSelector: "", helmRelease: "" });
  t.is(options.sourceNamespace, "shop");
  t.is(options.targetNamespace, "shop");
  t.is(options.storageClasses.size, 0);
  t.is(options.onConflict, "fail");
  t.false(options.rewriteServiceDns);
  t.false(options.keepNodePorts);
  t.deepEqual(options.rules, []);
  t.false("migrationId" in options);
  t.is((await resolvePlanInput({ namespace: "shop", migrationId: "shop-1" })).options.migrationId, "shop-1");
});

test("mappings and overrides land in their maps", async (t) => {
  const { app, options } = await resolvePlanInput({
    namespace: "shop",
    toNamespace: "shop-us",
    storageClass: ["local-path=local-path-immediate", "gp2=premium-rwo"],
    imageRegistry: ["quay.io/shop=registry.us.example/shop"],
    replicas: ["Deployment/web=3", "StatefulSet/db=0"],
    routeHost: ["apps.eu.example.com=apps.us.example.com"],
    selector: "app=shop,tier!=cache",
    rewriteServiceDns: true,
    keepNodePorts: true,
    onConflict: "adopt",
  });
  t.is(app.labelSelector, "app=shop,tier!=cache");
  t.is(options.targetNamespace, "shop-us");
  t.deepEqual([...options.storageClasses], [["local-path", "local-path-immediate"], ["gp2", "premium-rwo"]]);
  t.deepEqual([...options.imageRegistries], [["quay.io/shop", "registry.us.example/shop"]]);
  t.deepEqual([...options.replicas], [["Deployment/web", 3], ["StatefulSet/db", 0]]);
  t.deepEqual([...options.routeHosts], [["apps.eu.example.com", "apps.us.example.com"]]);
  t.true(options.rewriteServiceDns);
  t.true(options.keepNodePorts);
  t.is(options.onConflict, "adopt");
});

const refused: { input: PlanInput; message: RegExp }[] = [
  { input: {}, message: /-n\/--namespace is required/ },
  { input: { namespace: "Shop" }, message: /-n\/--namespace "Shop" is not a namespace name/ },
  { input: { namespace: "shop", toNamespace: "shop_us" }, message: /--to-namespace "shop_us"/ },
  { input: { namespace: "shop", storageClass: ["fast"] }, message: /--storage-class: "fast" is not SRC=DST/ },
  { input: { namespace: "shop", storageClass: ["a=b", "a=c"] }, message: /--storage-class maps a twice/ },
  { input: { namespace: "shop", storageClass: ["a=B_C"] }, message: /"B_C" is not a StorageClass name/ },
  { input: { namespace: "shop", replicas: ["web=2"] }, message: /--replicas: "web" is not KIND\/NAME/ },
  { input: { namespace: "shop", replicas: ["Deployment/web=two"] }, message: /"two" is not a whole number/ },
  { input: { namespace: "shop", imageRegistry: ["=x"] }, message: /--image-registry: "=x" is not OLD=NEW/ },
  { input: { namespace: "shop", routeHost: ["a.example=not a host"] }, message: /--route-host: "not a host" is not a host name suffix/ },
  { input: { namespace: "shop", selector: "app=x", helmRelease: "shop" }, message: /give one of them/ },
  { input: { namespace: "shop", selector: "a in (" }, message: /a in \(/ },
  { input: { namespace: "shop", onConflict: "replace" }, message: /--on-conflict must be fail or adopt/ },
  { input: { namespace: "shop", migrationId: "not an id" }, message: /--migration-id "not an id" is not a valid id/ },
  { input: { namespace: "shop", rules: "/nonexistent/rules.yaml" }, message: /cannot read the rules file \/nonexistent\/rules\.yaml/ },
];

for (const { input, message } of refused) {
  test(`refused: ${JSON.stringify(input)}`, async (t) => {
    const error = await t.throwsAsync(resolvePlanInput(input), { instanceOf: TheseusError, message });
    t.is(error?.code, "invalid_argument");
    t.truthy(error?.hint, "says what to do");
  });
}

test("a rules file with a mistake is refused with its line", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "theseus-rules-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, "rules.yaml");
  await writeFile(path, "version: v1\nresourceModifierRules:\n  - conditions:\n      groupResource: deployments.apps\n    patches:\n      - operation: explode\n        path: /spec/replicas\n");
  const error = await t.throwsAsync(resolvePlanInput({ namespace: "shop", rules: path }), { instanceOf: TheseusError });
  t.regex(error?.message ?? "", new RegExp(`${path.replaceAll(".", "\\.")}:\\d+`));
});
