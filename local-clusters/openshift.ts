// OpenShift kinds for tests: CRDs for route.openshift.io/v1 Route and apps.openshift.io/v1 DeploymentConfig, and a
// minimal DeploymentConfig controller so that an OpenShift-style app runs. The controller follows OpenShift's shape
// (a ReplicationController per version, named NAME-VERSION, labels deploymentconfig=NAME and deployment=NAME-VERSION,
// Recreate-like rollout: older versions are scaled to zero) without deployer pods, hooks or triggers.
import { createHash } from "node:crypto";
import type { KubeConfig, V1CustomResourceDefinition, V1ReplicationController } from "@kubernetes/client-node";
import { ApiextensionsV1Api, CoreV1Api, CustomObjectsApi, PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import type { Logger } from "../common/index.js";
import { describeError, sleep, TheseusError } from "../common/index.js";
import { createIfAbsent, isNotFound, loadKubeConfig, watchTrigger } from "../kube/index.js";

const DC_GROUP = "apps.openshift.io";
const ROUTE_GROUP = "route.openshift.io";
const ANN_DC_NAME = "openshift.io/deployment-config.name";
const ANN_VERSION = "openshift.io/deployment-config.latest-version";
const ANN_TEMPLATE_HASH = "theseus.local/template-hash";

function crd(group: string, kind: string, plural: string, shortNames: string[], scale: boolean): V1CustomResourceDefinition {
  return {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: { name: `${plural}.${group}`, labels: { "theseus.local/openshift-kinds": "true" } },
    spec: {
      group,
      scope: "Namespaced",
      names: { kind, plural, singular: kind.toLowerCase(), listKind: `${kind}List`, shortNames },
      versions: [
        {
          name: "v1",
          served: true,
          storage: true,
          schema: { openAPIV3Schema: { type: "object", x_kubernetes_preserve_unknown_fields: true } },
          subresources: {
            status: {},
            ...(scale ? { scale: { specReplicasPath: ".spec.replicas", statusReplicasPath: ".status.replicas", labelSelectorPath: ".status.selector" } } : {}),
          },
        },
      ],
    },
  };
}

export function openShiftCrds(): V1CustomResourceDefinition[] {
  return [crd(ROUTE_GROUP, "Route", "routes", [], false), crd(DC_GROUP, "DeploymentConfig", "deploymentconfigs", ["dc"], true)];
}

/** Installs the Route and DeploymentConfig CRDs (idempotent) and waits until the API serves them. */
export async function installOpenShiftKinds(kubeconfigPath: string, signal?: AbortSignal): Promise<void> {
  const kc = loadKubeConfig(kubeconfigPath);
  const ext = kc.makeApiClient(ApiextensionsV1Api);
  for (const c of openShiftCrds()) await createIfAbsent(() => ext.createCustomResourceDefinition({ body: c }));
  const deadline = Date.now() + 60_000;
  for (const c of openShiftCrds()) {
    for (;;) {
      const got = await ext.readCustomResourceDefinition({ name: c.metadata?.name ?? "" });
      if (got.status?.conditions?.some((x) => x.type === "Established" && x.status === "True") === true) break;
      if (Date.now() > deadline) throw new TheseusError("deadline_exceeded", `CRD ${c.metadata?.name ?? ""} was not established within 60 s`);
      await sleep(200, signal);
    }
  }
}

interface DeploymentConfig {
  metadata: { name: string; namespace: string; uid: string; generation?: number };
  spec: { replicas?: number; selector?: Record<string, string>; template?: { metadata?: { labels?: Record<string, string> }; spec?: unknown }; paused?: boolean };
  status?: { latestVersion?: number };
}

export async function runDeploymentConfigController(options: { kubeConfig: KubeConfig; logger: Logger; signal: AbortSignal }): Promise<void> {
  const { kubeConfig: kc, signal } = options;
  const logger = options.logger.child({ component: "deploymentconfig-controller" });
  const custom = kc.makeApiClient(CustomObjectsApi);
  const core = kc.makeApiClient(CoreV1Api);
  let wake: (() => void) | undefined;
  let watching = false;
  while (!signal.aborted) {
    try {
      const list = (await custom.listClusterCustomObject({ group: DC_GROUP, version: "v1", plural: "deploymentconfigs" })) as { items: DeploymentConfig[] };
      if (!watching) {
        watching = true;
        void watchTrigger(kc, `/apis/${DC_GROUP}/v1/deploymentconfigs`, {}, () => wake?.(), signal, logger);
        void watchTrigger(kc, "/api/v1/replicationcontrollers", {}, () => wake?.(), signal, logger);
      }
      for (const dc of list.items) {
        await reconcile(custom, core, dc).catch((e: unknown) => logger.warn({ dc: dc.metadata.name, err: describeError(e) }, "reconcile failed"));
      }
    } catch (error) {
      // 404 until the CRDs are installed (they are installed on demand); keep looking.
      if (!isNotFound(error)) logger.warn({ err: describeError(error) }, "listing DeploymentConfigs failed");
    }
    await new Promise<void>((resolve) => {
      wake = resolve;
      sleep(watching ? 5000 : 3000, signal).then(resolve, resolve);
    });
    wake = undefined;
    await sleep(200, signal).catch(() => undefined);
  }
}

async function reconcile(custom: CustomObjectsApi, core: CoreV1Api, dc: DeploymentConfig): Promise<void> {
  const { name, namespace } = dc.metadata;
  const replicas = dc.spec.paused === true ? undefined : (dc.spec.replicas ?? 1);
  const template = dc.spec.template ?? {};
  const hash = createHash("sha256").update(JSON.stringify(template)).digest("hex").slice(0, 16);
  const rcs = (await core.listNamespacedReplicationController({ namespace })).items.filter((rc) => rc.metadata?.annotations?.[ANN_DC_NAME] === name);
  let version = dc.status?.latestVersion ?? 0;
  let current = rcs.find((rc) => rc.metadata?.name === `${name}-${version}`);
  if (current === undefined || current.metadata?.annotations?.[ANN_TEMPLATE_HASH] !== hash) {
    version++;
    const selector = { ...(dc.spec.selector ?? {}), deploymentconfig: name, deployment: `${name}-${version}` };
    const rc: V1ReplicationController = {
      apiVersion: "v1",
      kind: "ReplicationController",
      metadata: {
        name: `${name}-${version}`,
        namespace,
        labels: { "openshift.io/deployment-config.name": name },
        annotations: { [ANN_DC_NAME]: name, [ANN_VERSION]: String(version), [ANN_TEMPLATE_HASH]: hash, "openshift.io/deployment.phase": "Complete" },
        ownerReferences: [{ apiVersion: `${DC_GROUP}/v1`, kind: "DeploymentConfig", name, uid: dc.metadata.uid, controller: true, blockOwnerDeletion: true }],
      },
      spec: {
        replicas: replicas ?? 0,
        selector,
        template: {
          ...(template as object),
          metadata: { ...(template.metadata ?? {}), labels: { ...(template.metadata?.labels ?? {}), ...selector } },
        },
      },
    };
    await createIfAbsent(() => core.createNamespacedReplicationController({ namespace, body: rc }));
    current = await core.readNamespacedReplicationController({ name: `${name}-${version}`, namespace });
  }
  // Recreate-like: every older version runs nothing.
  for (const rc of rcs) {
    if (rc.metadata?.name !== current.metadata?.name && (rc.spec?.replicas ?? 0) !== 0) {
      await core.patchNamespacedReplicationControllerScale(
        { name: rc.metadata?.name ?? "", namespace, body: { spec: { replicas: 0 } } },
        setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
      );
    }
  }
  if (replicas !== undefined && current.spec?.replicas !== replicas) {
    await core.patchNamespacedReplicationControllerScale(
      { name: current.metadata?.name ?? "", namespace, body: { spec: { replicas } } },
      setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
    );
  }
  const selectorText = Object.entries({ ...(dc.spec.selector ?? {}), deploymentconfig: name })
    .map(([k, v]) => `${k}=${v}`)
    .join(",");
  const st = current.status;
  const status = {
    latestVersion: version,
    observedGeneration: dc.metadata.generation ?? 0,
    replicas: st?.replicas ?? 0,
    readyReplicas: st?.readyReplicas ?? 0,
    availableReplicas: st?.availableReplicas ?? 0,
    updatedReplicas: st?.replicas ?? 0,
    unavailableReplicas: Math.max(0, (replicas ?? 0) - (st?.availableReplicas ?? 0)),
    selector: selectorText,
  };
  await custom.patchNamespacedCustomObjectStatus(
    { group: DC_GROUP, version: "v1", plural: "deploymentconfigs", namespace, name, body: { status } },
    setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
  );
}
