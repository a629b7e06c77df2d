// The fat chart's file: one gzip tar holding the chart directory NAME/ and, inside it, data/ (which .helmignore keeps
// out of Helm): manifest.json, objects.json and claims/CLAIM.tar.zst. Written from files spooled beside the output
// (a tar header needs each entry's size first), renamed into place when complete; read as a stream, never whole.
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { rename, rm, stat } from "node:fs/promises";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip, createGzip } from "node:zlib";
import { extract as tarExtract, pack as tarPack } from "tar-stream";
import type { Pack } from "tar-stream";
import type { ClaimInfo, KubeObject, ServedResource } from "../../app-model/index.js";
import { TheseusError } from "../../common/index.js";
import type { ChartFile } from "./chart.js";

export const FORMAT = "theseus.io/fat-chart/v1";

export interface ManifestClaim {
  readonly name: string;
  readonly storageClass: string;
  readonly requestedBytes: number;
  readonly capacityBytes: number;
  readonly accessModes: readonly string[];
  /** Absent when exported with --no-data or when the claim was not bound (no data to take). */
  readonly data?: {
    /** Relative to the chart directory: data/claims/NAME.tar.zst. */
    readonly file: string;
    /** Of the file (the compressed tar). */
    readonly sha256: string;
    readonly fileBytes: number;
    /** The agents' content digest of the volume (what the restored volume must have). */
    readonly digest: string;
    readonly entries: number;
    readonly bytes: number;
    readonly tarBytes: number;
  };
}

export interface Manifest {
  readonly format: typeof FORMAT;
  readonly chart: string;
  readonly exportedAt: string;
  readonly source: { readonly cluster: string; readonly namespace: string; readonly serverVersion: string };
  readonly quiesced: boolean;
  readonly claims: readonly ManifestClaim[];
}

export interface ObjectsDocument {
  /** As planned into the source namespace: sanitised, not rewritten. */
  readonly objects: readonly KubeObject[];
  readonly resources: readonly ServedResource[];
}

export interface SpooledClaim {
  readonly claim: string;
  readonly path: string;
}

/** Writes the archive to `out` (through `out.partial`, renamed when complete). */
export async function writeArchive(out: string, chart: string, files: readonly ChartFile[], manifest: Manifest, objects: ObjectsDocument, spooled: readonly SpooledClaim[]): Promise<void> {
  const partial = `${out}.partial`;
  const pack = tarPack();
  const writing = pipeline(pack as unknown as Readable, createGzip({ level: 1 }), createWriteStream(partial, { mode: 0o600 }));
  try {
    const mtime = new Date(manifest.exportedAt);
    const add = (name: string, content: string | Buffer): Promise<void> =>
      new Promise((resolve, reject) => pack.entry({ name: `${chart}/${name}`, mode: 0o644, mtime }, content, (error) => (error ? reject(error) : resolve())));
    for (const dir of ["", "templates/", "crds/", "data/", "data/claims/"]) {
      await new Promise<void>((resolve, reject) => pack.entry({ name: `${chart}/${dir}`, type: "directory", mode: 0o755, mtime }, (error) => (error ? reject(error) : resolve())));
    }
    for (const file of files) await add(file.path, file.content);
    await add("data/manifest.json", `${JSON.stringify(manifest, null, 2)}\n`);
    await add("data/objects.json", `${JSON.stringify(objects)}\n`);
    for (const claim of spooled) await addFile(pack, `${chart}/data/claims/${claim.claim}.tar.zst`, claim.path, mtime);
    pack.finalize();
    await writing;
    await rename(partial, out);
  } catch (error) {
    pack.destroy(error instanceof Error ? error : new Error(String(error)));
    await writing.catch(() => undefined);
    await rm(partial, { force: true });
    throw error;
  }
}

async function addFile(pack: Pack, name: string, path: string, mtime: Date): Promise<void> {
  const size = (await stat(path)).size;
  await new Promise<void>((resolve, reject) => {
    const sink = pack.entry({ name, size, mode: 0o644, mtime }, (error) => (error ? reject(error) : resolve()));
    pipeline(createReadStream(path), sink as unknown as NodeJS.WritableStream).catch(reject);
  });
}

/** One entry of the archive as it streams past: its name inside the chart directory and its bytes. */
export interface ArchiveEntry {
  readonly name: string;
  readonly size: number;
  readonly type: string;
  /** Must be consumed (or `skip`ped) before the next entry. */
  readonly stream: AsyncIterable<Buffer>;
}

const corrupt = (path: string, why: string, cause?: unknown): TheseusError =>
  new TheseusError("data_loss", `${path} is not a readable fat chart: ${why}`, { cause, hint: "the file is damaged or truncated, or not made by `theseus export`: export it again" });

