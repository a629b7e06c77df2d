// `theseus import`: an archive read twice as a stream, never whole. First every check that needs no cluster (the
// manifest, the objects, each claim file's size and sha256: a truncated or damaged archive is refused before anything
// is written anywhere), then the plan against the target (app-model's checks: kinds, classes, quotas, conflicts),
// then Stage (workloads at zero), each volume restored by the target agent (strict extraction, digest verified on
// what landed), and only then Activate. A refused volume undoes the whole import; an interruption leaves the journal
// to resume from.
import { createHash } from "node:crypto";
import { stat } from "node:fs/promises";
import { parse } from "yaml";
import { buildPlan, planLookups } from "../../app-model/index.js";
import type { Inventory, PlanOptions } from "../../app-model/index.js";
import { TheseusError, throwIfAborted } from "../../common/index.js";
import type { TlsMaterial } from "../../rpc/index.js";
import { dialAgent } from "../agents/index.js";
import type { AgentTarget } from "../agents/index.js";
import { describeTarget, planErrors, stagePlan, unstageMigration } from "../plan/index.js";
import { claimsOf, parseManifest, parseObjects, readArchive, readSmall, sha256Of } from "./archive.js";
import type { Manifest, ObjectsDocument } from "./archive.js";
import { importsDir, readJournal, removeJournal, writeJournal } from "./journal.js";
import type { ImportJournal } from "./journal.js";
import { applyValues, setValue, validateValues } from "./values.js";
import type { ChartValues } from "./values.js";

export interface ImportRequest {
  readonly archive: string;
  readonly to: AgentTarget;
  readonly toNamespace?: string | undefined;
  /** `--set KEY=VALUE`, in order. */
  readonly sets: readonly string[];
  /** `--storage-class SRC=DST`. */
  readonly storageClasses: ReadonlyMap<string, string>;
  readonly tls: TlsMaterial;
  readonly signal?: AbortSignal;
  readonly journalDir?: string;
  /** How long activation may wait for the workloads to be ready. */
  readonly readyTimeoutSeconds?: number;
  readonly onEvent?: (event: ImportEvent) => void;
}

export type ImportEvent =
  | { readonly type: "checked"; readonly claims: number; readonly bytes: number }
  | { readonly type: "resuming"; readonly phase: string }
  | { readonly type: "staged"; readonly objects: number }
  | { readonly type: "volume"; readonly claim: string; readonly bytes: number; readonly totalBytes: number }
  | { readonly type: "volume-done"; readonly claim: string; readonly entries: number; readonly bytes: number }
  | { readonly type: "activated"; readonly workloads: number };

export interface ImportResult {
  readonly id: string;
  readonly namespace: string;
  readonly objects: number;
  readonly restored: readonly string[];
  readonly warnings: readonly string[];
}

/** Limits on what the first pass reads into memory: the chart's small files. */
const SMALL_FILE_BYTES = 64 * 1024 * 1024;
const CHUNK_BYTES = 1024 * 1024;

interface Scanned {
  readonly chart: string;
  readonly manifest: Manifest;
  readonly manifestSha256: string;
  readonly objects: ObjectsDocument;
  readonly values: unknown;
}

/** Pass one: everything checked that can be without a cluster. */
export async function scanArchive(path: string, signal?: AbortSignal): Promise<Scanned> {
  const info = await stat(path).catch(() => undefined);
  if (info?.isFile() !== true) throw new TheseusError("not_found", `${path} does not exist or is not a file`, { hint: "name the .tgz that `theseus export -o` wrote" });
  let manifestText: string | undefined;
  let objectsText: string | undefined;
  let valuesText: string | undefined;
  let chart = "";
  const files = new Map<string, { sha256: string; bytes: number }>();
  for await (const entry of readArchive(path, signal)) {
    chart = entry.chart;
    if (entry.name === "data/manifest.json") manifestText = (await readSmall(entry.stream, SMALL_FILE_BYTES, "data/manifest.json")).toString("utf8");
    else if (entry.name === "data/objects.json") objectsText = (await readSmall(entry.stream, SMALL_FILE_BYTES, "data/objects.json")).toString("utf8");
    else if (entry.name === "values.yaml") valuesText = (await readSmall(entry.stream, SMALL_FILE_BYTES, "values.yaml")).toString("utf8");
    else if (entry.name.startsWith("data/claims/") && entry.type === "file") files.set(entry.name, await sha256Of(entry.stream));
  }
  const refuse = (why: string): TheseusError => new TheseusError("data_loss", `${path} is refused: ${why}`, { hint: "the archive is damaged, truncated or altered: export it again" });
  if (manifestText === undefined || objectsText === undefined) throw refuse("it has no data/manifest.json or data/objects.json (not a fat chart, or truncated)");
  const manifest = parseManifest(manifestText, path);
  const objects = parseObjects(objectsText, path);
  for (const claim of manifest.claims) {
    if (claim.data === undefined) continue;
    const found = files.get(claim.data.file);
    if (found === undefined) throw refuse(`the data of claim ${claim.name} (${claim.data.file}) is missing`);
    if (found.bytes !== claim.data.fileBytes || found.sha256 !== claim.data.sha256) {
      throw refuse(`the data of claim ${claim.name} is not what was exported (${found.bytes} bytes, sha256 ${found.sha256.slice(0, 16)}…; the manifest says ${claim.data.fileBytes} bytes, ${claim.data.sha256.slice(0, 16)}…)`);
    }
    files.delete(claim.data.file);
  }
  if (files.size > 0) throw refuse(`it holds volume data the manifest does not name (${[...files.keys()].join(", ").slice(0, 200)})`);
  let values: unknown = {};
  try {
    values = valuesText === undefined ? {} : (parse(valuesText) as unknown) ?? {};
  } catch (error) {
    throw new TheseusError("invalid_argument", `${path}: its values.yaml is not YAML`, { cause: error, hint: "fix the chart's values.yaml, or export again" });
  }
  return { chart, manifest, manifestSha256: createHash("sha256").update(manifestText).digest("hex"), objects, values };
}

