// `theseus export`: discover the app on the source agent, plan it without a target (sanitised, nothing rewritten), write
// the chart, and stream each bound claim's archive from the agent into a spool file beside the output; then the one
// .tgz. With --quiesce the app is stopped (Quiesce) before the volumes are read and started again (Unquiesce) after,
// whatever happened; without it the snapshot is crash-consistent at best, which the result says.
import { createHash, randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { buildPlan, formatBytesQuantity, planObjectsToStage } from "../../app-model/index.js";
import type { ClusterFacts, Inventory, KubeObject, PlanOptions } from "../../app-model/index.js";
import { TheseusError, formatBytes, throwIfAborted } from "../../common/index.js";
import type { TlsMaterial } from "../../rpc/index.js";
import { dialAgent } from "../agents/index.js";
import type { AgentClient, AgentTarget } from "../agents/index.js";
import { describeTarget, discoverInventory, planErrors } from "../plan/index.js";
import type { AppSelection } from "../plan/index.js";
import { FORMAT, writeArchive } from "./archive.js";
import type { Manifest, ManifestClaim, SpooledClaim } from "./archive.js";
import { NAMESPACE_PLACEHOLDER, chartFiles } from "./chart.js";

export interface ExportRequest {
  readonly from: AgentTarget;
  readonly app: AppSelection;
  /** The .tgz to write. */
  readonly out: string;
  readonly withData: boolean;
  readonly quiesce: boolean;
  readonly tls: TlsMaterial;
  readonly signal?: AbortSignal;
  readonly onEvent?: (event: ExportEvent) => void;
}

export type ExportEvent =
  | { readonly type: "discovered"; readonly objects: number; readonly claims: number }
  | { readonly type: "quiesced"; readonly changed: number }
  | { readonly type: "volume"; readonly claim: string; readonly bytes: number; readonly totalBytes: number }
  | { readonly type: "volume-done"; readonly claim: string; readonly bytes: number; readonly fileBytes: number }
  | { readonly type: "unquiesced" };

export interface ExportResult {
  readonly out: string;
  readonly chart: string;
  readonly objects: number;
  readonly claims: readonly ManifestClaim[];
  readonly quiesced: boolean;
  readonly warnings: readonly string[];
}

const CHART_NAME = /^[a-z0-9]([-a-z0-9]{0,51}[a-z0-9])?$/;

/** A plan whose target is the source itself: what moves, sanitised; `targetNamespace` names where it is planned into. */
export function neutralObjects(inventory: Inventory, source: ClusterFacts, sourceNamespace: string, targetNamespace: string): { objects: KubeObject[]; warnings: string[] } {
  const options: PlanOptions = {
    sourceNamespace,
    targetNamespace,
    storageClasses: new Map(),
    imageRegistries: new Map(),
    replicas: new Map(),
    routeHosts: new Map(),
    rules: [],
    rewriteServiceDns: targetNamespace !== sourceNamespace,
    keepNodePorts: false,
    onConflict: "fail",
  };
  // The source's own classes and every kind it serves (cluster-scoped ones too, which discovery does not list); none
  // of its objects, so that nothing is a conflict and its CRDs travel with the chart.
  const facts: ClusterFacts = { ...source, objects: source.objects.filter((o) => o.kind === "StorageClass") };
  const plan = buildPlan(inventory, facts, options);
  const errors = planErrors(plan);
  if (errors.length > 0) {
    throw new TheseusError("failed_precondition", `the app cannot be exported: ${errors.map((e) => e.message).join("; ")}`, { hint: errors.find((e) => e.hint !== undefined)?.hint });
  }
  return { objects: planObjectsToStage(plan), warnings: plan.problems.map((p) => p.message) };
}

const MiB = 2 ** 20;

/**
 * A claim may hold more than it requests where the storage does not enforce the request (local-path, hostPath): a
 * chart that kept the request would not hold the data on any class that does, and an import could not raise it
 * (nothing but the chart's own objects reaches the target). So the exported claim requests what its files use plus a
 * tenth, in whole MiB, and the export says so.
 */
export function fitClaimRequests(inventory: Inventory): { inventory: Inventory; warnings: string[] } {
  const raised = new Map<string, number>();
  for (const claim of inventory.claims) {
    if (claim.usedBytes > claim.requestedBytes) raised.set(`${claim.namespace}/${claim.name}`, Math.ceil((claim.usedBytes * 1.1) / MiB) * MiB);
  }
  if (raised.size === 0) return { inventory, warnings: [] };
  const warnings: string[] = [];
  const claims = inventory.claims.map((claim) => {
    const bytes = raised.get(`${claim.namespace}/${claim.name}`);
    if (bytes === undefined) return claim;
    warnings.push(`claim ${claim.name} requests ${formatBytes(claim.requestedBytes)} but its files use ${formatBytes(claim.usedBytes)} (its storage does not enforce requests): the chart requests ${formatBytesQuantity(bytes)}`);
    return { ...claim, requestedBytes: bytes };
  });
  const objects = inventory.objects.map((object) => {
    const bytes = object.kind === "PersistentVolumeClaim" ? raised.get(`${object.metadata.namespace ?? ""}/${object.metadata.name ?? ""}`) : undefined;
    if (bytes === undefined) return object;
    const copy = structuredClone(object);
    const spec = (copy["spec"] ??= {}) as { resources?: { requests?: Record<string, unknown> } };
    spec.resources = { ...spec.resources, requests: { ...spec.resources?.requests, storage: formatBytesQuantity(bytes) } };
    return copy;
  });
  return { inventory: { ...inventory, claims, objects }, warnings };
}

export async function exportApp(request: ExportRequest): Promise<ExportResult> {
  const { app, signal } = request;
  const chart = app.helmRelease !== "" ? app.helmRelease : app.namespace;
  if (!CHART_NAME.test(chart)) throw new TheseusError("invalid_argument", `"${chart}" cannot name a chart`, { hint: "chart names are lowercase letters, digits and '-'" });
  // Before any quiesce: the objects must carry the replicas the app runs with, not the zero of a stopped app.
  const fitted = fitClaimRequests(await discoverInventory(request.from, app, request.tls, signal));
  const { inventory } = fitted;
  const bound = inventory.claims.filter((c) => c.volumeName !== "");
  request.onEvent?.({ type: "discovered", objects: inventory.objects.length, claims: inventory.claims.length });
  const served = await describeTarget(request.from, app.namespace, [], request.tls, signal);
  const stored = neutralObjects(inventory, served, app.namespace, app.namespace);
  const templated = neutralObjects(inventory, served, app.namespace, NAMESPACE_PLACEHOLDER);
  const exportedAt = new Date().toISOString();
  const warnings = [...fitted.warnings, ...stored.warnings];

  const spoolDir = `${request.out}.parts`;
  const spooled: SpooledClaim[] = [];
  const claims: ManifestClaim[] = [];
  const client = dialAgent(request.from, request.tls);
  const exportId = `export-${randomBytes(6).toString("hex")}`;
  let quiesced = false;
  try {
    if (request.withData && bound.length > 0) {
      await mkdir(spoolDir, { recursive: true, mode: 0o700 });
      if (request.quiesce) {
        const result = await client.quiesce({ migrationId: exportId, app, timeoutSeconds: 0 }, callOptions(signal));
        quiesced = true;
        request.onEvent?.({ type: "quiesced", changed: result.changed.length });
      }
    }
    for (const claim of inventory.claims) {
      const base = { name: claim.name, storageClass: claim.storageClass, requestedBytes: claim.requestedBytes, capacityBytes: claim.capacityBytes, accessModes: [...claim.accessModes] };
      if (!request.withData || claim.volumeName === "") {
        claims.push(base);
        continue;
      }
      throwIfAborted(signal);
      const path = `${spoolDir}/${claim.name}.tar.zst`;
      const data = await exportVolume(client, claim.volume, claim.usedBytes, path, (bytes) => request.onEvent?.({ type: "volume", claim: claim.name, bytes, totalBytes: claim.usedBytes }), signal);
      if (data.filesChangedWhileRead > 0) warnings.push(`claim ${claim.name}: ${data.filesChangedWhileRead} files changed while they were read`);
      spooled.push({ claim: claim.name, path });
      claims.push({ ...base, data: { file: `data/claims/${claim.name}.tar.zst`, sha256: data.sha256, fileBytes: data.fileBytes, digest: data.digest, entries: data.entries, bytes: data.bytes, tarBytes: data.tarBytes } });
      request.onEvent?.({ type: "volume-done", claim: claim.name, bytes: data.bytes, fileBytes: data.fileBytes });
    }
  } catch (error) {
    await rm(spoolDir, { recursive: true, force: true });
    throw error;
  } finally {
    if (quiesced) {
      // Started again whatever happened: an export must never leave the app stopped. Not cancellable on purpose.
      await client.unquiesce({ migrationId: exportId, app }).then(
        () => request.onEvent?.({ type: "unquiesced" }),
        (error: unknown) => {
          throw new TheseusError(TheseusError.from(error).code, `the app was stopped for the export and could not be started again: ${TheseusError.from(error).message}`, {
            cause: error,
            hint: `start it with the agent's Unquiesce (migration id ${exportId}), or scale its workloads back up`,
          });
        },
      );
    }
    client.close();
  }

  const manifest: Manifest = {
    format: FORMAT,
    chart,
    exportedAt,
    source: { cluster: inventory.cluster, namespace: app.namespace, serverVersion: inventory.serverVersion },
    quiesced,
    claims,
  };
  const files = chartFiles({ name: chart, sourceCluster: inventory.cluster, sourceNamespace: app.namespace, exportedAt, objects: templated.objects, withData: request.withData, quiesced, claims: spooled.map((s) => s.claim) });
  try {
    await writeArchive(request.out, chart, files, manifest, { objects: stored.objects, resources: inventory.resources }, spooled);
  } finally {
    await rm(spoolDir, { recursive: true, force: true });
  }
  return { out: request.out, chart, objects: stored.objects.length, claims, quiesced, warnings };
}

interface ExportedVolume {
  readonly sha256: string;
  readonly fileBytes: number;
  readonly digest: string;
  readonly entries: number;
  readonly bytes: number;
  readonly tarBytes: number;
  readonly filesChangedWhileRead: number;
}

async function exportVolume(client: AgentClient, volume: string, totalBytes: number, path: string, onBytes: (bytes: number) => void, signal: AbortSignal | undefined): Promise<ExportedVolume> {
  const hash = createHash("sha256");
  let fileBytes = 0;
  let summary: ExportedVolume | undefined;
  async function* data(): AsyncGenerator<Uint8Array> {
    for await (const event of client.exportVolume({ volume }, callOptions(signal))) {
      if (event.event.case === "data") {
        hash.update(event.event.value);
        fileBytes += event.event.value.length;
        yield event.event.value;
      } else if (event.event.case === "progress") {
        onBytes(Math.min(Number(event.event.value.bytes), totalBytes || Number.MAX_SAFE_INTEGER));
      } else if (event.event.case === "done") {
        const s = event.event.value;
        summary = { sha256: "", fileBytes: 0, digest: s.digest, entries: Number(s.entries), bytes: Number(s.bytes), tarBytes: Number(s.tarBytes), filesChangedWhileRead: Number(s.filesChangedWhileRead) };
      }
    }
  }
  await pipeline(Readable.from(data()), createWriteStream(path, { mode: 0o600 }));
  if (summary === undefined) throw new TheseusError("protocol", `the source agent ended the archive of ${volume} without its summary`, { hint: "the agent may have stopped; read its log and export again" });
  onBytes(summary.bytes);
  return { ...summary, sha256: hash.digest("hex"), fileBytes };
}

function callOptions(signal: AbortSignal | undefined): { signal?: AbortSignal } {
  return signal === undefined ? {} : { signal };
}
