// Sanitising: removing every field bound to the source cluster, so that the target's API server accepts the object
// and its controllers fill those fields afresh. The floor is what crane-lib's kubernetes plugin and Velero's restore
// actions remove; each addition below says what the target would otherwise refuse or get wrong.
import type { Change, KubeObject } from "./types.js";
import type { JsonMap } from "./json.js";
import { deleteKey, isMap, listAt, mapAt, stringAt } from "./json.js";
import { diffObjects } from "./changes.js";
import { podTemplateMetaOf } from "./pod-templates.js";
import { withoutTheseusState } from "./staging.js";

export interface SanitiseOptions {
  /** Keep Services' nodePorts (dropped by default: a fixed nodePort often collides in the target). */
  readonly keepNodePorts?: boolean;
}

const METADATA_FIELDS = [
  "uid",
  "resourceVersion",
  "generation",
  "creationTimestamp",
  "deletionTimestamp",
  "deletionGracePeriodSeconds",
  "managedFields",
  "selfLink",
  "ownerReferences",
] as const;

const ANNOTATIONS = [
  "kubectl.kubernetes.io/last-applied-configuration",
  // Counts the source's ReplicaSets; the target's Deployment controller starts its own history.
  "deployment.kubernetes.io/revision",
  // autoscaling/v1 keeps the v2 status in annotations; the target's HPA controller writes its own.
  "autoscaling.alpha.kubernetes.io/conditions",
  "autoscaling.alpha.kubernetes.io/current-metrics",
  // OpenShift assigns each namespace its own uid and SELinux ranges; the source's would collide with another's.
  "openshift.io/sa.scc.mcs",
  "openshift.io/sa.scc.supplemental-groups",
  "openshift.io/sa.scc.uid-range",
];

const CONTROLLER_UID_LABELS = ["controller-uid", "batch.kubernetes.io/controller-uid"];

// Finalizers the target's own controllers add; kept, they could block unstaging if no controller there removes them.
const SYSTEM_FINALIZERS = new Set(["kubernetes.io/pvc-protection", "kubernetes.io/pv-protection", "foregroundDeletion", "orphan"]);

const VOLUME_ANNOTATION_PREFIXES = ["pv.kubernetes.io/", "volume.kubernetes.io/", "volume.beta.kubernetes.io/"];

export function sanitise(object: KubeObject, options: SanitiseOptions = {}): { object: KubeObject; changes: Change[] } {
  const result = withoutTheseusState(object);
  sanitiseMetadata(result);
  delete result["status"];
  KIND_SANITISERS[result.kind]?.(result, options);
  return { object: result, changes: diffObjects(object, result, "sanitise") };
}

function sanitiseMetadata(object: KubeObject): void {
  const meta = object.metadata;
  for (const field of METADATA_FIELDS) delete meta[field];
  if (meta.name !== undefined && meta.name !== "") delete meta.generateName;
  for (const key of ANNOTATIONS) deleteKey(meta, "annotations", key);
  for (const key of CONTROLLER_UID_LABELS) deleteKey(meta, "labels", key);
  if (meta.finalizers !== undefined) {
    meta.finalizers = meta.finalizers.filter((f) => !SYSTEM_FINALIZERS.has(f));
    if (meta.finalizers.length === 0) delete meta.finalizers;
  }
}

type KindSanitiser = (object: KubeObject, options: SanitiseOptions) => void;

