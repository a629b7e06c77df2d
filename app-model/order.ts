// Dependency order for creating an application (and its reverse for removing it), after Velero's and crane's
// restore priorities: what others refer to comes first, what admits or routes traffic last.
import type { KubeObject } from "./types.js";

const FIRST = [
  "CustomResourceDefinition",
  "Namespace",
  "StorageClass",
  "PersistentVolume",
  "PersistentVolumeClaim",
  "ClusterRole",
  "Role",
  "ServiceAccount",
  "ClusterRoleBinding",
  "RoleBinding",
  "Secret",
  "ConfigMap",
  "LimitRange",
  "ResourceQuota",
  // Image streams before the DeploymentConfigs and BuildConfigs whose triggers resolve them.
  "ImageStream",
  // Pods started after a Service see its {NAME}_SERVICE_HOST variables; ones started before never do.
  "Service",
];
// Routes and Ingresses point at Services; webhooks last, so that none can refuse the app's own objects.
const LAST = ["Route", "Ingress", "APIService", "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"];

const RANK = new Map<string, number>([...FIRST.map((k, i) => [k, i] as const), ...LAST.map((k, i) => [k, FIRST.length + 1 + i] as const)]);
const EVERYTHING_ELSE = FIRST.length;

function rankOf(object: KubeObject): number {
  return RANK.get(object.kind) ?? EVERYTHING_ELSE;
}

function key(object: KubeObject): string {
  return `${object.metadata.namespace ?? ""}/${object.kind}/${object.metadata.name ?? ""}`;
}

/** Objects in the order to create them: by kind (custom resources with everything else, after their CRDs), then name. */
export function applyOrder(objects: readonly KubeObject[]): KubeObject[] {
  return [...objects].sort((a, b) => rankOf(a) - rankOf(b) || (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
}

/** The reverse: webhooks first (so that none refuses a deletion), CRDs last (deleting one deletes its resources). */
export function deleteOrder(objects: readonly KubeObject[]): KubeObject[] {
  return applyOrder(objects).reverse();
}
