// Sanitise, table-driven: each row is an object as a 1.20 API server returned it and what must be gone (or kept)
// before the target's API server sees it. Every removal must be a recorded change with why "sanitise".
import test from "ava";
import { ANNOTATION_QUIESCED, ANNOTATION_STAGED, LABEL_MIGRATION, describeChange, quiescePatch, sanitise, stagedForm } from "../app-model/index.js";
import type { KubeObject } from "../app-model/index.js";
import { find, meta, shopObjects } from "./fixtures/app-model-shop.js";

const shop = shopObjects();
const get = (kind: string, name: string): KubeObject => find(shop, kind, name);

function at(object: unknown, path: string): unknown {
  let node: unknown = object;
  for (const key of path.split(".")) {
    if (typeof node !== "object" || node === null) return undefined;
    node = (node as Record<string, unknown>)[key];
  }
  return node;
}

interface Row {
  readonly title: string;
  readonly object: KubeObject;
  readonly gone: readonly string[];
  readonly kept?: Readonly<Record<string, unknown>>;
  readonly keepNodePorts?: boolean;
}

const rows: Row[] = [
  {
    title: "metadata bound to the source, on any kind",
    object: get("Deployment", "web"),
    gone: [
      "metadata.uid",
      "metadata.resourceVersion",
      "metadata.generation",
      "metadata.creationTimestamp",
      "metadata.managedFields",
      "metadata.selfLink",
      "metadata.annotations.kubectl\u200b",
      "status",
    ],
    kept: { "metadata.name": "web", "metadata.namespace": "shop", "spec.replicas": 3, "metadata.labels.app": "shop" },
  },
  {
    title: "generateName only when the name is set; ownerReferences",
    object: get("Pod", "web-5d8f7c9b4d-x7k2p"),
    gone: ["metadata.generateName", "metadata.ownerReferences", "spec.nodeName", "status"],
    kept: { "metadata.name": "web-5d8f7c9b4d-x7k2p" },
  },
  {
    title: "a Namespace loses the name label the API server stamps",
    object: get("Namespace", "shop"),
    gone: ["metadata.labels.kubernetes.io/metadata.name", "status"],
    kept: { "metadata.name": "shop", "spec.finalizers": ["kubernetes"] },
  },
  {
    title: "a ClusterIP Service: clusterIP and clusterIPs (the source's service CIDR)",
    object: get("Service", "web"),
    gone: ["spec.clusterIP", "spec.clusterIPs", "status"],
    kept: { "spec.type": "ClusterIP", "spec.ports": [{ name: "http", port: 80, protocol: "TCP", targetPort: 8080 }] },
  },
  {
    title: "a headless Service keeps clusterIP None",
    object: get("Service", "db"),
    gone: [],
    kept: { "spec.clusterIP": "None", "spec.clusterIPs": ["None"] },
  },
  {
    title: "a NodePort Service loses its nodePorts",
    object: get("Service", "web-nodeport"),
    gone: ["spec.clusterIP", "spec.ports.0.nodePort"],
    kept: { "spec.type": "NodePort", "spec.ports.0.port": 80 },
  },
  {
    title: "a NodePort Service keeps them on request",
    object: get("Service", "web-nodeport"),
    keepNodePorts: true,
    gone: ["spec.clusterIP"],
    kept: { "spec.ports.0.nodePort": 30080 },
  },
  {
    title: "a LoadBalancer Service: healthCheckNodePort and its status",
    object: {
      apiVersion: "v1",
      kind: "Service",
      metadata: meta("lb", "shop"),
      spec: { type: "LoadBalancer", clusterIP: "10.1.9.9", externalTrafficPolicy: "Local", healthCheckNodePort: 31999, ports: [{ port: 443, nodePort: 31443 }], loadBalancerSourceRanges: ["10.0.0.0/8"] },
      status: { loadBalancer: { ingress: [{ ip: "203.0.113.5" }] } },
    },
    gone: ["spec.healthCheckNodePort", "spec.clusterIP", "spec.ports.0.nodePort", "status"],
    kept: { "spec.loadBalancerSourceRanges": ["10.0.0.0/8"], "spec.externalTrafficPolicy": "Local" },
  },
  {
    title: "a bound claim: volumeName, binding annotations, selected-node, the protection finalizer",
    object: get("PersistentVolumeClaim", "web-data"),
    gone: [
      "spec.volumeName",
      "metadata.annotations",
      "metadata.finalizers",
      "status",
    ],
    kept: { "spec.storageClassName": "local-path", "spec.resources.requests.storage": "1Gi", "spec.accessModes": ["ReadWriteOnce"] },
  },
  {
    title: "a claim with only the legacy class annotation keeps its class as the field",
    object: {
      apiVersion: "v1",
      kind: "PersistentVolumeClaim",
      metadata: meta("old", "shop", { annotations: { "volume.beta.kubernetes.io/storage-class": "slow", team: "a" } }),
      spec: { accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "1Gi" } }, dataSource: { kind: "VolumeSnapshot", name: "snap", apiGroup: "snapshot.storage.k8s.io" } },
    },
    gone: ["metadata.annotations.volume\u200b", "spec.dataSource"],
    kept: { "spec.storageClassName": "slow", "metadata.annotations.team": "a" },
  },
  {
    title: "a ServiceAccount loses its token secrets and OpenShift's generated pull secret, keeps the user's",
    object: { ...get("ServiceAccount", "web"), imagePullSecrets: [{ name: "web-dockercfg-k2x8p" }, { name: "regcred" }] },
    gone: ["secrets"],
    kept: { imagePullSecrets: [{ name: "regcred" }] },
  },
  {
    title: "a token Secret the user made: the target's controller fills token, ca.crt, namespace and the uid",
    object: get("Secret", "web-token-ab12c"),
    gone: ["data", "metadata.annotations.kubernetes.io/service-account.uid"],
    kept: { type: "kubernetes.io/service-account-token", "metadata.annotations.kubernetes.io/service-account.name": "web" },
  },
  {
    title: "a Job: its selector and the controller-uid labels (immutable, naming the source's uid)",
    object: get("Job", "backup-1606727400"),
    gone: ["spec.selector", "metadata.labels.controller-uid", "spec.template.metadata.labels.controller-uid", "metadata.ownerReferences"],
    kept: { "spec.template.metadata.labels.job-name": "backup-1606727400", "spec.parallelism": 1 },
  },
  {
    title: "a Job with a manual selector keeps it",
    object: { apiVersion: "batch/v1", kind: "Job", metadata: meta("manual", "shop"), spec: { manualSelector: true, selector: { matchLabels: { run: "once" } }, template: { metadata: { labels: { run: "once" } }, spec: { containers: [] } } } },
    gone: [],
    kept: { "spec.selector": { matchLabels: { run: "once" } } },
  },
  {
    title: "a StatefulSet's claim templates lose their status",
    object: get("StatefulSet", "db"),
    gone: ["spec.volumeClaimTemplates.0.status", "spec.volumeClaimTemplates.0.metadata.creationTimestamp", "status"],
    kept: { "spec.volumeClaimTemplates.0.spec.storageClassName": "local-path", "spec.serviceName": "db" },
  },
  {
    title: "a Route with a generated host loses it",
    object: get("Route", "web"),
    gone: ["spec.host", "metadata.annotations", "status"],
    kept: { "spec.to.name": "web" },
  },
  {
    title: "a Route with a host the user chose keeps it",
    object: get("Route", "api"),
    gone: [],
    kept: { "spec.host": "api.apps.eu.example.com" },
  },
  {
    title: "a DeploymentConfig forgets the image its trigger last resolved",
    object: get("DeploymentConfig", "legacy"),
    gone: ["spec.triggers.1.imageChangeParams.lastTriggeredImage", "status"],
    kept: { "spec.triggers.1.imageChangeParams.automatic": true, "spec.replicas": 2 },
  },
  {
    title: "an HPA (autoscaling/v1) loses the status the API keeps in annotations",
    object: get("HorizontalPodAutoscaler", "web"),
    gone: ["metadata.annotations", "status"],
    kept: { "spec.maxReplicas": 6 },
  },
  {
    title: "a Pod loses the token volume its admission injected (and its mounts)",
    object: {
      apiVersion: "v1",
      kind: "Pod",
      metadata: meta("solo", "shop"),
      spec: {
        nodeName: "node-1",
        containers: [{ name: "c", image: "x", volumeMounts: [{ name: "data", mountPath: "/d" }, { name: "default-token-x1y2z", mountPath: "/var/run/secrets/kubernetes.io/serviceaccount", readOnly: true }] }],
        volumes: [{ name: "data", persistentVolumeClaim: { claimName: "web-data" } }, { name: "default-token-x1y2z", secret: { secretName: "default-token-x1y2z", defaultMode: 420 } }],
      },
    },
    gone: ["spec.nodeName", "spec.volumes.1", "spec.containers.0.volumeMounts.1"],
    kept: { "spec.volumes.0.name": "data", "spec.containers.0.volumeMounts.0.name": "data" },
  },
];