/** The values of an import: the chart's values.yaml, then --set in order, then --to-namespace and --storage-class. */
export function importValues(scanned: Scanned, request: Pick<ImportRequest, "sets" | "toNamespace" | "storageClasses">): ChartValues {
  const raw = structuredClone(scanned.values) as Record<string, unknown>;
  for (const assignment of request.sets) setValue(raw, assignment);
  if (request.toNamespace !== undefined) raw["namespace"] = request.toNamespace;
  if (request.storageClasses.size > 0) {
    const classes = (typeof raw["storageClasses"] === "object" && raw["storageClasses"] !== null ? raw["storageClasses"] : {}) as Record<string, unknown>;
    for (const [from, to] of request.storageClasses) classes[from] = to;
    raw["storageClasses"] = classes;
  }
  return validateValues(raw, "the import's values");
}

export async function importApp(request: ImportRequest): Promise<ImportResult> {
  const { signal, to, tls } = request;
  const journalDir = request.journalDir ?? importsDir();
  const scanned = await scanArchive(request.archive, signal);
  const { manifest } = scanned;
  const values = importValues(scanned, request);
  const namespace = values.namespace === "" ? manifest.source.namespace : values.namespace;
  const id = importId(scanned.manifestSha256, to.name, namespace);
  const withData = manifest.claims.filter((c) => c.data !== undefined);
  request.onEvent?.({ type: "checked", claims: withData.length, bytes: withData.reduce((n, c) => n + (c.data?.bytes ?? 0), 0) });

  let journal = await readJournal(id, journalDir);
  if (journal?.phase === "done") {
    throw new TheseusError("already_exists", `this archive was imported into ${namespace} on ${to.name} already (import ${id})`, {
      hint: `undo it first with \`theseus import ${request.archive} --to ${to.name} --to-namespace ${namespace} --undo\`, or import into another namespace`,
    });
  }
  if (journal !== undefined) request.onEvent?.({ type: "resuming", phase: journal.phase });

  // Plan against the target: the objects with the values in place, the archive as the "source".
  const objects = applyValues(scanned.objects.objects, values);
  const inventory: Inventory = { cluster: manifest.source.cluster, serverVersion: manifest.source.serverVersion, objects, claims: claimsOf(manifest), resources: scanned.objects.resources, warnings: [] };
  const options: PlanOptions = {
    sourceNamespace: manifest.source.namespace,
    targetNamespace: namespace,
    storageClasses: new Map(),
    imageRegistries: new Map(),
    replicas: new Map(),
    routeHosts: new Map(),
    rules: [],
    rewriteServiceDns: true,
    keepNodePorts: false,
    onConflict: "fail",
    migrationId: id,
  };
  const facts = await describeTarget(to, namespace, planLookups(inventory, options), tls, signal);
  const plan = buildPlan(inventory, facts, options);
  const warnings = plan.problems.filter((p) => p.severity === "warning").map((p) => p.message);
  if (planErrors(plan).length > 0) {
    // stagePlan refuses it with every error and writes nothing; the journal is not started.
    await stagePlan({ to, plan, migrationId: id, onConflict: "fail", tls, ...(signal === undefined ? {} : { signal }) });
  }
  throwIfAborted(signal);

  const save = async (next: Omit<ImportJournal, "updatedAt">): Promise<ImportJournal> => (journal = await writeJournal(next, journalDir));
  journal ??= await save({ id, archive: request.archive, target: to.name, namespace, phase: "planned", volumes: {}, restored: [] });
  const staged = await stagePlan({ to, plan, migrationId: id, onConflict: "fail", tls, ...(signal === undefined ? {} : { signal }) });
  journal = await save({ ...journal, phase: journal.phase === "planned" ? "staged" : journal.phase, volumes: Object.fromEntries(staged.claims.map((c) => [c.name, c.volume])) });
  request.onEvent?.({ type: "staged", objects: staged.objects.length });

  const pending = withData.filter((c) => !(journal?.restored ?? []).includes(c.name));
  if (pending.length > 0) {
    try {
      await restoreVolumes(request, scanned, journal, pending.map((c) => c.name), async (claim) => {
        journal = await save({ ...(journal as ImportJournal), restored: [...(journal?.restored ?? []), claim] });
      });
    } catch (error) {
      const e = TheseusError.from(error);
      if (e.code === "data_loss" || e.code === "protocol" || e.code === "resource_exhausted" || e.code === "invalid_argument") {
        // The archive itself is refused: nothing of it may stay, so the staging goes too.
        await unstageMigration({ to, namespace, migrationId: id, tls });
        await removeJournal(id, journalDir);
        throw new TheseusError(e.code, `${e.message} (the import was undone: nothing of it is left on ${to.name})`, { cause: error, hint: e.hint });
      }
      throw new TheseusError(e.code, e.message, {
        cause: error,
        hint: `${e.hint === undefined ? "" : `${e.hint}; then `}run the same command again to resume import ${id}, or add --undo to remove what it staged`,
      });
    }
  }
  journal = await save({ ...journal, phase: "restored" });

  const client = dialAgent(to, tls);
  try {
    const activated = await client.activate({ migrationId: id, namespace, waitReady: true, timeoutSeconds: request.readyTimeoutSeconds ?? 300 }, signal === undefined ? {} : { signal });
    request.onEvent?.({ type: "activated", workloads: activated.activated.length });
  } finally {
    client.close();
  }
  journal = await save({ ...journal, phase: "done" });
  return { id, namespace, objects: staged.objects.length, restored: journal.restored, warnings };
}

