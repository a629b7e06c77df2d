// The coordinator's config file (THESEUS_HOME/config.yaml). Read through yaml's Document so that every validation
// error can name the file, the line and the key, and so that writes keep the user's comments. Writes are atomic (a
// temp file in the same directory, then rename) and serialised by a lock file, so two `theseus local up` running at
// once cannot lose each other's registration and a reader never sees half a file.
import { randomBytes } from "node:crypto";
import { mkdir, open, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import { Document, LineCounter, isMap, isScalar, parseDocument } from "yaml";
import type { Node as YamlNode } from "yaml";
import { TheseusError, sleep, systemErrorCode } from "../../common/index.js";

const LOCK_WAIT_MS = 10_000;
/** A lock older than this was left by a process that died mid-write (a write takes milliseconds). */
const LOCK_STALE_MS = 30_000;
const LOCK_POLL_MS = 50;

/** The parsed file: its document (for edits that keep comments) and a way to point at a key in messages. */
export interface ConfigText {
  readonly path: string;
  readonly doc: Document;
  /** "FILE:LINE" of the node at `keys` (or of its nearest existing parent). */
  where(keys: readonly (string | number)[]): string;
}

export async function readConfigText(path: string): Promise<ConfigText> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    if (systemErrorCode(error) !== "ENOENT") throw TheseusError.from(error);
    return { path, doc: new Document({}), where: () => path };
  }
  const lines = new LineCounter();
  const doc: Document = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  const [first] = doc.errors;
  if (first !== undefined) {
    const line = lines.linePos(first.pos[0]).line;
    throw new TheseusError("invalid_argument", `${path}:${line}: not valid YAML: ${first.message.split("\n")[0] ?? ""}`, {
      hint: `fix the YAML syntax in ${path}, or delete the file to start over (registered agents are lost)`,
    });
  }
  if (doc.contents === null) doc.contents = doc.createNode({});
  return {
    path,
    doc,
    where(keys) {
      // The line of the key itself (a mapping's value may start lines below it), else of the nearest parent.
      for (let n = keys.length; n >= 0; n--) {
        const parent = n === 0 ? undefined : n === 1 ? doc.contents : doc.getIn(keys.slice(0, n - 1), true);
        const pair = isMap(parent) ? parent.items.find((p) => isScalar(p.key) && p.key.value === keys[n - 1]) : undefined;
        const node = n === 0 ? doc.contents : ((pair?.key as YamlNode | undefined) ?? doc.getIn(keys.slice(0, n), true));
        const range = (node as YamlNode | undefined)?.range;
        if (range !== undefined && range !== null) return `${path}:${lines.linePos(range[0]).line}`;
      }
      return path;
    },
  };
}

/** Applies `edit` to the current file under the lock and writes the result atomically. */
export async function updateConfigText<T>(path: string, edit: (config: ConfigText) => T): Promise<T> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const release = await lock(`${path}.lock`);
  try {
    const config = await readConfigText(path);
    const result = edit(config);
    if (!isMap(config.doc.contents)) throw new TheseusError("internal", `${path}: the document lost its top-level mapping`);
    const tmp = `${path}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
    try {
      await writeFile(tmp, config.doc.toString(), { mode: 0o600, flush: true });
      await rename(tmp, path);
    } catch (error) {
      await rm(tmp, { force: true });
      throw TheseusError.from(error);
    }
    return result;
  } finally {
    await release();
  }
}

async function lock(path: string): Promise<() => Promise<void>> {
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      const handle = await open(path, "wx", 0o600);
      await handle.close();
      return () => rm(path, { force: true });
    } catch (error) {
      if (systemErrorCode(error) !== "EEXIST") throw TheseusError.from(error);
    }
    const age = await stat(path).then((s) => Date.now() - s.mtimeMs, () => 0);
    if (age > LOCK_STALE_MS) {
      await rm(path, { force: true });
      continue;
    }
    if (Date.now() > deadline) {
      throw new TheseusError("unavailable", `${path} has been locked for ${LOCK_WAIT_MS / 1000} s`, {
        hint: `another theseus command is changing the config; if none runs, delete ${path}`,
      });
    }
    await sleep(LOCK_POLL_MS);
  }
}
