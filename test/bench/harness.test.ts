// The benchmark's own guarantees: the same seed gives the same bytes (else runs and machines are not comparable), the
// mutation changes exactly what it reports, and the sync-dirs adapter reads the shapes the engine may print.
import test from "ava";
import { createHash } from "node:crypto";
import { execFile } from "node:child_process";
import { cp, mkdir, mkdtemp, readdir, readFile, readlink, rm, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import os from "node:os";
import path from "node:path";
import { ensureDataset } from "./datasets.js";
import { parseMeasured } from "./exec.js";
import { mutateTree } from "./mutate.js";
import { createPrng } from "./prng.js";
import { checkTargets, median } from "./report.js";
import type { Summary } from "./report.js";
import { readTheseusStats } from "./theseus-stats.js";

const dirs: string[] = [];
const tempDir = async (): Promise<string> => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "theseus-bench-test-"));
  dirs.push(dir);
  return dir;
};
test.after.always(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

/** Path -> sha256 (or link target) of every file under root. */
async function fingerprint(root: string): Promise<Map<string, string>> {
  const result = new Map<string, string>();
  for (const entry of await readdir(root, { recursive: true, withFileTypes: true })) {
    const full = path.join(entry.parentPath, entry.name);
    const rel = path.relative(root, full);
    if (entry.isSymbolicLink()) result.set(rel, `-> ${await readlink(full)}`);
    else if (entry.isFile()) result.set(rel, createHash("sha256").update(await readFile(full)).digest("hex"));
    else if (entry.isDirectory()) result.set(rel, "dir");
  }
  return result;
}

test("the same seed and scale generate the same tree, another seed another", async (t) => {
  const [a, b, c] = await Promise.all([tempDir(), tempDir(), tempDir()]);
  const log = (): void => {};
  const first = await ensureDataset(a, "mixed", 0.002, 7, log);
  const second = await ensureDataset(b, "mixed", 0.002, 7, log);
  const other = await ensureDataset(c, "mixed", 0.002, 8, log);
  t.true(first.files > 40);
  t.is(first.bytes, second.bytes);
  t.deepEqual(await fingerprint(first.tree), await fingerprint(second.tree));
  t.notDeepEqual(await fingerprint(first.tree), await fingerprint(other.tree));
  // A cached tree is reused, not regenerated.
  const again = await ensureDataset(a, "mixed", 0.002, 7, () => t.fail("regenerated a cached dataset"));
  t.is(again.bytes, first.bytes);
});

test("the mutation is reproducible and changes what it reports", async (t) => {
  const root = await tempDir();
  const dataset = await ensureDataset(root, "mixed", 0.002, 7, () => {});
  const [x, y] = [path.join(root, "x"), path.join(root, "y")];
  await cp(dataset.tree, x, { recursive: true, verbatimSymlinks: true });
  await cp(dataset.tree, y, { recursive: true, verbatimSymlinks: true });
  const before = await fingerprint(x);
  const reportX = await mutateTree(x, dataset, 1);
  const reportY = await mutateTree(y, dataset, 1);
  t.deepEqual(reportX, reportY);
  const after = await fingerprint(x);
  t.deepEqual(after, await fingerprint(y));

  const created = [...after.keys()].filter((k) => !before.has(k) && after.get(k) !== "dir");
  const deleted = [...before.keys()].filter((k) => !after.has(k));
  const modified = [...after.keys()].filter((k) => before.has(k) && before.get(k) !== after.get(k));
  t.is(created.length, reportX.filesCreated);
  t.is(deleted.length, reportX.filesDeleted);
  // Every large file has 1% of its pages rewritten; every appended small file changed.
  t.is(modified.length, dataset.layout.largeFiles.length + reportX.filesAppended);
  t.is(reportX.pagesRewritten, dataset.layout.largeFiles.reduce((n, f) => n + Math.max(1, Math.round(f.bytes / 4096 / 100)), 0));
  t.is(reportX.bytesChanged, reportX.pagesRewritten * 4096 + reportX.bytesAppended + reportX.bytesCreated);

  // The next round's mutation differs and passes over what round 1 deleted.
  const round2 = await mutateTree(x, dataset, 2);
  t.is(round2.filesDeleted, reportX.filesDeleted);
  t.notDeepEqual(await fingerprint(x), after);
});

test("the final-round dataset's mutation rewrites only the database's pages: the small files stay as they are", async (t) => {
  const root = await tempDir();
  const dataset = await ensureDataset(root, "final", 0.002, 7, () => {});
  t.deepEqual(dataset.layout.largeFiles.map((f) => f.path), ["db/main.db"]);
  t.is(dataset.layout.smallFiles, 40);
  const x = path.join(root, "x");
  await cp(dataset.tree, x, { recursive: true, verbatimSymlinks: true });
  const before = await fingerprint(x);
  const report = await mutateTree(x, dataset, 1);
  const after = await fingerprint(x);
  t.deepEqual([...after.keys()].sort(), [...before.keys()].sort());
  t.deepEqual([...after.keys()].filter((k) => before.get(k) !== after.get(k)), ["db/main.db"]);
  t.is(report.filesAppended + report.filesCreated + report.filesDeleted, 0);
  t.is(report.bytesChanged, report.pagesRewritten * 4096);
});

test("the final round is judged against 0.5 s, scaled with the dataset", (t) => {
  const summary = (wallMs: number): Summary => ({
    dataset: "final", case: "incremental", contender: "theseus", runs: 1, wallMs, wallMinMs: wallMs, wallMaxMs: wallMs,
    processWallMs: wallMs, wireBytes: undefined, toolWireBytes: undefined, wirePerChanged: undefined, bytesChanged: 1,
    peakRssSource: undefined, peakRssTarget: undefined, cpuSeconds: undefined,
  });
  const final = (wallMs: number, scale: number) => checkTargets([summary(wallMs)], 1, new Set(), scale).find((c) => c.target.startsWith("round <="));
  t.is(final(480, 1)?.verdict, "PASS");
  t.is(final(520, 1)?.verdict, "MISS");
  t.is(final(60, 0.1)?.verdict, "MISS");
  t.is(final(40, 0.1)?.verdict, "PASS");
});

test("the PRNG is deterministic and forks are independent of consumption", (t) => {
  const a = createPrng(42);
  const b = createPrng(42);
  a.next();
  t.deepEqual(a.fork("x").fill(Buffer.alloc(64)), b.fork("x").fill(Buffer.alloc(64)));
  t.notDeepEqual(createPrng(42).fill(Buffer.alloc(64)), createPrng(43).fill(Buffer.alloc(64)));
});

test("the sync-dirs adapter reads camelCase, snake_case and nested statistics", (t) => {
  const flat = readTheseusStats(
    `starting agents\n${JSON.stringify({ durationMs: 1200, wireBytes: 4096, bytesChanged: 100, peakRssBytes: { source: 1, target: 2 } })}\n`,
  );
  t.is(flat.durationMs, 1200);
  t.is(flat.wireBytes, 4096);
  t.is(flat.peakRssSource, 1);
  t.is(flat.peakRssTarget, 2);
  const nested = readTheseusStats(JSON.stringify({ stats: { duration_ms: 5, wire_bytes: "123", peak_rss_bytes: { source: 9 } } }, null, 2));
  t.is(nested.durationMs, 5);
  t.is(nested.wireBytes, 123);
  t.is(nested.peakRssSource, 9);
  t.is(nested.peakRssTarget, undefined);
  const logged = readTheseusStats(`${JSON.stringify({ durationMs: 7, wireBytes: 8 })}\n{"level":30,"msg":"agents stopped"}\n`);
  t.is(logged.durationMs, 7);
  t.throws(() => readTheseusStats("no json here"), { message: /no JSON object/ });
});

test("the adapter reads what the real sync-dirs prints, per-agent peak RSS included", async (t) => {
  const work = await mkdtemp(path.join(os.tmpdir(), "theseus-adapter-"));
  try {
    await mkdir(path.join(work, "src"));
    await writeFile(path.join(work, "src", "f"), "hello");
    const cli = fileURLToPath(new URL("../../coordinator/main.js", import.meta.url));
    const stdout = await new Promise<string>((resolve, reject) =>
      execFile(process.execPath, [cli, "sync-dirs", path.join(work, "src"), path.join(work, "dst"), "--json", "--state-dir", path.join(work, "state")], (error, out) => (error === null ? resolve(out) : reject(new Error(`sync-dirs failed: ${error.message}`)))),
    );
    const stats = readTheseusStats(stdout);
    t.is(stats.bytesChanged, 5);
    t.true((stats.wireBytes ?? 0) > 0);
    t.true((stats.peakRssSource ?? 0) > 1024 * 1024, "the source agent's own peak RSS");
    t.true((stats.peakRssTarget ?? 0) > 1024 * 1024, "the target agent's own peak RSS");
  } finally {
    await rm(work, { recursive: true, force: true });
  }
});

test("GNU time's report is read as peak RSS and user + system CPU, a signal notice before it or not", (t) => {
  t.deepEqual(parseMeasured("2048 1.25 0.50\n"), { peakRssBytes: 2048 * 1024, cpuSeconds: 1.75 });
  t.deepEqual(parseMeasured("Command terminated by signal 15\n1024 0.00 0.01\n"), { peakRssBytes: 1024 * 1024, cpuSeconds: 0.01 });
  t.deepEqual(parseMeasured(""), { peakRssBytes: undefined, cpuSeconds: undefined });
});

test("medians", (t) => {
  t.is(median([3, 1, 2]), 2);
  t.is(median([4, 1, 2, 3]), 2.5);
  t.is(median([]), undefined);
});