for (const row of rows) {
  test(`sanitise: ${row.title}`, (t) => {
    const before = structuredClone(row.object);
    const { object, changes } = sanitise(row.object, row.keepNodePorts === undefined ? {} : { keepNodePorts: row.keepNodePorts });
    t.deepEqual(row.object, before, "the input is never changed");
    for (const path of row.gone) {
      // A zero-width space marks "any key starting with": annotation keys hold dots.
      if (path.endsWith("\u200b")) {
        const [parent, prefix] = [path.slice(0, path.lastIndexOf(".")), path.slice(path.lastIndexOf(".") + 1, -1)];
        const keys = Object.keys((at(object, parent) as Record<string, unknown> | undefined) ?? {});
        t.false(keys.some((k) => k.startsWith(prefix)), `${parent} still has ${prefix}…`);
      } else if (path.startsWith("metadata.annotations.") || path.startsWith("metadata.labels.")) {
        const [, map, ...key] = path.split(".");
        t.is((object.metadata[map ?? ""] as Record<string, string> | undefined)?.[key.join(".")], undefined, path);
      } else {
        t.is(at(object, path), undefined, `${path} is gone`);
      }
    }
    for (const [path, value] of Object.entries(row.kept ?? {})) {
      const actual = path.startsWith("metadata.annotations.") ? object.metadata.annotations?.[path.slice("metadata.annotations.".length)] : at(object, path);
      t.deepEqual(actual, value, `${path} is kept`);
    }
    t.true(changes.every((c) => c.why === "sanitise"));
    t.is(changes.length === 0, JSON.stringify(object) === JSON.stringify(row.object), "every change is recorded");
  });
}

