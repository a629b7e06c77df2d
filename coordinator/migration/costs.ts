// The two cutover terms the rounds cannot tell: how long the source takes to stop its writers (quiesce) and how long
// the target takes from activation to ready (start-up). Pure: the driver feeds it what the source's Discover returned
// (the app's pods with their status) and what the participants measured, and shows each term with where it came from.
//
// Where the numbers come from, best first:
// - measured: the participants' own clocks in this migration (a resumed cutover, a repeated one);
// - observed: the source app's running pods, from their status. The kubelet records when each container started and
//   when the pod turned Ready; that interval is the app's own start-up (process, recovery, the first readiness probe
//   that passes), which the target repeats on the same data. Pod status keeps whole seconds, so it is rounded, and the
//   readiness probe's schedule bounds it from below. The control plane's share (the scale-up reaching a pod, the
//   scheduler, the kubelet, the status reaching the workload) is not in pod status and is added as an allowance;
// - estimated: the allowances alone, when the source has no running pod to learn from.
import { podMountsClaim } from "../../app-model/index.js";
import type { KubeObject } from "../../app-model/index.js";

export type CostSource = "measured" | "observed" | "estimated";

export interface CostTerm {
  readonly ms: number;
  readonly source: CostSource;
  /** How it was arrived at, for the report ("pod status: 1 s from container start to Ready + 400 ms control plane"). */
  readonly basis: string;
}

export interface CutoverCosts {
  readonly quiesce: CostTerm;
  readonly startup: CostTerm;
}

export interface CostAllowances {
  /** Scale-down to the last pod gone, besides the app's own shutdown: controllers, the kubelet, the pod's deletion. */
  readonly stopMs: number;
  /** The app's own shutdown after SIGTERM, when nothing better is known. */
  readonly shutdownMs: number;
  /** Activation to the pod's container started, and Ready back to the workload's status. */
  readonly controlPlaneMs: number;
  /** The app's container start to Ready, when no running pod shows it. */
  readonly startToReadyMs: number;
}

/** Calibrated on the local clusters (`theseus demo`, a busy 2-core machine); a real cluster's kubelet is similar. */
export const DEFAULT_ALLOWANCES: CostAllowances = { stopMs: 600, shutdownMs: 200, controlPlaneMs: 500, startToReadyMs: 1000 };

export interface CostInputs {
  /** The source application's objects as Discover listed them (pods among them, with status). */
  readonly sourceObjects: readonly KubeObject[];
  /** What the participants measured in this migration, when they have (0 or absent: not yet). */
  readonly measured?: { readonly quiesceMs?: number; readonly startupMs?: number };
  readonly allowances?: CostAllowances;
}

export function cutoverCosts(inputs: CostInputs): CutoverCosts {
  const a = inputs.allowances ?? DEFAULT_ALLOWANCES;
  const measuredQuiesce = inputs.measured?.quiesceMs ?? 0;
  const measuredStartup = inputs.measured?.startupMs ?? 0;
  const pods = appPods(inputs.sourceObjects);
  const observed = pods.map(startToReadyMs).filter((ms): ms is number => ms !== undefined);

  const quiesce: CostTerm =
    measuredQuiesce > 0
      ? { ms: measuredQuiesce, source: "measured", basis: `the source measured ${measuredQuiesce} ms from quiesce to its writers gone` }
      : { ms: a.stopMs + a.shutdownMs, source: "estimated", basis: `${a.stopMs} ms for the scale-down to reach and remove the pods + ${a.shutdownMs} ms for the app to stop` };

  let startup: CostTerm;
  if (measuredStartup > 0) startup = { ms: measuredStartup, source: "measured", basis: `the target measured ${measuredStartup} ms from activation to ready` };
  else if (observed.length > 0) {
    // The slowest pod: the target is ready when all of them are.
    const appMs = Math.max(...observed);
    startup = {
      ms: appMs + a.controlPlaneMs,
      source: "observed",
      basis: `pod status of ${observed.length} running source pod${observed.length === 1 ? "" : "s"}: ${appMs} ms from container start to Ready (whole seconds, at least one readiness period) + ${a.controlPlaneMs} ms control plane`,
    };
  } else {
    startup = { ms: a.startToReadyMs + a.controlPlaneMs, source: "estimated", basis: `no running source pod to learn from: ${a.startToReadyMs} ms to Ready + ${a.controlPlaneMs} ms control plane` };
  }
  return { quiesce, startup };
}

/** The source's pods that mount one of the app's claims (the writers that quiesce stops); all pods when none does. */
function appPods(objects: readonly KubeObject[]): KubeObject[] {
  const pods = objects.filter((o) => o.apiVersion === "v1" && o.kind === "Pod" && o.metadata.deletionTimestamp === undefined);
  const claims = new Set(objects.filter((o) => o.apiVersion === "v1" && o.kind === "PersistentVolumeClaim").map((o) => o.metadata.name ?? ""));
  const writers = pods.filter((p) => podMountsClaim(p, claims));
  return writers.length > 0 ? writers : pods;
}

interface PodStatusView {
  readonly conditions?: readonly { readonly type?: string; readonly status?: string; readonly lastTransitionTime?: string }[];
  readonly containerStatuses?: readonly { readonly state?: { readonly running?: { readonly startedAt?: string } } }[];
}

interface PodSpecView {
  readonly containers?: readonly { readonly readinessProbe?: { readonly initialDelaySeconds?: number; readonly periodSeconds?: number; readonly successThreshold?: number } }[];
}

/**
 * A Ready pod's start-up: its last container start to the Ready condition, at least what its readiness probes allow
 * (the first passing probe comes one period after the probers start at the earliest, after the initial delay, and a
 * success threshold above one adds periods). Undefined for a pod that is not running and Ready.
 */
export function startToReadyMs(pod: KubeObject): number | undefined {
  const status = (pod["status"] ?? {}) as PodStatusView;
  const ready = status.conditions?.find((c) => c.type === "Ready");
  if (ready?.status !== "True" || ready.lastTransitionTime === undefined) return undefined;
  const starts = (status.containerStatuses ?? []).map((c) => c.state?.running?.startedAt);
  if (starts.length === 0 || starts.some((s) => s === undefined)) return undefined;
  const startedMs = Math.max(...starts.map((s) => Date.parse(s ?? "")));
  const readyMs = Date.parse(ready.lastTransitionTime);
  if (!Number.isFinite(startedMs) || !Number.isFinite(readyMs)) return undefined;
  const spec = (pod["spec"] ?? {}) as PodSpecView;
  const floorMs = Math.max(
    0,
    ...(spec.containers ?? []).map((c) => {
      const p = c.readinessProbe;
      if (p === undefined) return 0;
      const periodMs = (p.periodSeconds ?? 10) * 1000;
      return Math.max((p.initialDelaySeconds ?? 0) * 1000, periodMs) + periodMs * Math.max((p.successThreshold ?? 1) - 1, 0);
    }),
  );
  return Math.max(readyMs - startedMs, floorMs);
}
