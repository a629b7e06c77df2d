// The application model's data: Kubernetes objects as plain JSON, what discovery found on the source, what the target
// cluster is like, and the plan that joins them. Pure data, no I/O: the agent (discovery, staging, quiesce) and the
// coordinator (plan, the transaction) share these types and the functions of this component.

/** A Kubernetes object exactly as JSON: what the API server returns and accepts. Kinds are not typed on purpose. */
export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
  [field: string]: unknown;
}

export interface ObjectMeta {
  name?: string;
  generateName?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  ownerReferences?: OwnerReference[];
  finalizers?: string[];
  [field: string]: unknown;
}

export interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller?: boolean;
  blockOwnerDeletion?: boolean;
}

/** One object by the fields that name it; `namespace` is "" for cluster-scoped objects. */
export interface ObjectRef {
  readonly apiVersion: string;
  readonly kind: string;
  readonly namespace: string;
  readonly name: string;
}

/** One resource the API server serves in one version (API discovery). `group` is "" for the core group. */
export interface ServedResource {
  readonly group: string;
  readonly version: string;
  readonly kind: string;
  /** Plural resource name, as in URLs (`deployments`). */
  readonly resource: string;
  readonly namespaced: boolean;
  readonly verbs: readonly string[];
  /** Whether `version` is the group's preferred version. */
  readonly preferred: boolean;
}

/** A PersistentVolumeClaim of the application and what the agent measured of its volume. */
export interface ClaimInfo {
  readonly namespace: string;
  readonly name: string;
  readonly storageClass: string;
  readonly requestedBytes: number;
  readonly capacityBytes: number;
  /** Bytes the volume's files occupy (0 when the agent cannot reach them). */
  readonly usedBytes: number;
  readonly volumeName: string;
  readonly accessModes: readonly string[];
  /** How the agent reaches the files: "direct" today (mover pods later), "" when it cannot; then `reason`. */
  readonly access: string;
  readonly reason: string;
  /** The volume reference the sync engine and transfer sessions take ("NAMESPACE/CLAIM"). */
  readonly volume: string;
}

/** What the source agent's discovery returned: every object of the application, unfiltered, and its claims. */
export interface Inventory {
  readonly cluster: string;
  readonly serverVersion: string;
  /** Namespaced objects of the selection plus the cluster-scoped objects they depend on, as the API server sent them. */
  readonly objects: readonly KubeObject[];
  readonly claims: readonly ClaimInfo[];
  readonly resources: readonly ServedResource[];
  /** Kinds discovery could not list, with why. */
  readonly warnings: readonly string[];
}

/** What the target agent reported of its cluster (AgentService.DescribeCluster). */
export interface ClusterFacts {
  readonly cluster: string;
  readonly serverVersion: string;
  /** Every served resource in every served version. */
  readonly resources: readonly ServedResource[];
  /**
   * StorageClasses, the target namespace (when it exists), its ResourceQuotas and LimitRanges, every
   * CustomResourceDefinition, and each looked-up object that exists.
   */
  readonly objects: readonly KubeObject[];
}

export type ConflictPolicy = "fail" | "adopt";

/** Everything a user can ask of the plan; validated once (coordinator) into this fully defaulted form. */
export interface PlanOptions {
  readonly sourceNamespace: string;
  readonly targetNamespace: string;
  /** Source StorageClass -> target StorageClass (`--storage-class SRC=DST`). */
  readonly storageClasses: ReadonlyMap<string, string>;
  /** Image registry prefix -> replacement (`--image-registry OLD=NEW`). */
  readonly imageRegistries: ReadonlyMap<string, string>;
  /** Replica overrides by "Kind/name" (`--replicas Deployment/web=2`). */
  readonly replicas: ReadonlyMap<string, number>;
  /** Route host rewriting: each rule replaces a host suffix (`apps.eu.example.com` -> `apps.us.example.com`). */
  readonly routeHosts: ReadonlyMap<string, string>;
  /** User rules from a rules file (parseRules), applied in order after the built-in rewrites. */
  readonly rules: readonly Rule[];
  /** Rewrite `svc.NS.svc` DNS names in ConfigMaps and env values when the namespace changes. */
  readonly rewriteServiceDns: boolean;
  /** Keep Services' nodePorts (a fixed nodePort often collides in the target, so they are dropped by default). */
  readonly keepNodePorts: boolean;
  readonly onConflict: ConflictPolicy;
  /**
   * The migration the plan is for, when there is one (stage, the transaction): an object on the target labelled
   * with it was staged by this migration before and is planned as a create again (staging is idempotent), not as a
   * conflict. Without it (`theseus plan`), every existing object is a conflict.
   */
  readonly migrationId?: string;
}