/** Pass two: each pending claim's file streamed to the target agent's ImportVolume as it comes past. */
async function restoreVolumes(request: ImportRequest, scanned: Scanned, journal: ImportJournal, pending: readonly string[], onRestored: (claim: string) => Promise<void>): Promise<void> {
  const byFile = new Map(scanned.manifest.claims.filter((c) => c.data !== undefined && pending.includes(c.name)).map((c) => [c.data?.file ?? "", c]));
  const client = dialAgent(request.to, request.tls);
  try {
    for await (const entry of readArchive(request.archive, request.signal)) {
      const claim = byFile.get(entry.name);
      const data = claim?.data;
      if (claim === undefined || data === undefined) continue;
      const volume = journal.volumes[claim.name];
      if (volume === undefined) throw new TheseusError("internal", `staging returned no claim ${claim.name}`, { hint: "the plan and the staging disagree; report this" });
      let sent = 0;
      const ref: string = volume;
      async function* messages() {
        yield { item: { case: "header" as const, value: { migrationId: journal.id, volume: ref, digest: data?.digest ?? "", maxTarBytes: BigInt(data?.tarBytes ?? 0), maxEntries: BigInt(Math.max(1, data?.entries ?? 0)) } } };
        let batch: Buffer[] = [];
        let size = 0;
        for await (const chunk of entry.stream) {
          batch.push(chunk);
          size += chunk.length;
          if (size >= CHUNK_BYTES) {
            yield { item: { case: "data" as const, value: Buffer.concat(batch) } };
            sent += size;
            request.onEvent?.({ type: "volume", claim: claim?.name ?? "", bytes: Math.round((sent / Math.max(1, data?.fileBytes ?? 1)) * (data?.bytes ?? 0)), totalBytes: data?.bytes ?? 0 });
            batch = [];
            size = 0;
          }
        }
        if (size > 0) yield { item: { case: "data" as const, value: Buffer.concat(batch) } };
      }
      const response = await client.importVolume(messages(), request.signal === undefined ? {} : { signal: request.signal });
      await onRestored(claim.name);
      request.onEvent?.({ type: "volume-done", claim: claim.name, entries: Number(response.summary?.entries ?? 0), bytes: Number(response.summary?.bytes ?? 0) });
      byFile.delete(entry.name);
    }
  } finally {
    client.close();
  }
  if (byFile.size > 0) throw new TheseusError("data_loss", `${request.archive} changed since it was checked: the data of ${[...byFile.values()].map((c) => c.name).join(", ")} is gone`, { hint: "do not change the archive while it is imported; run the import again" });
}

/** Undoes an import: removes what it staged on the target, and its journal. */
export async function undoImport(request: Pick<ImportRequest, "archive" | "to" | "toNamespace" | "sets" | "storageClasses" | "tls" | "signal" | "journalDir">): Promise<{ id: string; namespace: string; removed: number }> {
  const scanned = await scanArchive(request.archive, request.signal);
  const values = importValues(scanned, request);
  const namespace = values.namespace === "" ? scanned.manifest.source.namespace : values.namespace;
  const id = importId(scanned.manifestSha256, request.to.name, namespace);
  const removed = await unstageMigration({ to: request.to, namespace, migrationId: id, tls: request.tls, ...(request.signal === undefined ? {} : { signal: request.signal }) });
  await removeJournal(id, request.journalDir ?? importsDir());
  return { id, namespace, removed: removed.length };
}

/** Deterministic, so that the same command resumes: a label value (at most 63 characters). */
function importId(manifestSha256: string, target: string, namespace: string): string {
  return `import-${createHash("sha256").update(`${manifestSha256}\0${target}\0${namespace}`).digest("hex").slice(0, 20)}`;
}
