// The sync engine's two halves joined in memory: rounds reproduce the tree faithfully, later rounds send only the
// changes, state survives restarts, a cut round resumes without resending what was complete, and the digest agrees.
import test from "ava";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execFileSync } from "node:child_process";
import { createSyncSource, runTargetRound, TokenBucket } from "../agent/sync/index.js";
import type { Clock } from "../agent/sync/index.js";
import { silentLogger, TheseusError } from "../common/index.js";
import { describeTree, makePair, roundInMemory } from "./sync-helpers.js";
import type { Pair } from "./sync-helpers.js";

const base = fs.mkdtempSync(path.join(os.tmpdir(), "theseus-sync-engine-"));
test.after.always(() => fs.rmSync(base, { recursive: true, force: true }));

const MiB = 1024 * 1024;

function seed(p: Pair): void {
  const s = p.src;
  fs.mkdirSync(`${s}/dir/sub`, { recursive: true });
  fs.mkdirSync(`${s}/empty/nested-empty`, { recursive: true });
  fs.writeFileSync(`${s}/small.txt`, "hello\n");
  fs.chmodSync(`${s}/small.txt`, 0o640);
  fs.writeFileSync(`${s}/dir/exec.sh`, "#!/bin/sh\necho hi\n");
  fs.chmodSync(`${s}/dir/exec.sh`, 0o755);
  fs.writeFileSync(`${s}/dir/sub/text.log`, "line\n".repeat(5000));
  fs.writeFileSync(`${s}/dir/big.db`, Buffer.alloc(3 * MiB, 0x5a));
  for (let i = 0; i < 3 * MiB; i += 64 * 1024) fs.writeFileSync(`${s}/dir/big.db`, Buffer.from(`page ${i}`), { flag: "r+" });
  fs.symlinkSync("../small.txt", `${s}/dir/rel-link`);
  fs.symlinkSync("/etc/passwd", `${s}/abs-link`);
  fs.symlinkSync("does/not/exist", `${s}/dangling`);
  fs.linkSync(`${s}/small.txt`, `${s}/dir/hard-a`);
  fs.linkSync(`${s}/small.txt`, `${s}/dir/sub/hard-b`);
  // Sparse: 16 MiB with two data blocks.
  const fd = fs.openSync(`${s}/sparse.img`, "w");
  fs.writeSync(fd, Buffer.alloc(4096, 1), 0, 4096, 0);
  fs.writeSync(fd, Buffer.alloc(4096, 2), 0, 4096, 12 * MiB);
  fs.ftruncateSync(fd, 16 * MiB);
  fs.closeSync(fd);
  fs.utimesSync(`${s}/dir/sub`, 1_600_000_000.123456, 1_600_000_000.123456);
  fs.utimesSync(`${s}/small.txt`, 1_500_000_000.5, 1_500_000_000.5);
}

test("round 0 reproduces contents, modes, mtimes, symlinks, hard links, empty dirs and holes; digests agree", async (t) => {
  const p = makePair(base, "fidelity");
  seed(p);
  const r = await roundInMemory(p);
  t.deepEqual(describeTree(p.dst), describeTree(p.src));
  t.true(fs.lstatSync(`${p.dst}/abs-link`).isSymbolicLink(), "symlinks are never followed");
  t.is(fs.statSync(`${p.dst}/dir/sub/hard-b`).ino, fs.statSync(`${p.dst}/small.txt`).ino, "hard links stay links");
  t.true(fs.statSync(`${p.dst}/sparse.img`).blocks <= fs.statSync(`${p.src}/sparse.img`).blocks, "sparse files stay sparse");
  t.true(fs.statSync(`${p.dst}/sparse.img`).blocks * 512 < MiB);
  t.false(fs.existsSync(`${p.dst}/.theseus-partial`), "the staging directory is gone after the round");
  t.regex(r.digest, /^[0-9a-f]{64}$/);
  t.true(r.source.wireBytes < 5 * MiB, "zero blocks do not travel as data");
  // Nothing changed: nothing but the index and the end record travel, and nothing is read again.
  const again = await roundInMemory(p);
  t.is(again.source.entriesChanged, 0);
  t.is(again.source.bytesChanged, 0);
  t.is(again.source.bytesRead, 0);
  t.true(again.downWireBytes < 200, `no-change round sent ${again.downWireBytes} bytes down`);
  t.is(again.digest, r.digest);
});