/** A user rule, modelled on Velero's resource modifiers; validated against RULES_SCHEMA by parseRules. */
export interface Rule {
  /** Where the rule was defined, for messages ("rules.yaml:12"). */
  readonly source: string;
  readonly conditions: RuleConditions;
  readonly patches: readonly RulePatch[];
}

export interface RuleConditions {
  /** Glob over `resource.group` (`deployments.apps`, `*.apps`, `configmaps`). */
  readonly groupResource: string;
  /** Regular expression over the object's name. */
  readonly resourceNameRegex?: string;
  readonly namespaces?: readonly string[];
  /** Kubernetes label selector syntax. */
  readonly labelSelector?: string;
  /** JSON-path (RFC 6901 pointer) matches: every listed path must hold the given value. */
  readonly matches?: readonly { readonly path: string; readonly value: string }[];
}

export type RulePatch =
  | { readonly type: "json"; readonly operations: readonly JsonPatchOperation[] }
  | { readonly type: "merge"; readonly patch: Record<string, unknown> };

export interface JsonPatchOperation {
  readonly op: "add" | "remove" | "replace" | "move" | "copy" | "test";
  readonly path: string;
  readonly value?: unknown;
  readonly from?: string;
}

export type PlanAction = "create" | "skip" | "adopt" | "conflict";

/** One change the plan made to an object on its way to the target, and why. */
export interface Change {
  /** RFC 6901 pointer into the object. */
  readonly path: string;
  readonly op: "add" | "remove" | "replace";
  readonly before?: unknown;
  readonly after?: unknown;
  /**
   * Which step made it: "sanitise", "namespace", "service-dns", "storage-class", "image-registry", "replicas",
   * "route-host", "api-version", "quota", or a rule's source ("rules.yaml:12").
   */
  readonly why: string;
}

export interface PlanObject {
  /** The object on the source. */
  readonly source: ObjectRef;
  /** The object as it will be named on the target (namespace and apiVersion may differ). */
  readonly target: ObjectRef;
  readonly action: PlanAction;
  /** Why it is skipped (left for the target's controllers, cannot move...) or in conflict. */
  readonly reason?: string;
  /** The object as it will be created on the target (create and adopt). */
  readonly object?: KubeObject;
  readonly changes: readonly Change[];
}

export interface PlanVolume {
  readonly claim: string;
  readonly namespace: string;
  readonly targetNamespace: string;
  readonly storageClass: string;
  readonly targetStorageClass: string;
  readonly requestedBytes: number;
  readonly targetRequestedBytes: number;
  readonly capacityBytes: number;
  readonly usedBytes: number;
  /** The source agent's volume reference for the sync engine ("NAMESPACE/CLAIM"). */
  readonly volume: string;
  readonly access: string;
}

export interface Problem {
  readonly severity: "error" | "warning";
  /**
   * Which check found it: "storage-class", "capacity", "quota", "kind-served", "crd", "conflict", "discovery",
   * "volume-access", "rules" (a patch that cannot apply), "options" (a flag naming nothing), "stays" (an object that
   * cannot move safely).
   */
  readonly check: string;
  readonly object?: ObjectRef;
  readonly message: string;
  /** What to do about it. */
  readonly hint?: string;
}

export interface Plan {
  readonly source: { readonly cluster: string; readonly namespace: string };
  readonly target: { readonly cluster: string; readonly namespace: string };
  readonly objects: readonly PlanObject[];
  readonly volumes: readonly PlanVolume[];
  readonly problems: readonly Problem[];
}

/** A JSON merge patch (RFC 7386) the agent sends to its API server as application/merge-patch+json. */
export type MergePatch = Record<string, unknown>;
