// Volume access without a cluster: used bytes as du counts them (hard links once, symbolic links not followed, an
// entry bound), and volume references that are claims ("NAMESPACE/CLAIM") beside static names.
import { link, mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import anyTest from "ava";
import type { TestFn } from "ava";
import { measureUsedBytes } from "../agent/cluster/index.js";
import { VolumeRegistry } from "../agent/volumes.js";
import { TheseusError } from "../common/index.js";

const test = anyTest as TestFn<{ dir: string }>;

test.before(async (t) => {
  t.context.dir = await mkdtemp(join(tmpdir(), "theseus-volume-access-"));
});

test.after.always(async (t) => {
  await rm(t.context.dir, { recursive: true, force: true });
});

test("used bytes count a hard-linked file once and never follow a symbolic link; a huge tree stops at the bound", async (t) => {
  const root = join(t.context.dir, "volume");
  const outside = join(t.context.dir, "outside.bin");
  await mkdir(join(root, "a", "b"), { recursive: true });
  await writeFile(join(root, "a", "data.bin"), Buffer.alloc(256 * 1024, 1));
  await writeFile(outside, Buffer.alloc(1024 * 1024, 2));
  const before = await measureUsedBytes(root);
  t.true(before.complete);
  t.true(before.bytes >= 256 * 1024, `${before.bytes} bytes for a 256 KiB file`);
  await link(join(root, "a", "data.bin"), join(root, "a", "b", "same.bin"));
  await symlink(outside, join(root, "outside"));
  const after = await measureUsedBytes(root);
  t.true(after.bytes - before.bytes < 64 * 1024, "neither the hard link nor the symlink's target counts again");
  const bounded = await measureUsedBytes(root, undefined, 2);
  t.false(bounded.complete);
  const aborted = AbortSignal.abort();
  await t.throwsAsync(measureUsedBytes(root, aborted), { instanceOf: TheseusError, message: /cancelled/ });
});

test("a volume reference is a static name or NAMESPACE/CLAIM; claims need a cluster", async (t) => {
  const registry = new VolumeRegistry(new Map([["data", t.context.dir]]));
  t.is(await registry.root("data"), t.context.dir);
  const unknown = await t.throwsAsync(registry.root("logs"), { instanceOf: TheseusError });
  t.is(unknown?.code, "not_found");
  t.regex(unknown?.hint ?? "", /NAMESPACE\/CLAIM/);
  const claim = await t.throwsAsync(registry.root("shop/data-db-0"), { instanceOf: TheseusError });
  t.is(claim?.code, "failed_precondition");
  t.regex(claim?.hint ?? "", /--kubeconfig/);
  for (const bad of ["shop/a/b", "Shop/data", "shop/"]) {
    t.is((await t.throwsAsync(registry.root(bad), { instanceOf: TheseusError }))?.code, "invalid_argument", bad);
  }
});
