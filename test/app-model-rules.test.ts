// User rules: the rules file (Velero's resource modifiers), its errors with the line of the offending node, and how
// matching rules patch the planned objects (conditions on the original object, patches applied in order).
import test from "ava";
import { TheseusError } from "../common/index.js";
import { RULES_SCHEMA, buildPlan, matchesSelector, parseLabelSelector, parseRules } from "../app-model/index.js";
import type { KubeObject, Plan } from "../app-model/index.js";
import { freshTarget, planOptions, shopInventory } from "./fixtures/app-model-shop.js";

const GOOD = `# Theseus rules for shop
version: v1
resourceModifierRules:
  - conditions:
      groupResource: deployments.apps
      resourceNameRegex: "^web$"
      namespaces: [shop]
    patches:
      - operation: replace
        path: /spec/template/spec/containers/0/resources/limits/memory
        value: 1Gi
      - operation: add
        path: /metadata/labels/moved
        value: "true"
  - conditions:
      groupResource: "*"
      labelSelector:
        matchLabels: { moved: "true" }
    mergePatches:
      - patchData: { metadata: { labels: { second: "matched" } } }
  - conditions:
      groupResource: configmaps
      matches:
        - path: /data/CACHE
          value: web.shop
    mergePatches:
      - patchData: |
          {"data": {"CACHE": null, "TTL": "60"}}
  - conditions:
      groupResource: persistentvolumeclaims
      labelSelector: "tier in (db)"
    mergePatches:
      - patchData:
          spec: { resources: { requests: { storage: 5Gi } } }
`;

test("a valid file: one Rule per entry, each named by its file and line, patches in Velero's order", (t) => {
  const rules = parseRules(GOOD, "rules.yaml");
  t.deepEqual(rules.map((r) => r.source), ["rules.yaml:4", "rules.yaml:15", "rules.yaml:21", "rules.yaml:29"]);
  t.deepEqual(rules[0]?.conditions, { groupResource: "deployments.apps", resourceNameRegex: "^web$", namespaces: ["shop"] });
  t.deepEqual(rules[0]?.patches, [
    {
      type: "json",
      operations: [
        { op: "replace", path: "/spec/template/spec/containers/0/resources/limits/memory", value: "1Gi" },
        { op: "add", path: "/metadata/labels/moved", value: "true" },
      ],
    },
  ]);
  t.is(rules[1]?.conditions.labelSelector, "moved=true");
  t.deepEqual(rules[2]?.patches, [{ type: "merge", patch: { data: { CACHE: null, TTL: "60" } } }]);
});

