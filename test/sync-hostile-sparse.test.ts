// Issue 13, defects 2 and 4, against real `theseus-agent` processes over real mTLS: block lists are sparse (a run of
// holes costs a count, whatever its length), so what a declared size costs is bounded independently of it, and no file
// size is bounded by one Buffer (a flat list of 32 bytes per 4 KiB could not exceed 4 GiB, so files of 512 GiB and
// more could not be indexed at all).
import anyTest from "ava";
import type { TestFn } from "ava";
import fs from "node:fs";
import path from "node:path";
import type { AgentProcess } from "../coordinator/index.js";
import { copyVolume } from "../coordinator/index.js";
import { CACHE_DIR } from "../agent/sync/index.js";
import { emptyRoundStats } from "../agent/sync/codec.js";
import { holesList } from "../agent/sync/state.js";
import { answerAfterIndex, createWorld, framesOf, META, openSession, peakRssMiB, pull, resetPeak, ROOT, rssMiB, sha, startHostileSource } from "./sync-hostile-helpers.js";
import type { World } from "./sync-hostile-helpers.js";

interface Context {
  world: World;
  source: AgentProcess;
  target: AgentProcess;
  vol: (side: "src" | "dst", name: string) => string;
}
const test = anyTest.serial as TestFn<Context>;

const GiB = 1024 ** 3;
const HUGE_BYTES = 600 * GiB;
const BOMB_BYTES = 64 * GiB;

test.before(async (t) => {
  const world = await createWorld("hostile-sparse");
  const vol = (side: "src" | "dst", name: string): string => path.join(world.work, side, name);
  for (const side of ["src", "dst"] as const) for (const v of ["huge", "bomb"]) fs.mkdirSync(vol(side, v), { recursive: true });
  // A 600 GiB sparse file (a VM image, a preallocating database): truncate allocates nothing.
  fs.mkdirSync(path.join(vol("src", "huge"), "images"));
  fs.writeFileSync(path.join(vol("src", "huge"), "images", "vm.img"), "");
  fs.truncateSync(path.join(vol("src", "huge"), "images", "vm.img"), HUGE_BYTES);
  fs.writeFileSync(path.join(vol("src", "huge"), "images", "notes.txt"), "a disk of holes\n");
  fs.writeFileSync(path.join(vol("src", "bomb"), "ordinary"), "an ordinary file\n");
  const source = await world.spawn("eu-1", { huge: vol("src", "huge"), bomb: vol("src", "bomb") });
  const target = await world.spawn("us-2", { huge: vol("dst", "huge"), bomb: vol("dst", "bomb") });
  t.context = { world, source, target, vol };
});

test.after.always(async (t) => {
  await t.context.world?.cleanup();
});

/** Bytes of every stored block list under a volume's sync state (in the volume: agent/sync/registry.ts). */
function blockListBytes(volume: string): number {
  const dir = path.join(volume, CACHE_DIR);
  // Not found is a failure, not 0 bytes: the assertions below must not pass for want of a directory.
  if (!fs.existsSync(dir)) throw new Error(`no sync state in ${volume}`);
  let n = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile() && path.basename(e.parentPath) === "blocks") n += fs.statSync(path.join(e.parentPath, e.name)).size;
  }
  return n;
}

test("defect 4: a 600 GiB sparse file round-trips between two real agents, and the next round (both sides indexing it) sends nothing", async (t) => {
  const { world, source, target } = t.context;
  const vol = t.context.vol;
  const before = { source: rssMiB(source.pid), target: rssMiB(target.pid) };
  resetPeak(source.pid);
  resetPeak(target.pid);
  const first = await copyVolume({ from: source.address, to: target.address, volume: "huge", tls: world.coordinator });
  const copy = fs.statSync(path.join(vol("dst", "huge"), "images", "vm.img"));
  t.is(copy.size, HUGE_BYTES);
  t.true(copy.blocks * 512 < 1024 * 1024, `the copy allocated ${copy.blocks * 512} bytes: holes stay holes`);
  t.is(fs.readFileSync(path.join(vol("dst", "huge"), "images", "notes.txt"), "utf8"), "a disk of holes\n");
  t.is(Number(first.stats.bytesRead), 16, "the file of holes is not read (only notes.txt is)");
  // The target now holds it: its index must list it, and the source must find its own list again.
  const second = await copyVolume({ from: source.address, to: target.address, volume: "huge", tls: world.coordinator });
  t.is(Number(second.stats.bytesChanged), 0);
  t.is(Number(second.stats.entriesChanged), 0);
  const peak = { source: peakRssMiB(source.pid), target: peakRssMiB(target.pid) };
  t.log(`peak RSS: source ${before.source.toFixed(0)} -> ${peak.source.toFixed(0)} MiB, target ${before.target.toFixed(0)} -> ${peak.target.toFixed(0)} MiB`);
  // A flat list would be 4.7 GiB (beyond Node's largest Buffer); sparse, it is a count.
  t.true(peak.source - before.source < 64, `the source grew by ${(peak.source - before.source).toFixed(0)} MiB`);
  t.true(peak.target - before.target < 64, `the target grew by ${(peak.target - before.target).toFixed(0)} MiB`);
  t.true(blockListBytes(vol("src", "huge")) < 4096);
  t.true(blockListBytes(vol("dst", "huge")) < 4096);
});

test("defect 2: a sparse bomb (a few bytes declaring 64 GiB of holes) costs the target no memory or disk in proportion, nor its next round", async (t) => {
  const { world, source, target } = t.context;
  const vol = t.context.vol;
  const before = rssMiB(target.pid);
  resetPeak(target.pid);
  const bomb = framesOf([
    ROOT,
    { t: "file_begin", path: "bomb", meta: META, mode: "whole", baseHash: new Uint8Array(0), resumeFrom: 0 },
    { t: "zero", offset: 0, length: BOMB_BYTES },
    // The true hash of 64 GiB of holes: the file is verified and placed, as a real one would be.
    { t: "file_end", size: BOMB_BYTES, hash: holesList(BOMB_BYTES).digest() },
    { t: "end", digest: sha("made up"), stats: emptyRoundStats() },
  ]);
  t.true(bomb.reduce((n, f) => n + f.length, 0) < 256);
  const played = await startHostileSource(world, answerAfterIndex(bomb));
  try {
    const r = await pull(world, target, played.address, "bomb");
    t.is(r.error?.code, "data_loss", r.error?.message);
  } finally {
    await played.close();
  }
  t.is(fs.statSync(path.join(vol("dst", "bomb"), "bomb")).size, BOMB_BYTES);
  const afterBomb = peakRssMiB(target.pid);
  t.true(blockListBytes(vol("dst", "bomb")) < 4096, "the stored list of 64 GiB of holes is a few bytes");
  // The next ordinary round from the real source indexes the 64 GiB file (without reading it) and deletes it.
  const session = await openSession(world, source, "bomb");
  const next = await pull(world, target, source.address, "bomb", session);
  t.is(next.error, undefined, next.error?.message);
  t.deepEqual(fs.readdirSync(vol("dst", "bomb")).filter((n) => n !== CACHE_DIR), ["ordinary"]);
  const peak = peakRssMiB(target.pid);
  t.log(`target RSS ${before.toFixed(0)} MiB before, peak ${afterBomb.toFixed(0)} MiB after the bomb, ${peak.toFixed(0)} MiB after the next round`);
  t.true(peak - before < 64, `the target grew by ${(peak - before).toFixed(0)} MiB`);
});
