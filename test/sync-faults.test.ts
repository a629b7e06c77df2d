// Odd inputs a live volume holds, through the real sync engine (both halves in this process, real files): pre-1970
// mtimes, names with U+FFFD, names that are not UTF-8 at all.
import test from "ava";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createSyncSource, runTargetRound } from "../agent/sync/index.js";
import { silentLogger, TheseusError } from "../common/index.js";
import { describeTree, makePair, roundInMemory } from "./sync-helpers.js";

const base = fs.mkdtempSync(path.join(os.tmpdir(), "theseus-sync-faults-"));
test.after.always(() => fs.rmSync(base, { recursive: true, force: true }));

test("pre-1970 mtimes of a file, a directory and a symlink are kept exactly, and a second round changes nothing", async (t) => {
  const p = makePair(base, "negative-mtime");
  fs.mkdirSync(path.join(p.src, "old"));
  fs.writeFileSync(path.join(p.src, "old", "file"), "from 1960");
  fs.symlinkSync("file", path.join(p.src, "old", "link"));
  fs.writeFileSync(path.join(p.src, "future"), "from 2200");
  // Fractions of a second too: a microsecond off would count as a change in every later round.
  const t1960 = "-315619199.123456";
  fs.utimesSync(path.join(p.src, "old", "file"), t1960, t1960);
  fs.lutimesSync(path.join(p.src, "old", "link"), "-1.25", "-1.25");
  fs.utimesSync(path.join(p.src, "old"), "-86400.5", "-86400.5");
  fs.utimesSync(path.join(p.src, "future"), 7258118400, 7258118400);
  await roundInMemory(p);
  t.deepEqual(describeTree(p.dst), describeTree(p.src));
  t.true(fs.lstatSync(path.join(p.dst, "old", "file")).mtimeMs < 0);
  const again = await roundInMemory(p);
  t.is(again.source.entriesChanged, 0, "nothing reported as changed again");
});

test("a valid UTF-8 name containing U+FFFD is copied", async (t) => {
  const p = makePair(base, "fffd");
  fs.writeFileSync(path.join(p.src, "caf\uFFFD.txt"), "replacement character, on purpose");
  await roundInMemory(p);
  t.is(fs.readFileSync(path.join(p.dst, "caf\uFFFD.txt"), "utf8"), "replacement character, on purpose");
});

test("a name that is not UTF-8 fails the round naming the file and what to do", async (t) => {
  const p = makePair(base, "latin1");
  fs.mkdirSync(path.join(p.src, "docs"));
  fs.writeFileSync(Buffer.concat([Buffer.from(path.join(p.src, "docs") + "/caf"), Buffer.from([0xe9]), Buffer.from(".txt")]), "latin-1");
  const error = await t.throwsAsync(roundInMemory(p), { instanceOf: TheseusError });
  t.is(error?.code, "invalid_argument");
  t.regex(error?.message ?? "", /docs\/caf\\xe9\.txt is not valid UTF-8/);
  t.regex(error?.message ?? "", /rename it to a UTF-8 name/);
});

test("files deleted between the walk's stat and their open are the app's deletes: the round succeeds and the target deletes them too", async (t) => {
  const p = makePair(base, "vanish");
  fs.mkdirSync(path.join(p.src, "dir"));
  for (const n of ["a.txt", "gone.txt", "new-gone.txt", "z.txt"]) fs.writeFileSync(path.join(p.src, "dir", n), `${n}\n`);
  fs.writeFileSync(path.join(p.src, "big.bin"), Buffer.alloc(2 * 1024 * 1024, 7));
  fs.symlinkSync("dir/a.txt", path.join(p.src, "link"));
  fs.rmSync(path.join(p.src, "dir", "new-gone.txt"));
  await roundInMemory(p);
  // Changed since, so that the next round opens them; then deleted exactly in the window between stat and open.
  fs.writeFileSync(path.join(p.src, "dir", "gone.txt"), "changed\n");
  fs.writeFileSync(path.join(p.src, "dir", "new-gone.txt"), "new, never copied\n");
  fs.writeFileSync(path.join(p.src, "big.bin"), Buffer.alloc(2 * 1024 * 1024, 8));
  fs.rmSync(path.join(p.src, "link"));
  fs.symlinkSync("dir/z.txt", path.join(p.src, "link"));
  const doomed = new Set(["dir/gone.txt", "dir/new-gone.txt", "big.bin", "link"]);
  const opened: string[] = [];
  const racing = createSyncSource({
    root: p.src,
    stateDir: p.srcState,
    logger: silentLogger(),
    beforeOpen: (rel) => {
      opened.push(rel);
      if (doomed.has(rel)) fs.rmSync(path.join(p.src, rel));
    },
  });
  const r = await roundInMemory(p, racing);
  t.true([...doomed].every((d) => opened.includes(d)), `each doomed entry was opened after its stat (${opened.join(", ")})`);
  t.is(r.digest, r.sourceDigest);
  // All but the directory's mtime, which the deletes changed after its record was sent: the next round's.
  const files = (root: string): string[] => describeTree(root).filter((l) => !l.startsWith("d "));
  t.deepEqual(files(p.dst), files(p.src));
  t.false(fs.existsSync(path.join(p.dst, "dir", "gone.txt")));
  const again = await roundInMemory(p);
  t.is(again.source.entriesChanged, 2, "the next round carries only the new mtimes of the root and dir");
  t.deepEqual(describeTree(p.dst), describeTree(p.src));
});