const mistakes: { title: string; text: string; line: number; says: RegExp }[] = [
  {
    title: "an unknown field names its own line",
    text: "version: v1\nresourceModifierRules:\n  - conditions:\n      groupResource: pods\n      nameRegex: x\n    mergePatches:\n      - patchData: {}\n",
    line: 5,
    says: /unknown field "nameRegex"/,
  },
  {
    title: "an operation that is not one",
    text: "version: v1\nresourceModifierRules:\n  - conditions:\n      groupResource: pods\n    patches:\n      - operation: replce\n        path: /spec\n        value: 1\n",
    line: 6,
    says: /operation: must be one of add, remove, replace/,
  },
  {
    title: "a replace without a value",
    text: "version: v1\nresourceModifierRules:\n  - conditions:\n      groupResource: pods\n    patches:\n      - operation: add\n        path: /a\n      - operation: replace\n        path: /spec/replicas\n",
    line: 8,
    says: /"replace" operation needs a value/,
  },
  {
    title: "a path that is not a JSON pointer",
    text: "version: v1\nresourceModifierRules:\n  - conditions:\n      groupResource: pods\n    patches:\n      - operation: remove\n        path: spec.replicas\n",
    line: 7,
    says: /path: must match pattern/,
  },
  {
    title: "a regular expression that does not compile",
    text: "version: v1\nresourceModifierRules:\n  - conditions:\n      groupResource: pods\n      resourceNameRegex: \"web(\"\n    mergePatches:\n      - patchData: {a: 1}\n",
    line: 5,
    says: /resourceNameRegex is not a regular expression/,
  },
  {
    title: "a label selector that does not parse",
    text: "version: v1\nresourceModifierRules:\n  - conditions:\n      groupResource: pods\n      labelSelector: \"tier in db\"\n    mergePatches:\n      - patchData: {a: 1}\n",
    line: 5,
    says: /label selector "tier in db" is invalid/,
  },
  {
    title: "a rule that would change nothing",
    text: "version: v1\nresourceModifierRules:\n  - conditions:\n      groupResource: pods\n  - conditions:\n      groupResource: services\n    patches: []\n",
    line: 5,
    says: /no patches and no mergePatches/,
  },
  {
    title: "a patchData string that holds no mapping",
    text: "version: v1\nresourceModifierRules:\n  - conditions:\n      groupResource: pods\n    mergePatches:\n      - patchData: \"[1, 2\"\n",
    line: 6,
    says: /patchData must be a mapping/,
  },
  { title: "the wrong version", text: "version: v2\nresourceModifierRules: []\n", line: 1, says: /version: must be equal to constant/ },
  { title: "YAML that does not parse", text: "version: v1\nresourceModifierRules:\n  - conditions: {groupResource: pods\n", line: 4, says: /./ },
  { title: "a missing required field names its map", text: "version: v1\nresourceModifierRules:\n  - patches: []\n", line: 3, says: /must have required property 'conditions'/ },
];

for (const mistake of mistakes) {
  test(`a rules file with a mistake: ${mistake.title}`, (t) => {
    const error = t.throws(() => parseRules(mistake.text, "rules.yaml"), { instanceOf: TheseusError });
    t.is(error?.code, "invalid_argument");
    t.regex(error?.message ?? "", new RegExp(`^rules\\.yaml:${mistake.line}: `, "m"), error?.message);
    t.regex(error?.message ?? "", mistake.says);
    t.regex(error?.hint ?? "", /app-model\/rules\.ts/);
  });
}

test("the schema is exported for editors and --help", (t) => {
  t.is(RULES_SCHEMA.properties.version.const, "v1");
  t.deepEqual(RULES_SCHEMA.required, ["version", "resourceModifierRules"]);
});

function object(plan: Plan, kind: string, name: string): KubeObject {
  const found = plan.objects.find((o) => o.source.kind === kind && o.source.name === name)?.object;
  if (found === undefined) throw new Error(`${kind}/${name} does not move`);
  return found;
}

test("rules patch the planned objects in order, each change named by its rule", (t) => {
  const plan = buildPlan(shopInventory(), freshTarget(), planOptions({ rules: parseRules(GOOD, "rules.yaml") }));
  t.deepEqual(plan.problems, []);
  const web = plan.objects.find((o) => o.source.kind === "Deployment" && o.source.name === "web");
  const container = (web?.object?.["spec"] as { template: { spec: { containers: { resources: { limits: Record<string, string> } }[] } } }).template.spec.containers[0];
  t.is(container?.resources.limits["memory"], "1Gi");
  t.is(web?.object?.metadata.labels?.["moved"], "true");
  t.deepEqual(
    web?.changes.filter((c) => c.why.startsWith("rules.yaml")).map((c) => [c.path, c.why]),
    [
      ["/metadata/labels/moved", "rules.yaml:4"],
      ["/spec/template/spec/containers/0/resources/limits/memory", "rules.yaml:4"],
    ],
  );
  // Conditions read the original object: the label the first rule added does not make the second one match.
  t.is(web?.object?.metadata.labels?.["second"], undefined);
  // namespaces: [shop] is the source namespace, though the object lands in shop2.
  t.is(web?.object?.metadata.namespace, "shop2");
  t.deepEqual(object(plan, "ConfigMap", "shop-config")["data"], { DATABASE_URL: "postgres://db.shop2.svc:5432/shop", PUBLIC_URL: "https://www.shop.example.com", TTL: "60" });
  t.is((object(plan, "PersistentVolumeClaim", "data-db-0")["spec"] as { resources: { requests: { storage: string } } }).resources.requests.storage, "5Gi");
  t.is((object(plan, "PersistentVolumeClaim", "web-data")["spec"] as { resources: { requests: { storage: string } } }).resources.requests.storage, "1Gi");
  t.is(plan.volumes.find((v) => v.claim === "data-db-0")?.targetRequestedBytes, 5 * 2 ** 30, "the volume's target request follows the rule");
});

