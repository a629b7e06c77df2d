// The agent's Kubernetes side: its own cluster (kubeconfig, in-cluster or none), volume access to claims, and the
// application-model operations the AgentService RPCs expose (discover, describe, stage, unstage, quiesce, unquiesce,
// activate). The kinds' details are app-model's; this component does the reads, writes and waits.
export { connectCluster, requireCluster } from "./cluster.js";
export type { ClusterAccess, ClusterSource, VolumeAccessSettings } from "./cluster.js";
export { claimVolumeRef } from "./claims.js";
export { createDirectVolumeAccess, measureUsedBytes, selectVolumeAccess } from "./volume-access.js";
export type { ClaimRef, DirectHandle, EndMigrationOptions, MoverEndpoint, MoverHandle, MoverLease, UsedBytes, VolumeAccess, VolumeAccessMode, VolumeHandle } from "./volume-access.js";
export { LABEL_MIGRATION, LABEL_MOVER_OF, MOVER_VOLUME, createMoverAccess, moverLabelSelector, moverLabels, sweepMovers } from "./movers.js";
export type { MoverSettings } from "./movers.js";
export { discoverApp } from "./discover.js";
export type { DiscoverItem } from "./discover.js";
export { describeCluster } from "./describe.js";
export type { ClusterDescription } from "./describe.js";
export { HOLDER_IMAGE, stageApp } from "./stage.js";
export type { StageAction, StageInput, StageResult } from "./stage.js";
export { unstageApp } from "./unstage.js";
export { quiesceApp, unquiesceApp } from "./quiesce.js";
export { activateApp } from "./activate.js";
export { validateMigrationId, validateNamespace } from "./staged.js";
export type { AppSelection } from "./selection.js";
export { retireApp } from "./retire.js";