test("wireBytes counts both directions: a round that changes nothing still carries the target's index", async (t) => {
  const p = makePair(base, "wire-both");
  fs.mkdirSync(path.join(p.src, "many"));
  for (let i = 0; i < 5000; i++) fs.writeFileSync(path.join(p.src, "many", `file-${i}.txt`), `${i}\n`);
  await roundInMemory(p);
  let up = 0;
  const r = await runTargetRound({ root: p.dst, stateDir: p.dstState, logger: silentLogger() }, (frames) =>
    p.source.serve(
      (async function* () {
        for await (const f of frames) {
          up += f.length;
          yield f;
        }
      })(),
    ),
  );
  t.is(r.source.entriesChanged, 0);
  // Each of the 5000 entries goes up with its path and a 32-byte hash: far more than the few frames coming down.
  t.true(up > 5000 * 40, `the index sent up ${up} bytes`);
  t.true(r.source.wireBytes >= up - 64, `wireBytes ${r.source.wireBytes} counts the index's ${up} bytes (less the load reports after the end)`);
});

test("a patch cut twice while the source keeps changing (a block reverted to its old content inside the torn part too): the torn file ends exact", async (t) => {
  const p = makePair(base, "torn-twice");
  const MiB = 1024 * 1024;
  const v1 = crypto.randomBytes(40 * MiB);
  fs.writeFileSync(path.join(p.src, "db"), v1);
  await roundInMemory(p);
  const cutAfter = async (frames: number): Promise<void> => {
    let n = 0;
    await t.throwsAsync(
      runTargetRound({ root: p.dst, stateDir: p.dstState, logger: silentLogger() }, (up) =>
        (async function* () {
          for await (const f of p.source.serve(up)) {
            if (++n > frames) throw new TheseusError("unavailable", "connection cut by the test");
            yield f;
          }
        })(),
      ),
      { code: "unavailable" },
    );
  };
  const tornDir = path.join(p.dstState, "torn");
  // Every block changes; the round is cut some 24 MiB into the patch.
  const v2 = crypto.randomBytes(40 * MiB);
  fs.writeFileSync(path.join(p.src, "db"), v2);
  await cutAfter(96);
  t.is(fs.readdirSync(tornDir).filter((n) => n.endsWith(".json")).length, 1, "the file is journaled torn");
  // The source changes again: the first block (so the verified prefix no longer matches) and block 10 back to its
  // old content, which the target's torn copy does not hold any more (it has v2 there).
  const v3 = Buffer.from(v2);
  crypto.randomBytes(4096).copy(v3, 0);
  v1.copy(v3, 10 * 4096, 10 * 4096, 11 * 4096);
  fs.writeFileSync(path.join(p.src, "db"), v3);
  await cutAfter(40);
  const r = await roundInMemory(p);
  t.true(fs.readFileSync(path.join(p.dst, "db")).equals(v3), "byte for byte the source's latest content");
  t.is(r.digest, r.sourceDigest);
  t.deepEqual(fs.readdirSync(tornDir), [], "nothing is torn any more");
});