test("a patch that cannot apply is an error naming the rule and the object; the object keeps the other rules' changes", (t) => {
  const rules = parseRules(
    "version: v1\nresourceModifierRules:\n  - conditions:\n      groupResource: services\n      resourceNameRegex: ^web$\n    patches:\n      - operation: replace\n        path: /spec/nothing/here\n        value: 1\n  - conditions:\n      groupResource: services\n    mergePatches:\n      - patchData: {metadata: {annotations: {checked: \"yes\"}}}\n",
    "r.yaml",
  );
  const plan = buildPlan(shopInventory(), freshTarget(), planOptions({ rules }));
  const problem = plan.problems.find((p) => p.check === "rules");
  t.like(problem, { severity: "error", object: { kind: "Service", name: "web" } });
  t.regex(problem?.message ?? "", /rule r\.yaml:3 cannot patch Service\/web in shop/);
  t.is(object(plan, "Service", "web").metadata.annotations?.["checked"], "yes");
  t.is(plan.problems.filter((p) => p.check === "rules").length, 1);
});

test("a groupResource glob matches the served resource names, core kinds without a group", (t) => {
  const rules = parseRules("version: v1\nresourceModifierRules:\n  - conditions:\n      groupResource: \"*.apps\"\n    mergePatches:\n      - patchData: {metadata: {labels: {apps: \"yes\"}}}\n", "g.yaml");
  const plan = buildPlan(shopInventory(), freshTarget(), planOptions({ rules }));
  const labelled = plan.objects.filter((o) => o.object?.metadata.labels?.["apps"] === "yes").map((o) => `${o.source.kind}/${o.source.name}`);
  t.deepEqual(labelled.sort(), ["Deployment/web", "StatefulSet/db"]);
});

const labels = { app: "shop", tier: "web", "app.kubernetes.io/part-of": "shop" };
const selectors: [selector: string, matches: boolean][] = [
  ["", true],
  ["app=shop", true],
  ["app==shop,tier=web", true],
  ["app=shop,tier=db", false],
  ["tier!=db", true],
  ["tier!=web", false],
  ["tier in (web, db)", true],
  ["tier notin (web,db)", false],
  ["app.kubernetes.io/part-of", true],
  ["!legacy", true],
  ["!app", false],
  ["missing!=x", true],
  ["app in (shop),!legacy,tier", true],
];

for (const [selector, matches] of selectors) {
  test(`label selector "${selector}" ${matches ? "matches" : "does not match"}`, (t) => {
    t.is(matchesSelector(labels, parseLabelSelector(selector)), matches);
  });
}

for (const bad of ["app=", "=shop", "a,,b", "tier in web", "tier in (web", "bad key!=x", "app=a b"]) {
  test(`label selector "${bad}" is refused with the syntax to use`, (t) => {
    if (bad === "app=") {
      // An empty value is a valid selector (the label must be present and empty), as in Kubernetes.
      t.false(matchesSelector(labels, parseLabelSelector(bad)));
      return;
    }
    const error = t.throws(() => parseLabelSelector(bad), { instanceOf: TheseusError });
    t.is(error?.code, "invalid_argument");
    t.regex(error?.hint ?? "", /app=shop,tier!=cache/);
  });
}
