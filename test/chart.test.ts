// The agent's Helm chart, judged by helm itself (lint, template with every values file in charts/theseus-agent/ci/)
// and by a real API server: every rendered manifest of every values file is sent to a local v1.20 cluster as a
// server-side dry run, so the API server's own validation and defaulting accept it. The assertions are the promises
// the chart makes to an operator: nothing cluster-wide in namespace mode, the restricted security context, TLS
// passthrough on the Route and the Ingress, the certificate's identity.
import { execFile } from "node:child_process";
import { readdirSync } from "node:fs";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import anyTest from "ava";
import type { TestFn } from "ava";
import { parseAllDocuments } from "yaml";
import type { KubeObject } from "../app-model/index.js";
import { createKubeObjects, createKubeRest, loadKubeConfig } from "../kube/index.js";
import type { KubeObjects, KubeRest } from "../kube/index.js";
import { downCluster, installOpenShiftKinds, repoRoot, upCluster } from "../local-clusters/index.js";
import { CHART_DIR, HELM_BINARY } from "./helpers/chart.js";
import { eventually, privateTheseusHome, withHint } from "./local-clusters-support.js";

const run = promisify(execFile);
const test = anyTest as TestFn<{ home: string; objects: KubeObjects; rest: KubeRest }>;
const CI_DIR = join(CHART_DIR, "ci");
const VALUES_FILES = readdirSync(CI_DIR).filter((f) => f.endsWith("-values.yaml")).sort();
const NAMESPACE = "theseus-system";
const CLUSTER = "chart-judge";

async function helm(...args: string[]): Promise<string> {
  const { stdout } = await run(HELM_BINARY, args, { cwd: repoRoot, maxBuffer: 16 << 20 });
  return stdout;
}

async function render(valuesFile: string | undefined, ...set: string[]): Promise<KubeObject[]> {
  const values = valuesFile === undefined ? [] : ["-f", join(CI_DIR, valuesFile)];
  const text = await helm("template", "agent", CHART_DIR, "-n", NAMESPACE, ...values, ...set.flatMap((s) => ["--set", s]));
  return parseAllDocuments(text)
    .map((d) => d.toJS() as KubeObject | null)
    .filter((o): o is KubeObject => o !== null);
}

const ofKind = (objects: readonly KubeObject[], kind: string): KubeObject[] => objects.filter((o) => o.kind === kind);
function one(objects: readonly KubeObject[], kind: string): KubeObject {
  const found = ofKind(objects, kind);
  if (found.length !== 1) throw new Error(`expected one ${kind}, rendered ${found.length}`);
  return found[0] as KubeObject;
}

interface PodSpecView {
  securityContext: Record<string, unknown>;
  serviceAccountName: string;
  volumes: { name: string; secret?: { secretName: string } }[];
  containers: {
    args: string[];
    env: { name: string; value?: string }[];
    securityContext: { capabilities: { drop?: string[]; add?: string[] } } & Record<string, unknown>;
    readinessProbe: { httpGet: { path: string; port: string } };
    livenessProbe: { httpGet: { path: string; port: string } };
    resources: Record<string, unknown>;
  }[];
}
function podSpec(objects: readonly KubeObject[]): PodSpecView {
  return (one(objects, "Deployment")["spec"] as { template: { spec: PodSpecView } }).template.spec;
}
function agentContainer(objects: readonly KubeObject[]): PodSpecView["containers"][number] {
  const container = podSpec(objects).containers[0];
  if (container === undefined) throw new Error("the Deployment has no container");
  return container;
}
interface Rule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
}
const rulesOf = (o: KubeObject): Rule[] => (o["rules"] as Rule[] | undefined) ?? [];