test("a later round sends only changed blocks, appends, new, replaced and deleted entries", async (t) => {
  const p = makePair(base, "incremental");
  seed(p);
  fs.mkdirSync(`${p.src}/gone/deeper`, { recursive: true });
  fs.writeFileSync(`${p.src}/gone/deeper/f`, "x");
  fs.writeFileSync(`${p.src}/becomes-dir`, "file");
  fs.mkdirSync(`${p.src}/becomes-file`);
  fs.writeFileSync(`${p.src}/becomes-file/child`, "c");
  await roundInMemory(p);

  // A database rewrites two pages in place; a log appends; entries are created, replaced and deleted.
  const fd = fs.openSync(`${p.src}/dir/big.db`, "r+");
  fs.writeSync(fd, Buffer.alloc(4096, 0x11), 0, 4096, 4096 * 10);
  fs.writeSync(fd, Buffer.alloc(4096, 0x22), 0, 4096, 4096 * 500);
  fs.closeSync(fd);
  fs.appendFileSync(`${p.src}/dir/sub/text.log`, "appended\n");
  fs.writeFileSync(`${p.src}/new.txt`, "new file");
  fs.rmSync(`${p.src}/gone`, { recursive: true });
  fs.rmSync(`${p.src}/becomes-dir`);
  fs.mkdirSync(`${p.src}/becomes-dir`);
  fs.writeFileSync(`${p.src}/becomes-dir/inside`, "i");
  fs.rmSync(`${p.src}/becomes-file`, { recursive: true });
  fs.writeFileSync(`${p.src}/becomes-file`, "now a file");
  fs.rmSync(`${p.src}/dir/rel-link`);
  fs.symlinkSync("sub/text.log", `${p.src}/dir/rel-link`);
  fs.chmodSync(`${p.src}/dir/exec.sh`, 0o700);
  // The first path of a hard-link group gets new contents (same inode): every link must follow.
  fs.writeFileSync(`${p.src}/small.txt`, "hello again\n");

  const r = await roundInMemory(p);
  t.deepEqual(describeTree(p.dst), describeTree(p.src));
  t.is(fs.statSync(`${p.dst}/dir/hard-a`).ino, fs.statSync(`${p.dst}/small.txt`).ino, "hard links follow the new contents");
  const changedBytes = 2 * 4096 + fs.statSync(`${p.src}/dir/sub/text.log`).size + 8 + 1 + 10 + 12;
  t.true(r.source.bytesChanged <= changedBytes, `bytes changed ${r.source.bytesChanged}`);
  t.true(r.downWireBytes < changedBytes + 2048, `wire bytes down ${r.downWireBytes} for ${changedBytes} changed`);
  t.true(r.source.entriesDeleted >= 1);
  t.false(fs.existsSync(`${p.dst}/gone`));
});

test("both agents restarted (fresh objects, state from disk): a round without changes resends and rereads nothing", async (t) => {
  const p = makePair(base, "restart");
  seed(p);
  await roundInMemory(p);
  const fresh = createSyncSource({ root: p.src, stateDir: p.srcState, logger: silentLogger() });
  const r = await roundInMemory(p, fresh);
  t.is(r.source.entriesChanged, 0);
  t.is(r.source.bytesRead, 0, "the source's cache vouches for every file");
  t.true(r.targetBytesRead <= 16, `the target re-read ${r.targetBytesRead} bytes`);
  t.true(r.downWireBytes < 200);
});

test("a lost source cache resends nothing unchanged, and reads nothing either (the quick check vouches)", async (t) => {
  const p = makePair(base, "lost-cache");
  seed(p);
  await roundInMemory(p);
  fs.rmSync(p.srcState, { recursive: true });
  const r = await roundInMemory(p, createSyncSource({ root: p.src, stateDir: p.srcState, logger: silentLogger() }));
  t.is(r.source.bytesChanged, 0);
  t.is(r.source.bytesRead, 0);
  t.true(r.downWireBytes < 300);
  t.deepEqual(describeTree(p.dst), describeTree(p.src));
});