/** Streams the archive's entries; names are relative to the chart directory (which must be the only top level). */
export async function* readArchive(path: string, signal?: AbortSignal): AsyncGenerator<ArchiveEntry & { chart: string }> {
  const extract = tarExtract();
  let failure: unknown;
  const feeding = pipeline(createReadStream(path), createGunzip(), extract, ...(signal === undefined ? [] : [{ signal }] as const)).catch((error: unknown) => {
    failure = error;
  });
  let chart: string | undefined;
  try {
    for await (const entry of extract) {
      const name = entry.header.name;
      const slash = name.indexOf("/");
      const top = slash < 0 ? name : name.slice(0, slash);
      chart ??= top;
      if (top !== chart || top === "" || top === "." || top === "..") throw corrupt(path, `it has entries outside one chart directory (${name.slice(0, 120)})`);
      const rest = slash < 0 ? "" : name.slice(slash + 1);
      yield { chart, name: rest, size: entry.header.size, type: entry.header.type, stream: mapped(entry as AsyncIterable<Buffer>) };
      entry.resume();
    }
  } catch (error) {
    extract.destroy();
    await feeding;
    if (error instanceof TheseusError) throw error;
    throw corrupt(path, failure instanceof Error ? failure.message : error instanceof Error ? error.message : "unreadable", failure ?? error);
  }
  await feeding;
  if (failure !== undefined) throw corrupt(path, failure instanceof Error ? failure.message : "unreadable", failure);
  if (chart === undefined) throw corrupt(path, "it is empty");

  // An entry's bytes fail when the file does (cut short, corrupt gzip): said as the archive's fault, not an internal one.
  async function* mapped(stream: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
    try {
      yield* stream;
    } catch (error) {
      if (error instanceof TheseusError) throw error;
      const cause = failure ?? error;
      throw corrupt(path, cause instanceof Error ? cause.message : "unreadable", cause);
    }
  }
}

export async function readSmall(stream: AsyncIterable<Buffer>, limitBytes: number, what: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    size += chunk.length;
    if (size > limitBytes) throw new TheseusError("resource_exhausted", `${what} is larger than ${limitBytes} bytes`, { hint: "the archive was tampered with" });
    parts.push(chunk);
  }
  return Buffer.concat(parts);
}

export async function sha256Of(stream: AsyncIterable<Buffer>): Promise<{ sha256: string; bytes: number }> {
  const hash = createHash("sha256");
  let bytes = 0;
  for await (const chunk of stream) {
    hash.update(chunk);
    bytes += chunk.length;
  }
  return { sha256: hash.digest("hex"), bytes };
}

/** The manifest's claims as the plan's ClaimInfo (the data's size as used bytes, so capacity checks hold). */
export function claimsOf(manifest: Manifest): ClaimInfo[] {
  return manifest.claims.map((c) => ({
    namespace: manifest.source.namespace,
    name: c.name,
    storageClass: c.storageClass,
    requestedBytes: c.requestedBytes,
    capacityBytes: c.capacityBytes,
    usedBytes: c.data?.bytes ?? 0,
    volumeName: "",
    accessModes: [...c.accessModes],
    access: "archive",
    reason: "",
    volume: `${manifest.source.namespace}/${c.name}`,
  }));
}

const CLAIM_NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

/** Checks a manifest read from an archive: its form, and that every data file name is one the writer makes. */
export function parseManifest(text: string, path: string): Manifest {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw corrupt(path, "its data/manifest.json is not JSON", error);
  }
  const m = value as Partial<Manifest> | null;
  if (m === null || typeof m !== "object" || m.format !== FORMAT) throw corrupt(path, `its manifest is not of format ${FORMAT}`);
  if (typeof m.source?.namespace !== "string" || typeof m.source.cluster !== "string" || !Array.isArray(m.claims)) throw corrupt(path, "its manifest lacks the source or the claims");
  const seen = new Set<string>();
  for (const c of m.claims as readonly Partial<ManifestClaim>[]) {
    if (typeof c.name !== "string" || !CLAIM_NAME.test(c.name) || seen.has(c.name)) throw corrupt(path, `its manifest names a claim "${String(c.name).slice(0, 80)}" that is not a claim name, or twice`);
    seen.add(c.name);
    if (c.data !== undefined) {
      const d: Partial<NonNullable<ManifestClaim["data"]>> = c.data;
      if (d.file !== `data/claims/${c.name}.tar.zst` || !/^[0-9a-f]{64}$/.test(d.sha256 ?? "") || !/^[0-9a-f]{64}$/.test(d.digest ?? "")) throw corrupt(path, `its manifest's data of claim ${c.name} is malformed`);
      for (const n of [d.fileBytes, d.entries, d.bytes, d.tarBytes]) if (n === undefined || !Number.isSafeInteger(n) || n < 0) throw corrupt(path, `its manifest's sizes of claim ${c.name} are malformed`);
    }
  }
  return m as Manifest;
}

export function parseObjects(text: string, path: string): ObjectsDocument {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw corrupt(path, "its data/objects.json is not JSON", error);
  }
  const doc = value as Partial<ObjectsDocument> | null;
  if (doc === null || typeof doc !== "object" || !Array.isArray(doc.objects) || !Array.isArray(doc.resources)) throw corrupt(path, "its data/objects.json lacks objects or resources");
  for (const o of doc.objects as readonly Partial<KubeObject>[]) {
    if (typeof o !== "object" || o === null || typeof o.kind !== "string" || typeof o.apiVersion !== "string" || typeof o.metadata !== "object") throw corrupt(path, "its data/objects.json holds something that is not a Kubernetes object");
  }
  return doc as ObjectsDocument;
}