test.before(async (t) => {
  t.context.home = privateTheseusHome();
  try {
    const cluster = await upCluster(CLUSTER, { nodes: 1 });
    await installOpenShiftKinds(cluster.kubeconfigPath);
    t.context.rest = createKubeRest(loadKubeConfig(cluster.kubeconfigPath));
    t.context.objects = createKubeObjects(t.context.rest);
  } catch (error) {
    throw withHint(error);
  }
  const { objects } = t.context;
  // The namespaces a release and its namespace-mode Roles live in exist before an install (helm does not make them).
  for (const name of [NAMESPACE, "shop", "shop-staging"]) await objects.create({ apiVersion: "v1", kind: "Namespace", metadata: { name } });
  // cert-manager's Certificate kind, as far as the API server needs it to accept one (its real CRD is large).
  await objects.create({
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: { name: "certificates.cert-manager.io" },
    spec: {
      group: "cert-manager.io",
      scope: "Namespaced",
      names: { plural: "certificates", singular: "certificate", kind: "Certificate", listKind: "CertificateList" },
      versions: [{ name: "v1", served: true, storage: true, schema: { openAPIV3Schema: { type: "object", "x-kubernetes-preserve-unknown-fields": true } } }],
    },
  });
  await eventually("the Certificate kind served", async () => ((await objects.discovery(undefined, true)).resources.some((r) => r.kind === "Certificate") ? true : undefined));
});

test.after.always(async (t) => {
  await downCluster(CLUSTER).catch(() => undefined);
  if (t.context.home !== undefined) await rm(t.context.home, { recursive: true, force: true });
});

test("helm lint is clean with every values file, and a missing cluster name is refused by name", async (t) => {
  t.true(VALUES_FILES.length >= 6, `values files: ${VALUES_FILES.join(", ")}`);
  for (const file of VALUES_FILES) {
    const out = await helm("lint", CHART_DIR, "-f", join(CI_DIR, file), "--strict");
    t.regex(out, /1 chart\(s\) linted, 0 chart\(s\) failed/, file);
    t.notRegex(out, /\[(WARNING|ERROR)\]/, file);
  }
  const error = await t.throwsAsync(helm("template", "agent", CHART_DIR));
  t.regex(error?.message ?? "", /clusterName/);
});

test("values.schema.json refuses a wrong value before anything renders", async (t) => {
  const error = await t.throwsAsync(render("default-values.yaml", "service.type=External"));
  t.regex(error?.message ?? "", /service\.type must be one of the following: "ClusterIP", "NodePort", "LoadBalancer"/);
  const typo = await t.throwsAsync(render("default-values.yaml", "servce.type=NodePort"));
  t.regex(typo?.message ?? "", /Additional property servce is not allowed/);
});

test("default: restricted security context, probes on the health port, NODE_OPTIONS, TLS from the Secret", async (t) => {
  const objects = await render("default-values.yaml");
  const pod = podSpec(objects);
  t.is(pod.securityContext["runAsNonRoot"], true);
  t.deepEqual(pod.securityContext["seccompProfile"], { type: "RuntimeDefault" });
  t.is(pod.securityContext["runAsUser"], undefined, "OpenShift assigns the uid from the namespace's range");
  const agent = agentContainer(objects);
  t.is(agent.securityContext["allowPrivilegeEscalation"], false);
  t.is(agent.securityContext["readOnlyRootFilesystem"], true);
  t.is(agent.securityContext["runAsNonRoot"], true);
  t.deepEqual(agent.securityContext.capabilities, { drop: ["ALL"] });
  t.deepEqual(agent.readinessProbe.httpGet, { path: "/readyz", port: "health" });
  t.deepEqual(agent.livenessProbe.httpGet, { path: "/healthz", port: "health" });
  t.regex(agent.env.find((e) => e.name === "NODE_OPTIONS")?.value ?? "", /--max-semi-space-size=8\b/);
  t.true(agent.args.includes("--cluster=eu-1"));
  t.true(agent.args.includes("--health-listen=$(POD_IP):8080"));
  t.is(pod.volumes.find((v) => v.name === "tls")?.secret?.secretName, "agent-theseus-agent-tls");
  const service = ofKind(objects, "Service").find((s) => s.metadata.name === "agent-theseus-agent");
  t.is((service?.["spec"] as { type: string }).type, "ClusterIP");
  t.is(ofKind(objects, "NetworkPolicy").length, 1);
  t.is(ofKind(objects, "Route").length + ofKind(objects, "Ingress").length + ofKind(objects, "Certificate").length, 0);
});