const KIND_SANITISERS: Readonly<Record<string, KindSanitiser>> = {
  Namespace(object) {
    // The API server (1.21+) stamps the name as this label; under a mapped name the source's value would be wrong.
    deleteKey(object.metadata, "labels", "kubernetes.io/metadata.name");
  },
  Service(object, options) {
    const spec = mapAt(object, "spec");
    if (spec === undefined) return;
    // An allocated clusterIP belongs to the source's service CIDR; "None" (headless) is a choice, not an allocation.
    if (spec["clusterIP"] !== "None") {
      delete spec["clusterIP"];
      delete spec["clusterIPs"];
    }
    delete spec["healthCheckNodePort"];
    if (options.keepNodePorts !== true) {
      for (const port of listAt(spec, "ports")) if (isMap(port)) delete port["nodePort"];
    }
  },
  PersistentVolumeClaim(object) {
    const spec = mapAt(object, "spec");
    // The legacy class annotation is the claim's class when the field is unset: keep the class, drop the annotation.
    const legacyClass = object.metadata.annotations?.["volume.beta.kubernetes.io/storage-class"];
    if (spec !== undefined && legacyClass !== undefined && spec["storageClassName"] === undefined) {
      spec["storageClassName"] = legacyClass;
    }
    const annotations = object.metadata.annotations ?? {};
    for (const key of Object.keys(annotations)) {
      if (VOLUME_ANNOTATION_PREFIXES.some((p) => key.startsWith(p))) deleteKey(object.metadata, "annotations", key);
    }
    if (spec !== undefined) {
      delete spec["volumeName"];
      // A snapshot or claim to clone from lives on the source; the data arrives by sync instead.
      delete spec["dataSource"];
      delete spec["dataSourceRef"];
    }
  },
  Pod(object) {
    const spec = mapAt(object, "spec");
    if (spec === undefined) return;
    delete spec["nodeName"];
    dropInjectedTokenVolumes(spec);
  },
  ServiceAccount(object) {
    // Token and dockercfg secrets are the source's; the target's controllers make and list their own.
    delete object["secrets"];
    const pullSecrets = listAt(object, "imagePullSecrets").filter((s) => !/-dockercfg-[a-z0-9]{5}$/.test(stringAt(s, "name") ?? ""));
    if (pullSecrets.length === 0) delete object["imagePullSecrets"];
    else object["imagePullSecrets"] = pullSecrets;
  },
  Secret(object) {
    if (object["type"] !== "kubernetes.io/service-account-token") return;
    // A token secret the user made: the target's token controller fills it for the target's service account.
    deleteKey(object.metadata, "annotations", "kubernetes.io/service-account.uid");
    for (const key of ["token", "ca.crt", "namespace"]) deleteKey(object, "data", key);
  },
  Job(object) {
    const spec = mapAt(object, "spec");
    // The selector and the template's labels name the source Job's uid and are immutable: the target makes its own.
    if (spec !== undefined && spec["manualSelector"] !== true) delete spec["selector"];
    const meta = podTemplateMetaOf(object);
    if (meta !== undefined) for (const key of CONTROLLER_UID_LABELS) deleteKey(meta, "labels", key);
  },
  StatefulSet(object) {
    for (const template of listAt(mapAt(object, "spec"), "volumeClaimTemplates")) {
      if (!isMap(template)) continue;
      delete template["status"];
      const meta = mapAt(template, "metadata");
      if (meta !== undefined) delete meta["creationTimestamp"];
    }
  },
  Route(object) {
    if (object.metadata.annotations?.["openshift.io/host.generated"] !== "true") return;
    // A generated host names the source's router domain; the target's router generates its own.
    delete mapAt(object, "spec")?.["host"];
    deleteKey(object.metadata, "annotations", "openshift.io/host.generated");
  },
  DeploymentConfig(object) {
    // The image a trigger last resolved is the source registry's; the target's trigger resolves it again.
    for (const trigger of listAt(mapAt(object, "spec"), "triggers")) {
      delete mapAt(trigger, "imageChangeParams")?.["lastTriggeredImage"];
    }
  },
};

/**
 * The service-account admission plugin adds a token volume to every Pod (`default-token-abcde` up to 1.20,
 * `kube-api-access-abcde` after); the source's token secret does not exist on the target, so the Pod would never
 * start. The target's admission adds its own.
 */
function dropInjectedTokenVolumes(spec: JsonMap): void {
  const injected = new Set<string>();
  for (const volume of listAt(spec, "volumes")) {
    const name = stringAt(volume, "name") ?? "";
    const secretName = stringAt(mapAt(volume, "secret"), "secretName");
    if (/^kube-api-access-[a-z0-9]{5}$/.test(name) || (secretName === name && /-token-[a-z0-9]{5}$/.test(name))) injected.add(name);
  }
  if (injected.size === 0) return;
  spec["volumes"] = listAt(spec, "volumes").filter((v) => !injected.has(stringAt(v, "name") ?? ""));
  for (const container of [...listAt(spec, "initContainers"), ...listAt(spec, "containers")]) {
    if (!isMap(container) || !Array.isArray(container["volumeMounts"])) continue;
    container["volumeMounts"] = listAt(container, "volumeMounts").filter((m) => !injected.has(stringAt(m, "name") ?? ""));
  }
}