test("a round cut mid-stream resumes without resending the files that were complete", async (t) => {
  const p = makePair(base, "resume");
  for (let i = 0; i < 40; i++) fs.writeFileSync(`${p.src}/f${String(i).padStart(2, "0")}.bin`, Buffer.alloc(200 * 1024, i + 1));
  let frames = 0;
  const error = await t.throwsAsync<TheseusError>(
    runTargetRound({ root: p.dst, stateDir: p.dstState, logger: silentLogger() }, (up) =>
      (async function* () {
        for await (const f of p.source.serve(up)) {
          if (++frames > 10) throw new TheseusError("unavailable", "connection cut by the test");
          yield f;
        }
      })(),
    ),
  );
  t.is(error?.code, "unavailable");
  const complete = fs.readdirSync(p.dst).filter((n) => n.endsWith(".bin"));
  t.true(complete.length > 5 && complete.length < 40, `${complete.length} files arrived before the cut`);
  for (const n of complete) t.deepEqual(fs.readFileSync(`${p.dst}/${n}`), fs.readFileSync(`${p.src}/${n}`), `${n} is complete`);
  const r = await roundInMemory(p);
  t.deepEqual(describeTree(p.dst), describeTree(p.src));
  t.true(r.source.bytesChanged <= (40 - complete.length) * 200 * 1024, `resent ${r.source.bytesChanged} bytes`);
  t.true(r.targetBytesRead === 0, "what arrived before the cut is in the target's index already");
});

test("a large file cut mid-transfer resumes after its verified blocks instead of starting over", async (t) => {
  const p = makePair(base, "resume-large");
  const data = Buffer.alloc(24 * MiB);
  for (let i = 0; i < data.length; i += 4096) data.writeUInt32LE(i * 2654435761 >>> 0, i);
  fs.writeFileSync(`${p.src}/big.img`, data);
  let frames = 0;
  const cut = await t.throwsAsync<TheseusError>(
    runTargetRound({ root: p.dst, stateDir: p.dstState, logger: silentLogger() }, (up) =>
      (async function* () {
        for await (const f of p.source.serve(up)) {
          if (++frames > 48) throw new TheseusError("unavailable", "connection cut by the test");
          yield f;
        }
      })(),
    ),
  );
  t.is(cut?.code, "unavailable");
  t.false(fs.existsSync(`${p.dst}/big.img`), "a partial file is never in place");
  const r = await roundInMemory(p);
  t.true(fs.readFileSync(`${p.dst}/big.img`).equals(data), "the resumed file is byte for byte the source");
  t.true(r.source.bytesChanged <= 24 * MiB - 8 * MiB, `resent ${r.source.bytesChanged} of ${24 * MiB} bytes`);
  t.false(fs.existsSync(`${p.dst}/.theseus-partial`));
  t.deepEqual(describeTree(p.dst), describeTree(p.src));
});

test("sockets and fifos are not copied but counted and named in the statistics", async (t) => {
  const p = makePair(base, "special");
  fs.writeFileSync(`${p.src}/a`, "a");
  execFileSync("mkfifo", [`${p.src}/pipe`]);
  const r = await roundInMemory(p);
  t.is(r.source.specialFilesSkipped, 1);
  t.is(r.source.firstSpecialFile, "pipe");
  t.false(fs.existsSync(`${p.dst}/pipe`));
});