test("sanitise: every change is a pointer into the source object and reads as a line", (t) => {
  const web = get("Deployment", "web");
  const { changes } = sanitise(web);
  const paths = changes.map((c) => c.path);
  t.true(paths.includes("/metadata/uid"));
  t.true(paths.includes("/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration"));
  t.true(paths.includes("/status"));
  const uidChange = changes.find((c) => c.path === "/metadata/uid");
  t.is(uidChange?.op, "remove");
  t.is(uidChange?.before, web.metadata.uid);
  t.is(describeChange(uidChange ?? { path: "", op: "remove", why: "" }), `- /metadata/uid: "${web.metadata.uid ?? ""}" (sanitise)`);
});

test("sanitise: a Secret's values never appear in its changes", (t) => {
  const secrets = [get("Secret", "shop-secret"), get("Secret", "web-token-ab12c")];
  for (const secret of secrets) {
    const { changes } = sanitise(secret);
    const text = JSON.stringify(changes) + changes.map(describeChange).join("\n");
    for (const value of Object.values((secret["data"] as Record<string, string> | undefined) ?? {})) t.false(text.includes(value), `${secret.metadata.name ?? ""}: a value leaked`);
    t.false(text.includes("aHVudGVyMg=="), "the last-applied copy of the data leaked");
  }
});

test("sanitise: an object without anything bound to the source is returned unchanged", (t) => {
  const plain: KubeObject = { apiVersion: "v1", kind: "ConfigMap", metadata: { name: "plain", namespace: "shop" }, data: { a: "b" } };
  const { object, changes } = sanitise(plain);
  t.deepEqual(object, plain);
  t.deepEqual(changes, []);
});

test("sanitise: a source quiesced by a migration is planned with its own values, without our annotation", (t) => {
  const web = get("Deployment", "web");
  const patch = quiescePatch(web, "m-1") as { spec: Record<string, unknown>; metadata: { annotations: Record<string, string> } };
  const quiesced: KubeObject = { ...structuredClone(web), spec: { ...(web["spec"] as object), ...patch.spec } };
  quiesced.metadata.annotations = { ...quiesced.metadata.annotations, ...patch.metadata.annotations };
  t.is((quiesced["spec"] as { replicas: number }).replicas, 0);
  const { object } = sanitise(quiesced);
  t.is((object["spec"] as { replicas: number }).replicas, 3);
  t.is(object.metadata.annotations?.[ANNOTATION_QUIESCED], undefined);
});

test("sanitise: an app that arrived by an earlier migration loses that migration's label and annotations", (t) => {
  const arrived = stagedForm(get("CronJob", "backup"), "m-0", "created");
  t.is((arrived["spec"] as { suspend: boolean }).suspend, true, "staged, never activated: held at rest");
  const { object } = sanitise(arrived);
  t.is(object.metadata.labels?.[LABEL_MIGRATION], undefined);
  t.is(object.metadata.annotations?.[ANNOTATION_STAGED], undefined);
  t.is((object["spec"] as { suspend: boolean }).suspend, false, "its remembered value, not the staging's");
});