test("RBAC: no wildcard anywhere, no bind or escalate unless asked, and every rendered rule says why", async (t) => {
  const objects = await render("default-values.yaml");
  const roles = [...ofKind(objects, "ClusterRole"), ...ofKind(objects, "Role")];
  t.is(ofKind(objects, "ClusterRole").length, 1);
  for (const role of roles) {
    for (const rule of rulesOf(role)) {
      t.false(rule.verbs.includes("*") || rule.resources.includes("*") || rule.apiGroups.includes("*"), JSON.stringify(rule));
      t.false(rule.verbs.includes("bind") || rule.verbs.includes("escalate"), JSON.stringify(rule));
    }
  }
  // The agent's own records: ConfigMaps, Secrets, Leases, in its namespace only.
  const state = ofKind(objects, "Role").find((r) => r.metadata.name === "agent-theseus-agent-state");
  t.is(state?.metadata.namespace, NAMESPACE);
  t.deepEqual(rulesOf(state as KubeObject).flatMap((r) => r.resources).sort(), ["configmaps", "leases", "secrets"]);
  // What the agent calls beyond the app kinds.
  const cluster = rulesOf(one(objects, "ClusterRole"));
  const allowed = (resource: string, verb: string): boolean => cluster.some((r) => r.resources.includes(resource) && r.verbs.includes(verb));
  for (const [resource, verb] of [["namespaces", "create"], ["persistentvolumes", "get"], ["storageclasses", "list"], ["customresourcedefinitions", "create"], ["pods", "create"], ["deployments", "patch"], ["persistentvolumeclaims", "delete"]] as const) {
    t.true(allowed(resource, verb), `${verb} ${resource}`);
  }
  t.false(allowed("persistentvolumes", "delete"), "the provisioner deletes PVs, not the agent");
  t.false(allowed("customresourcedefinitions", "delete"), "other applications may use a CRD");
  // Each rule of the rendered RBAC is preceded by its comment.
  const text = await helm("template", "agent", CHART_DIR, "-n", NAMESPACE, "-f", join(CI_DIR, "default-values.yaml"), "--show-only", "templates/rbac.yaml");
  const lines = text.split("\n");
  lines.forEach((line, i) => {
    if (/^\s*- apiGroups:/.test(line)) t.regex(lines[i - 1] ?? "", /^\s*#/, `rule at line ${i + 1} has no comment`);
  });
  const withRbac = await render("default-values.yaml", "rbac.stageRbacObjects=true");
  t.true(rulesOf(one(withRbac, "ClusterRole")).some((r) => r.resources.includes("roles") && r.verbs.includes("escalate")));
});

test("namespace-scoped: Roles in the listed namespaces and the release's, nothing cluster-wide", async (t) => {
  const objects = await render("namespaced-values.yaml");
  t.is(ofKind(objects, "ClusterRole").length, 0);
  t.is(ofKind(objects, "ClusterRoleBinding").length, 0);
  t.deepEqual(ofKind(objects, "Role").map((r) => r.metadata.namespace).sort(), ["shop", "shop-staging", NAMESPACE]);
  t.deepEqual(ofKind(objects, "RoleBinding").map((r) => r.metadata.namespace).sort(), ["shop", "shop-staging", NAMESPACE]);
  for (const role of ofKind(objects, "Role")) for (const rule of rulesOf(role)) t.false(rule.resources.some((r) => ["namespaces", "persistentvolumes", "nodes", "clusterroles"].includes(r)));
  for (const binding of ofKind(objects, "RoleBinding")) {
    t.deepEqual(binding["subjects"], [{ kind: "ServiceAccount", name: "agent-theseus-agent", namespace: NAMESPACE }]);
  }
});

test("NodePort and LoadBalancer Services expose the gRPC port as asked", async (t) => {
  const grpcService = (objects: KubeObject[]): { type: string; ports: { nodePort?: number; port: number }[]; loadBalancerSourceRanges?: string[] } =>
    ofKind(objects, "Service").find((s) => s.metadata.name === "agent-theseus-agent")?.["spec"] as never;
  const nodePort = grpcService(await render("nodeport-values.yaml"));
  t.is(nodePort.type, "NodePort");
  t.is(nodePort.ports[0]?.nodePort, 30743);
  const lb = grpcService(await render("loadbalancer-values.yaml"));
  t.is(lb.type, "LoadBalancer");
  t.deepEqual(lb.loadBalancerSourceRanges, ["203.0.113.0/24"]);
  t.is(lb.ports[0]?.nodePort, undefined);
});

test("the Route and the Ingress pass TLS through to the agent", async (t) => {
  const route = one(await render("openshift-route-values.yaml"), "Route");
  t.like(route["spec"], { host: "theseus-eu-1.apps.example.com", tls: { termination: "passthrough", insecureEdgeTerminationPolicy: "None" }, port: { targetPort: "grpc" } });
  const ingress = one(await render("ingress-values.yaml"), "Ingress");
  t.is(ingress.metadata.annotations?.["nginx.ingress.kubernetes.io/ssl-passthrough"], "true");
  t.is(ingress.metadata.annotations?.["nginx.ingress.kubernetes.io/backend-protocol"], "GRPCS");
  const error = await t.throwsAsync(render("default-values.yaml", "ingress.enabled=true"));
  t.regex(error?.message ?? "", /ingress\.host is required/);
});

test("cert-manager: a Certificate for the agent's identity, into the Secret the pod mounts", async (t) => {
  const objects = await render("cert-manager-values.yaml");
  const certificate = one(objects, "Certificate");
  const spec = certificate["spec"] as { secretName: string; uris: string[]; usages: string[]; issuerRef: { name: string; kind: string } };
  t.deepEqual(spec.uris, ["spiffe://theseus/agent/eu-1"]);
  t.true(spec.usages.includes("server auth") && spec.usages.includes("client auth"));
  t.deepEqual(spec.issuerRef, { name: "theseus-ca", kind: "ClusterIssuer", group: "cert-manager.io" });
  t.is(podSpec(objects).volumes.find((v) => v.name === "tls")?.secret?.secretName, spec.secretName);
});

test("preserveOwnership: root with exactly the file capabilities, documented as leaving the restricted profile", async (t) => {
  const objects = await render("preserve-ownership-values.yaml");
  t.is(podSpec(objects).securityContext["runAsUser"], 0);
  const agent = agentContainer(objects);
  t.deepEqual(agent.securityContext.capabilities, { drop: ["ALL"], add: ["CHOWN", "FOWNER", "DAC_OVERRIDE", "DAC_READ_SEARCH"] });
  t.is(agent.securityContext["allowPrivilegeEscalation"], false);
});

test("the API server accepts every manifest of every values file (server-side dry run)", async (t) => {
  const { objects, rest } = t.context;
  for (const file of VALUES_FILES) {
    for (const object of await render(file)) {
      const r = await objects.resourceFor(object.apiVersion, object.kind);
      const base = r.group === "" ? `/api/${r.version}` : `/apis/${r.group}/${r.version}`;
      const path = r.namespaced ? `${base}/namespaces/${object.metadata.namespace ?? NAMESPACE}/${r.resource}` : `${base}/${r.resource}`;
      const what = `${file}: ${object.kind}/${object.metadata.name ?? ""}`;
      await t.notThrowsAsync(rest.json({ method: "POST", path, query: { dryRun: "All", fieldManager: "helm" }, body: object, what }), what);
    }
  }
  // Nothing was created by the dry runs.
  t.is(await objects.get({ apiVersion: "apps/v1", kind: "Deployment", namespace: NAMESPACE, name: "agent-theseus-agent" }), undefined);
});