test("a file the source cannot read fails the round with its path, as bad input (exit 2), not as a refusing agent", async (t) => {
  if (process.getuid?.() === 0) {
    // Root reads anything: run the round as nobody in a child process instead.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "theseus-unreadable-"));
    fs.chmodSync(dir, 0o777);
    try {
      const out = execFileSync(process.execPath, [new URL("./fixtures/unreadable-round.js", import.meta.url).pathname, dir], {
        uid: 65534,
        gid: 65534,
        encoding: "utf8",
      });
      const res = JSON.parse(out) as { code: string; message: string };
      // Bad input (exit 2), not an agent refusing us (permission_denied, exit 3).
      t.is(res.code, "invalid_argument");
      t.regex(res.message, /cannot read secret\/locked\.txt: permission denied/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    return;
  }
  const p = makePair(base, "unreadable");
  fs.mkdirSync(`${p.src}/secret`);
  fs.writeFileSync(`${p.src}/secret/locked.txt`, "x");
  fs.chmodSync(`${p.src}/secret/locked.txt`, 0);
  const error = await t.throwsAsync(roundInMemory(p), { instanceOf: TheseusError });
  t.is(error?.code, "invalid_argument");
  t.regex(error?.message ?? "", /cannot read secret\/locked\.txt: permission denied/);
});

test("the token bucket holds the rate, allows only a small burst, and follows a rate change at once", async (t) => {
  let now = 0;
  const slept: number[] = [];
  const clock: Clock = {
    nowMs: () => now,
    sleep: async (ms) => {
      slept.push(ms);
      now += ms;
    },
  };
  const bucket = new TokenBucket(1_000_000, clock);
  for (let i = 0; i < 100; i++) await bucket.take(100_000);
  // 10 MB at 1 MB/s: 10 s, less the initial burst of 50 ms worth.
  t.true(now >= 9_900 && now <= 10_000, `took ${now} ms`);
  bucket.setRate(10_000_000);
  const before = now;
  for (let i = 0; i < 100; i++) await bucket.take(100_000);
  t.true(now - before >= 990 && now - before <= 1_000, `took ${now - before} ms after the change`);
  bucket.setRate(0);
  const frozen = now;
  await bucket.take(1e12);
  t.is(now, frozen, "0 means unlimited");
  t.true(slept.every((ms) => ms <= 100), "sleeps are sliced so a change is noticed quickly");
});

test("two rounds into one volume at once: the second is refused, the first completes", async (t) => {
  const p = makePair(base, "concurrent");
  fs.writeFileSync(`${p.src}/a`, "a");
  const other = createSyncSource({ root: p.src, stateDir: `${p.srcState}-2`, logger: silentLogger() });
  const results = await Promise.allSettled([roundInMemory(p), roundInMemory(p, other)]);
  t.is(results.filter((r) => r.status === "fulfilled").length, 1);
  const refused = results.find((r) => r.status === "rejected");
  t.is((refused?.reason as TheseusError | undefined)?.code, "failed_precondition");
  t.deepEqual(describeTree(p.dst), describeTree(p.src));
});

test("without root on the target, owners are recorded and counted, not applied, and the digests still agree", async (t) => {
  const p = makePair(base, "owners");
  fs.writeFileSync(`${p.src}/mine`, "m");
  fs.writeFileSync(`${p.src}/theirs`, "t");
  if (process.getuid?.() === 0) fs.chownSync(`${p.src}/theirs`, 1234, 1234);
  const r = await runTargetRound({ root: p.dst, stateDir: p.dstState, logger: silentLogger(), preserveOwner: false }, (up) => p.source.serve(up));
  t.false(r.ownersPreserved);
  if (process.getuid?.() === 0) t.is(r.source.ownersNotPreserved, 1);
  t.is(fs.readFileSync(`${p.dst}/theirs`, "utf8"), "t");
});

// The auto choice reads this process's event-loop utilisation, which the file's other tests (running concurrently in
// the same process) share: serial tests run alone, before them.
test.serial("auto compression: a slow link (the peer drains slowly, nobody is busy) switches zstd on", async (t) => {
  const p = makePair(base, "slow-link");
  const line = "2024-05-01T12:00:00Z INFO request served path=/api/items status=200 duration_ms=12\n";
  for (let i = 0; i < 48; i++) fs.writeFileSync(`${p.src}/log-${i}.txt`, line.repeat(Math.ceil((900 * 1024) / line.length)));
  const bytesPerSecond = 40e6;
  const r = await runTargetRound({ root: p.dst, stateDir: p.dstState, logger: silentLogger() }, (up) =>
    (async function* () {
      for await (const f of p.source.serve(up)) {
        await new Promise((resolve) => setTimeout(resolve, (f.length / bytesPerSecond) * 1000));
        yield f;
      }
    })(),
  );
  t.true(r.source.wireBytes < r.source.rawBytes / 2, `wire ${r.source.wireBytes} of ${r.source.rawBytes} raw`);
  t.deepEqual(describeTree(p.dst), describeTree(p.src));
});

test.serial("auto compression: a fast link where we are CPU-bound stays raw", async (t) => {
  const p = makePair(base, "fast-link");
  const line = "2024-05-01T12:00:00Z INFO request served path=/api/items status=200 duration_ms=12\n";
  for (let i = 0; i < 48; i++) fs.writeFileSync(`${p.src}/log-${i}.txt`, line.repeat(Math.ceil((900 * 1024) / line.length)));
  const r = await roundInMemory(p);
  t.true(r.source.wireBytes >= r.source.rawBytes, `wire ${r.source.wireBytes} of ${r.source.rawBytes} raw`);
});
