// The volume archive of a fat chart, without a cluster: what `theseus export` packs is what an import restores (files,
// modes, symbolic links, empty directories; the digest equal), and every hostile archive is refused with nothing left
// in the volume and nothing written outside it: a path out of the volume (".." and absolute), a hard link, a link
// pointing out, a write through a link, a device, an entry replacing another, an unordered archive, a bomb (more
// bytes or entries than the manifest allows), a truncated stream, and a digest that differs.
import { lstat, mkdir, mkdtemp, readFile, readdir, readlink, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import anyTest from "ava";
import type { TestFn } from "ava";
import { pack as tarPack } from "tar-stream";
import type { Header } from "tar-stream";
import { compress } from "zstd-napi";
import { packVolume, restoreVolume } from "../agent/archive/index.js";
import type { ArchiveSummary } from "../agent/archive/index.js";
import { TheseusError } from "../common/index.js";

interface Context {
  base: string;
}
const test = anyTest as TestFn<Context>;

test.beforeEach(async (t) => {
  t.context.base = await mkdtemp(join(tmpdir(), "theseus-fatchart-archive-"));
});
test.afterEach.always(async (t) => {
  await rm(t.context.base, { recursive: true, force: true });
});

async function packed(root: string): Promise<{ chunks: Buffer[]; summary: ArchiveSummary }> {
  const chunks: Buffer[] = [];
  let summary: ArchiveSummary | undefined;
  for await (const event of packVolume(root)) {
    if (event.type === "data") chunks.push(event.data);
    else if (event.type === "done") summary = event.summary;
  }
  if (summary === undefined) throw new Error("no summary");
  return { chunks, summary };
}

async function* feed(chunks: readonly Buffer[]): AsyncGenerator<Buffer> {
  for (const chunk of chunks) yield chunk;
}

/** A hand-made tar (as a hostile exporter would write it), zstd-compressed. */
async function hostileArchive(entries: readonly (Partial<Header> & { name: string; body?: string })[]): Promise<Buffer> {
  const pack = tarPack();
  const parts: Buffer[] = [];
  const collecting = (async () => {
    for await (const chunk of pack as AsyncIterable<Buffer>) parts.push(chunk);
  })();
  for (const { body, ...header } of entries) {
    await new Promise<void>((resolve, reject) => pack.entry(header, body ?? "", (error) => (error ? reject(error) : resolve())));
  }
  pack.finalize();
  await collecting;
  return compress(Buffer.concat(parts));
}

const LIMITS = { maxTarBytes: 1 << 20, maxEntries: 100, maxBytes: 1 << 20 };
const ANY_DIGEST = "0".repeat(64);

async function volumeAndOutside(t: { context: Context }): Promise<{ root: string; outside: string }> {
  const outside = join(t.context.base, "outside");
  const root = join(t.context.base, "pv", "volume");
  await mkdir(outside, { recursive: true });
  await mkdir(root, { recursive: true });
  return { root, outside };
}

test("what is packed is restored: contents, modes, symbolic links, empty directories, and the same digest", async (t) => {
  const src = join(t.context.base, "src");
  const dst = join(t.context.base, "dst");
  await mkdir(join(src, "a/b"), { recursive: true });
  await mkdir(join(src, "empty"), { mode: 0o750 });
  await mkdir(dst);
  await writeFile(join(src, "a/b/notes.txt"), "hello\n", { mode: 0o640 });
  await writeFile(join(src, "big.bin"), Buffer.alloc(3 * 1024 * 1024 + 17, 0xab));
  await writeFile(join(src, "script.sh"), "#!/bin/sh\n", { mode: 0o755 });
  await symlink("b/notes.txt", join(src, "a/link"));
  await writeFile(join(dst, "stale"), "from before"); // the volume is emptied first
  const { chunks, summary } = await packed(src);
  t.is(summary.entries, 7);
  t.is(summary.bytes, 6 + 3 * 1024 * 1024 + 17 + 10);
  const restored = await restoreVolume(dst, feed(chunks), { digest: summary.digest, maxTarBytes: summary.tarBytes, maxEntries: summary.entries, maxBytes: summary.bytes });
  t.is(restored.digest, summary.digest);
  t.deepEqual((await readdir(dst)).sort(), ["a", "big.bin", "empty", "script.sh"]);
  t.is(await readFile(join(dst, "a/b/notes.txt"), "utf8"), "hello\n");
  t.true((await readFile(join(dst, "big.bin"))).equals(Buffer.alloc(3 * 1024 * 1024 + 17, 0xab)));
  t.is((await stat(join(dst, "a/b/notes.txt"))).mode & 0o777, 0o640);
  t.is((await stat(join(dst, "script.sh"))).mode & 0o777, 0o755);
  t.is((await stat(join(dst, "empty"))).mode & 0o777, 0o750);
  t.is(await readlink(join(dst, "a/link")), "b/notes.txt");
});

const hostile: [string, (Partial<Header> & { name: string; body?: string })[], RegExp][] = [
  ["a path out of the volume with ..", [{ name: "../escaped", body: "x" }], /'\.\.' component/],
  ["a deeper path out with ..", [{ name: "d/", type: "directory" }, { name: "d/../../escaped", body: "x" }], /'\.\.' component/],
  ["an absolute path", [{ name: "/tmp/escaped", body: "x" }], /absolute path/],
  ["a hard link", [{ name: "f", body: "x" }, { name: "h", type: "link", linkname: "../outside/target" }], /hard link/],
  ["a symbolic link to an absolute path", [{ name: "l", type: "symlink", linkname: "/etc" }], /absolute path/],
  ["a symbolic link pointing out", [{ name: "d/", type: "directory" }, { name: "d/l", type: "symlink", linkname: "../../outside" }], /pointing out/],
  ["a write through a link inside the volume", [{ name: "d/", type: "directory" }, { name: "l", type: "symlink", linkname: "d" }, { name: "l/f", body: "x" }], /not inside a directory/],
  ["a character device", [{ name: "null", type: "character-device", devmajor: 1, devminor: 3 }], /character-device/],
  ["a fifo", [{ name: "pipe", type: "fifo" }], /fifo/],
  ["an entry replacing another", [{ name: "f", body: "one" }, { name: "f", body: "two" }], /replaces an entry/],
  ["a file before its directory", [{ name: "later/f", body: "x" }, { name: "later/", type: "directory" }], /not inside a directory/],
];

for (const [what, entries, message] of hostile) {
  test(`refused, nothing kept, nothing outside: ${what}`, async (t) => {
    const { root, outside } = await volumeAndOutside(t);
    const archive = await hostileArchive(entries);
    const error = await t.throwsAsync(restoreVolume(root, feed([archive]), { ...LIMITS, digest: ANY_DIGEST }));
    t.true(error instanceof TheseusError);
    t.is((error as TheseusError).code, "protocol");
    t.regex(error?.message ?? "", message);
    t.deepEqual(await readdir(root), [], "the volume is left empty");
    t.deepEqual(await readdir(outside), [], "nothing was written outside the volume");
    t.deepEqual((await readdir(join(root, ".."))).sort(), ["volume"]);
    await t.throwsAsync(lstat("/tmp/escaped"));
  });
}

test("a bomb is stopped at the manifest's bounds: more decompressed bytes, more file bytes, more entries", async (t) => {
  const { root } = await volumeAndOutside(t);
  const big = await hostileArchive([{ name: "zeros", body: "\0".repeat(4 * 1024 * 1024) }]);
  t.true(big.length < 4096, "a small input…");
  const bytes = await t.throwsAsync(restoreVolume(root, feed([big]), { ...LIMITS, digest: ANY_DIGEST }));
  t.is((bytes as TheseusError).code, "resource_exhausted");
  t.regex(bytes?.message ?? "", /more than the 1048576 bytes/);
  const many = await hostileArchive(Array.from({ length: 101 }, (_, i) => ({ name: `f${i}`, body: "" })));
  const entries = await t.throwsAsync(restoreVolume(root, feed([many]), { ...LIMITS, digest: ANY_DIGEST }));
  t.is((entries as TheseusError).code, "resource_exhausted");
  t.regex(entries?.message ?? "", /more than the 100 entries/);
  t.deepEqual(await readdir(root), []);
});

test("a truncated archive and one whose digest differs are refused as data loss, the volume left empty", async (t) => {
  const src = join(t.context.base, "src");
  await mkdir(src);
  await writeFile(join(src, "data.bin"), Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7919) % 251)));
  await writeFile(join(src, "small"), "abc");
  const { chunks, summary } = await packed(src);
  const whole = Buffer.concat(chunks);
  const { root } = await volumeAndOutside(t);
  const limits = { digest: summary.digest, maxTarBytes: summary.tarBytes, maxEntries: summary.entries, maxBytes: summary.bytes };
  const truncated = await t.throwsAsync(restoreVolume(root, feed([whole.subarray(0, Math.floor(whole.length / 2))]), limits));
  t.is((truncated as TheseusError).code, "data_loss");
  t.regex(truncated?.message ?? "", /truncated|well-formed/);
  t.deepEqual(await readdir(root), []);
  const flipped = Buffer.from(whole);
  const middle = Math.floor(flipped.length / 2);
  flipped[middle] = (flipped[middle] ?? 0) ^ 0xff;
  const corrupt = await t.throwsAsync(restoreVolume(root, feed([flipped]), limits));
  t.is((corrupt as TheseusError).code, "data_loss");
  t.deepEqual(await readdir(root), []);
  // A well-formed archive of other content: caught by the digest of what landed.
  const other = await hostileArchive([{ name: "small", body: "abd", mode: 0o644 }]);
  const mismatch = await t.throwsAsync(restoreVolume(root, feed([other]), limits));
  t.is((mismatch as TheseusError).code, "data_loss");
  t.regex(mismatch?.message ?? "", /digest/);
  t.deepEqual(await readdir(root), []);
});
