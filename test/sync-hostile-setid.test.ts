// Issue 13 ("also found"): a source could plant setuid-root programs in the target volume when the target agent runs
// as root. The default drops set-user-ID/set-group-ID bits of files on such a target (directories keep setgid, which
// only makes new files inherit the group); THESEUS_KEEP_SETID=1 keeps them. Real agents, real mTLS.
import anyTest from "ava";
import type { TestFn } from "ava";
import fs from "node:fs";
import path from "node:path";
import type { AgentProcess } from "../coordinator/index.js";
import { copyVolume } from "../coordinator/index.js";
import { createWorld } from "./sync-hostile-helpers.js";
import type { World } from "./sync-hostile-helpers.js";

interface Context {
  world: World;
  source: AgentProcess;
  strict: AgentProcess;
  keeping: AgentProcess;
  dir: (name: string) => string;
}
const test = anyTest.serial as TestFn<Context>;
const asRoot = process.getuid?.() === 0;

test.before(async (t) => {
  const world = await createWorld("hostile-setid");
  const dir = (name: string): string => path.join(world.work, name);
  for (const d of ["src", "strict", "keeping"]) fs.mkdirSync(dir(d));
  fs.writeFileSync(path.join(dir("src"), "suid"), "#!/bin/sh\nid\n");
  fs.chmodSync(path.join(dir("src"), "suid"), 0o4755);
  fs.writeFileSync(path.join(dir("src"), "sgid"), Buffer.alloc(2 * 1024 * 1024, 1)); // a large file: the block path
  fs.chmodSync(path.join(dir("src"), "sgid"), 0o2755);
  fs.mkdirSync(path.join(dir("src"), "shared"));
  fs.chmodSync(path.join(dir("src"), "shared"), 0o2775);
  const source = await world.spawn("eu-1", { v: dir("src") });
  const strict = await world.spawn("us-2", { v: dir("strict") });
  process.env["THESEUS_KEEP_SETID"] = "1";
  const keeping = await world.spawn("us-2", { v: dir("keeping") });
  delete process.env["THESEUS_KEEP_SETID"];
  t.context = { world, source, strict, keeping, dir };
});

test.after.always(async (t) => {
  await t.context.world?.cleanup();
});

const modeOf = (p: string): number => fs.statSync(p).mode & 0o7777;

test("a root target drops set-id bits of files by default, digests agree, and the next round sends nothing", async (t) => {
  if (!asRoot) {
    t.pass("the target agent does not run as root: set-id bits are harmless and kept");
    return;
  }
  const { world, source, strict, dir } = t.context;
  const first = await copyVolume({ from: source.address, to: strict.address, volume: "v", tls: world.coordinator });
  t.true(Number(first.stats.entriesChanged) >= 3);
  t.is(modeOf(path.join(dir("strict"), "suid")), 0o755);
  t.is(modeOf(path.join(dir("strict"), "sgid")), 0o755);
  t.is(modeOf(path.join(dir("strict"), "shared")), 0o2775, "a directory's setgid only passes its group on");
  const second = await copyVolume({ from: source.address, to: strict.address, volume: "v", tls: world.coordinator });
  t.is(Number(second.stats.entriesChanged), 0);
  t.is(Number(second.stats.bytesChanged), 0);
});

test("THESEUS_KEEP_SETID=1 keeps them", async (t) => {
  const { world, source, keeping, dir } = t.context;
  await copyVolume({ from: source.address, to: keeping.address, volume: "v", tls: world.coordinator });
  t.is(modeOf(path.join(dir("keeping"), "suid")), 0o4755);
  t.is(modeOf(path.join(dir("keeping"), "sgid")), 0o2755);
});
