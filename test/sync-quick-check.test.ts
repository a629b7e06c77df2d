// The quick check after a lost source cache (issue 12): a file the source has no cache entry for, whose target entry
// has its size, mtime and mode, takes the target's hash unread ("vouched"), as rsync's quick check trusts size and
// mtime; later rounds verify vouched files within a budget. Real halves and real files, as sync-engine.test.ts.
import test from "ava";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createSyncSource, runTargetRound } from "../agent/sync/index.js";
import { EntryFileReader, VERIFY_BUDGET_BYTES, VERIFY_BUDGET_FILES } from "../agent/sync/state.js";
import { ByteWriter, decodeFrameRecords, emptyRoundStats, encodeEntry, encodeRecord, FrameDecoder, FrameEncoder, PROTOCOL_VERSION } from "../agent/sync/codec.js";
import { silentLogger } from "../common/index.js";
import type { TheseusError } from "../common/index.js";
import { describeTree, makePair, roundInMemory } from "./sync-helpers.js";
import type { Pair } from "./sync-helpers.js";

const base = fs.mkdtempSync(path.join(os.tmpdir(), "theseus-sync-quick-check-"));
test.after.always(() => fs.rmSync(base, { recursive: true, force: true }));

const MiB = 1024 * 1024;
/** Seeded files carry this mtime, so that a file changed by the test has another one whatever the clock's grain. */
const OLD = new Date("2024-01-02T03:04:05.678Z");

/** `n` small files of 1-4 KiB in two directories, all dated OLD; returns their total size. */
function seedSmall(p: Pair, n: number, prefix = "f"): number {
  let total = 0;
  for (let i = 0; i < n; i++) {
    const dir = path.join(p.src, i % 2 === 0 ? "even" : "odd");
    fs.mkdirSync(dir, { recursive: true });
    const f = path.join(dir, `${prefix}${String(i).padStart(5, "0")}.txt`);
    const size = 1024 + ((i * 977) % 3072);
    fs.writeFileSync(f, Buffer.alloc(size, `${prefix}${i} `));
    fs.utimesSync(f, OLD, OLD);
    total += size;
  }
  return total;
}

/** A 4 MiB file of distinct pages (hashed per 4 KiB block: a large file), dated OLD. */
function seedLarge(f: string): void {
  const b = Buffer.alloc(4 * MiB);
  for (let i = 0; i < b.length; i += 4096) b.write(`page ${i} `.repeat(100).slice(0, 4096), i);
  fs.writeFileSync(f, b);
  fs.utimesSync(f, OLD, OLD);
}

/** A fresh source object over a source whose state directory was removed (a new mover pod, a reinstalled agent). */
function loseSourceCache(p: Pair): Pair {
  fs.rmSync(p.srcState, { recursive: true });
  return { ...p, source: createSyncSource({ root: p.src, stateDir: p.srcState, logger: silentLogger() }) };
}

function rewritePage(f: string, offset: number): void {
  const fd = fs.openSync(f, "r+");
  fs.writeSync(fd, Buffer.alloc(4096, 0x77), 0, 4096, offset);
  fs.closeSync(fd);
}

test("with the source's cache lost, a round reads only the modified files: the untouched ones are vouched for", async (t) => {
  const p0 = makePair(base, "lost");
  const untouched = seedSmall(p0, 500);
  fs.writeFileSync(`${p0.src}/rewritten.txt`, "old content of a small file\n");
  fs.writeFileSync(`${p0.src}/app.log`, "line 1\nline 2\n");
  seedLarge(`${p0.src}/db.bin`);
  for (const f of ["rewritten.txt", "app.log"]) fs.utimesSync(`${p0.src}/${f}`, OLD, OLD);
  await roundInMemory(p0);
  t.deepEqual(describeTree(p0.dst), describeTree(p0.src));

  const p = loseSourceCache(p0);
  fs.writeFileSync(`${p.src}/rewritten.txt`, "new content, another size and a new mtime\n");
  fs.appendFileSync(`${p.src}/app.log`, "line 3\n");
  rewritePage(`${p.src}/db.bin`, 40 * 4096);
  const r = await roundInMemory(p);

  const changedSmall = fs.statSync(`${p.src}/rewritten.txt`).size + fs.statSync(`${p.src}/app.log`).size;
  // The large file has no cache entry and no block list left, and its mtime differs: the target offers its list
  // (protocol 6), so the file is read once and only the rewritten page is sent.
  t.is(r.source.bytesRead, changedSmall + 4 * MiB, "only the three modified files are read, each once");
  t.is(r.source.listsReceived, 1);
  t.is(r.source.listBytesReceived, 1024 * 32, "the list of a 4 MiB file of distinct pages: 1,024 hashes");
  t.is(r.source.bytesChanged, fs.statSync(`${p.src}/rewritten.txt`).size + "line 3\n".length + 4096, "the large file goes as its rewritten page");
  t.is(r.source.vouchedUnverified, 500);
  t.is(r.source.vouchedUnverifiedBytes, untouched);
  t.is(r.digest, r.sourceDigest);
  t.deepEqual(describeTree(p.dst), describeTree(p.src));

  // The next round verifies the vouched files (500 small ones fit one round's budget) and reads nothing else.
  const again = await roundInMemory(p);
  t.is(again.source.bytesRead, untouched);
  t.is(again.source.vouchedUnverified, 0);
  t.is(again.source.entriesChanged, 0);
  const quiet = await roundInMemory(p);
  t.is(quiet.source.bytesRead, 0, "verified entries are trusted like any cache entry");
});

test("a change that keeps size and mtime is missed in the round that vouches (the trade-off) and found by verification", async (t) => {
  const p0 = makePair(base, "stealth");
  seedSmall(p0, 50);
  await roundInMemory(p0);
  const p = loseSourceCache(p0);
  const f = `${p.src}/odd/f00007.txt`;
  const before = fs.readFileSync(f);
  fs.writeFileSync(f, Buffer.alloc(before.length, "changed in place, same length "));
  fs.utimesSync(f, OLD, OLD);

  const r = await roundInMemory(p);
  t.is(r.source.bytesRead, 0, "nothing is read: every file is vouched for");
  t.is(r.source.vouchedUnverified, 50);
  // What the digest covers by size and mtime only: both sides agree although the copy is stale.
  t.is(r.digest, r.sourceDigest);
  t.deepEqual(fs.readFileSync(`${p.dst}/odd/f00007.txt`), before, "the round that vouches cannot see this change");

  let rounds = 0;
  let sent = 0;
  for (let left = r.source.vouchedUnverified; left > 0 && rounds < 5; rounds++) {
    const v = await roundInMemory(p);
    t.is(v.digest, v.sourceDigest);
    sent += v.source.entriesChanged;
    left = v.source.vouchedUnverified;
  }
  t.is(rounds, 1, "50 files fit one round's budget");
  t.is(sent, 1, "the verification sends the one changed file like any changed file");
  t.deepEqual(describeTree(p.dst), describeTree(p.src));
});

test("a stat mismatch is not a lost cache: a file rewritten with size and mtime restored is read and sent", async (t) => {
  const p = makePair(base, "mismatch");
  seedSmall(p, 20);
  await roundInMemory(p);
  const f = `${p.src}/even/f00004.txt`;
  const size = fs.statSync(f).size;
  fs.writeFileSync(f, Buffer.alloc(size, "another content "));
  fs.utimesSync(f, OLD, OLD); // the ctime still moves, and the cache entry holds the old one
  const r = await roundInMemory(p);
  t.is(r.source.vouchedUnverified, 0);
  t.is(r.source.entriesChanged, 1);
  t.deepEqual(describeTree(p.dst), describeTree(p.src));
});

test("the verification budget bounds a round: files beyond it wait for the next round", async (t) => {
  const p0 = makePair(base, "budget-files");
  const n = VERIFY_BUDGET_FILES + 300;
  const total = seedSmall(p0, n);
  await roundInMemory(p0);
  const p = loseSourceCache(p0);
  t.is((await roundInMemory(p)).source.vouchedUnverified, n);
  const first = await roundInMemory(p);
  t.is(first.source.vouchedUnverified, 300, `one round verifies ${VERIFY_BUDGET_FILES} files, no more`);
  t.true(first.source.bytesRead < total);
  const second = await roundInMemory(p);
  t.is(second.source.vouchedUnverified, 0);
  t.is(first.source.bytesRead + second.source.bytesRead, total, "every vouched file is read once");
});

test("the verification budget bounds a round's bytes too, and a large vouched file verified is then patched", async (t) => {
  const p0 = makePair(base, "budget-bytes");
  // Sparse files: the budget counts their size, while verifying them reads (nearly) nothing on filesystems that
  // count allocated blocks; each is a third of the budget and a bit more, so two fit a round and the third waits.
  const each = Math.floor(VERIFY_BUDGET_BYTES / 3 / 4096) * 4096 + 4096;
  for (const name of ["a.img", "b.img", "c.img"]) {
    const fd = fs.openSync(`${p0.src}/${name}`, "w");
    fs.ftruncateSync(fd, each);
    fs.closeSync(fd);
    fs.utimesSync(`${p0.src}/${name}`, OLD, OLD);
  }
  seedLarge(`${p0.src}/db.bin`);
  await roundInMemory(p0);
  const p = loseSourceCache(p0);
  const vouching = await roundInMemory(p);
  t.is(vouching.source.vouchedUnverified, 4);
  t.is(vouching.source.bytesRead, 0);
  // Walk order: a.img, b.img, c.img, db.bin. a and b take two thirds of the budget; c does not fit what is left and
  // waits; db.bin (4 MiB) still fits.
  const first = await roundInMemory(p);
  t.is(first.source.vouchedUnverified, 1);
  t.is(first.source.vouchedUnverifiedBytes, each);
  t.true(first.source.bytesRead >= 4 * MiB, "db.bin is read to verify it");
  const second = await roundInMemory(p);
  t.is(second.source.vouchedUnverified, 0);
  // Verified, db.bin's block list is known: a rewritten page is patched, not resent whole.
  rewritePage(`${p.src}/db.bin`, 100 * 4096);
  const patched = await roundInMemory(p);
  t.true(patched.downWireBytes < 64 * 1024, `sent ${patched.downWireBytes} bytes for one page`);
  t.deepEqual(describeTree(p.dst), describeTree(p.src));
});

test("a vouched large file that changes before it is verified is patched against the list the target offered", async (t) => {
  const p0 = makePair(base, "large-later");
  seedLarge(`${p0.src}/db.bin`);
  await roundInMemory(p0);
  const p = loseSourceCache(p0);
  const vouching = await roundInMemory(p);
  t.is(vouching.source.vouchedUnverified, 1);
  t.is(vouching.source.bytesRead, 0);
  t.is(vouching.source.listsReceived, 1, "the target offered its list, and the source kept it");
  // The stat no longer matches the vouched entry: the file is read and diffed against the list the target offered
  // in the vouching round, so only the rewritten page goes.
  rewritePage(`${p.src}/db.bin`, 7 * 4096);
  const r = await roundInMemory(p);
  t.is(r.source.listsReceived, 0, "the source holds the list now: nothing is offered again");
  t.is(r.source.vouchedUnverified, 0);
  t.is(r.source.entriesChanged, 1);
  t.is(r.source.bytesRead, 4 * MiB);
  t.is(r.source.bytesChanged, 4096, "patched against the offered list");
  t.is(r.digest, r.sourceDigest);
  t.deepEqual(describeTree(p.dst), describeTree(p.src));
  // The source's own list of the new content has its fingerprints: the next change is a patch too.
  rewritePage(`${p.src}/db.bin`, 9 * 4096);
  const next = await roundInMemory(p);
  t.true(next.downWireBytes < 64 * 1024, `sent ${next.downWireBytes} bytes for one page`);
  t.deepEqual(describeTree(p.dst), describeTree(p.src));
});

test("a cache of the older format (no header, no flags) is rejected and rebuilt, not misread", async (t) => {
  const p = makePair(base, "old-format");
  seedSmall(p, 10);
  await roundInMemory(p);
  const f = `${p.src}/odd/f00003.txt`;
  const oldHash = crypto.createHash("sha256").update(fs.readFileSync(f)).digest();
  // A changed file (same size, a new mtime), and an old-format cache that claims its current stat for the old
  // content: misread as trusted, it would keep the target's stale copy.
  fs.writeFileSync(f, Buffer.alloc(fs.statSync(f).size, "rewritten "));
  const st = fs.statSync(f);
  const w = new ByteWriter();
  encodeEntry(w, { path: "odd/f00003.txt", type: "file", meta: { mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtimeUs: Math.round(st.mtimeMs * 1000) }, size: st.size, hash: oldHash, linkTarget: "", hardlinkTo: "" });
  w.f64(st.ino);
  w.f64(st.mtimeMs);
  w.f64(st.ctimeMs);
  const body = w.take();
  const head = Buffer.alloc(4);
  head.writeUInt32LE(body.length, 0);
  const index = path.join(p.srcState, "index");
  fs.writeFileSync(index, Buffer.concat([head, body]));
  const reader = new EntryFileReader(index);
  t.true(reader.rejected);
  t.is(reader.next(), undefined);
  reader.close();

  const r = await roundInMemory(p);
  t.is(r.source.entriesChanged, 1, "the changed file is read and sent");
  t.deepEqual(describeTree(p.dst), describeTree(p.src));
  t.is(fs.readFileSync(index).subarray(0, 4).toString("latin1"), "THSC", "rebuilt in the current format");
  const rebuilt = new EntryFileReader(index);
  t.false(rebuilt.rejected);
  t.not(rebuilt.next(), undefined);
  rebuilt.close();
  // Rejected is lost: the other nine files were vouched for, and the next round verifies them.
  t.is(r.source.vouchedUnverified, 9);
  const next = await roundInMemory(p);
  t.is(next.source.vouchedUnverified, 0);
  t.is(next.source.entriesChanged, 0);
});

test(`protocol ${PROTOCOL_VERSION}: a target that speaks 4 (no vouched counts in the stats) is refused before anything is sent`, async (t) => {
  const p = makePair(base, "version");
  fs.writeFileSync(path.join(p.src, "f"), "x");
  const w = FrameEncoder.writer();
  encodeRecord(w, { t: "start", version: 4, targetUid: 0, targetGid: 0, preserveOwner: false, stripSetid: false });
  encodeRecord(w, { t: "index_end" });
  const frame = new FrameEncoder().encode(w).frame;
  const error = await t.throwsAsync<TheseusError>(async () => {
    for await (const down of p.source.serve((async function* () { yield frame; })())) t.fail(`sent ${down.length} bytes`);
  });
  t.is(error?.code, "failed_precondition");
  t.regex(error?.message ?? "", new RegExp(`speaks sync protocol 4, this agent ${PROTOCOL_VERSION}`));
});

// ---------------------------------------------------------------------------------------------------------------------
// The target's side: a target without a cache sends small files unhashed, and the source vouches for them.

function loseTargetCache(p: Pair): void {
  fs.rmSync(p.dstState, { recursive: true });
  fs.mkdirSync(p.dstState);
}

test("with the target's cache lost, its small files go unread into the index and the source vouches for them", async (t) => {
  const p = makePair(base, "target-lost");
  seedSmall(p, 300);
  fs.writeFileSync(`${p.src}/app.log`, "line 1\n");
  fs.utimesSync(`${p.src}/app.log`, OLD, OLD);
  seedLarge(`${p.src}/db.bin`);
  await roundInMemory(p);
  loseTargetCache(p);
  fs.appendFileSync(`${p.src}/app.log`, "line 2\n");
  const r = await roundInMemory(p);
  t.is(r.targetBytesRead, 4 * MiB, "the target reads only its large file");
  t.is(r.source.bytesRead, fs.statSync(`${p.src}/app.log`).size, "the source's cache is intact: it reads only the changed file");
  t.is(r.targetVouchedUnverified, 300);
  t.is(r.digest, r.sourceDigest);
  t.deepEqual(describeTree(p.dst), describeTree(p.src));
  // The next round verifies the target's vouched copies (300 fit the budget), then nothing is read.
  const verify = await roundInMemory(p);
  t.is(verify.targetVouchedUnverified, 0);
  t.true(verify.targetBytesRead > 0);
  t.is(verify.source.entriesChanged, 0);
  const quiet = await roundInMemory(p);
  t.is(quiet.targetBytesRead, 0);
  t.is(quiet.source.bytesRead, 0);
});

test("with both caches lost, only the source reads the small files, to give the target their hashes", async (t) => {
  const p0 = makePair(base, "both-lost");
  const total = seedSmall(p0, 200);
  await roundInMemory(p0);
  loseTargetCache(p0);
  const p = loseSourceCache(p0);
  const r = await roundInMemory(p);
  t.is(r.targetBytesRead, 0);
  t.is(r.source.bytesRead, total, "the source reads to give the target a hash: one side reads, not two");
  t.is(r.source.vouchedUnverified, 0);
  t.is(r.targetVouchedUnverified, 200);
  t.is(r.source.entriesChanged, 0);
  t.is(r.digest, r.sourceDigest);
  t.deepEqual(describeTree(p.dst), describeTree(p.src));
});

test("a target copy changed with size and mtime kept is missed while its cache is lost, then found by its verification", async (t) => {
  const p = makePair(base, "target-stealth");
  seedSmall(p, 40);
  await roundInMemory(p);
  loseTargetCache(p);
  const f = `${p.dst}/even/f00010.txt`;
  const before = fs.readFileSync(f);
  fs.writeFileSync(f, Buffer.alloc(before.length, "damaged on the target "));
  fs.utimesSync(f, OLD, OLD);
  const r = await roundInMemory(p);
  t.is(r.targetVouchedUnverified, 40);
  t.is(r.source.entriesChanged, 0, "the vouching round cannot see it");
  const v = await roundInMemory(p);
  t.is(v.targetVouchedUnverified, 0);
  t.is(v.source.entriesChanged, 1, "the target's verification reports its real hash, and the source resends the file");
  t.deepEqual(describeTree(p.dst), describeTree(p.src));
});

test("the target's verification budget bounds a round too", async (t) => {
  const p = makePair(base, "target-budget");
  const n = VERIFY_BUDGET_FILES + 100;
  const total = seedSmall(p, n);
  await roundInMemory(p);
  loseTargetCache(p);
  t.is((await roundInMemory(p)).targetVouchedUnverified, n);
  const first = await roundInMemory(p);
  t.is(first.targetVouchedUnverified, 100);
  const second = await roundInMemory(p);
  t.is(second.targetVouchedUnverified, 0);
  t.is(first.targetBytesRead + second.targetBytesRead, total);
});

test("a source that does not answer an unhashed entry fails the round as a protocol error, and the copy stays", async (t) => {
  const p = makePair(base, "unanswered");
  fs.writeFileSync(`${p.dst}/kept.txt`, "the target's own file\n");
  const error = await t.throwsAsync<TheseusError>(
    runTargetRound({ root: p.dst, stateDir: p.dstState, logger: silentLogger() }, (up) =>
      (async function* () {
        let sawUnhashed = false;
        const dec = new FrameDecoder();
        for await (const f of up) {
          const recs = decodeFrameRecords(dec.decode(f));
          if (recs.some((r) => r.t === "entry_unhashed")) sawUnhashed = true;
          if (recs.some((r) => r.t === "index_end")) break;
        }
        t.true(sawUnhashed);
        const w = FrameEncoder.writer();
        encodeRecord(w, { t: "lists_held", hashes: Buffer.alloc(0), last: true });
        encodeRecord(w, { t: "dir", path: "", meta: { mode: 0o755, uid: 0, gid: 0, mtimeUs: 0 } });
        encodeRecord(w, { t: "end", digest: Buffer.alloc(32), stats: emptyRoundStats() });
        yield new FrameEncoder().encode(w).frame;
      })(),
    ),
  );
  t.is(error?.code, "protocol");
  t.regex(error?.message ?? "", /did not answer the target's unhashed entry "kept.txt"/);
  t.is(fs.readFileSync(`${p.dst}/kept.txt`, "utf8"), "the target's own file\n");
});

test("a target copy vouched for but not yet verified is never an append's base: a stale copy appended to on the source is sent whole", async (t) => {
  const p = makePair(base, "target-append");
  // More files than one round verifies, so that the last one in walk order stays unverified in the round after.
  seedSmall(p, VERIFY_BUDGET_FILES + 10);
  await roundInMemory(p);
  loseTargetCache(p);
  const name = `odd/f${String(VERIFY_BUDGET_FILES + 9).padStart(5, "0")}.txt`;
  const before = fs.readFileSync(`${p.dst}/${name}`);
  fs.writeFileSync(`${p.dst}/${name}`, Buffer.alloc(before.length, "stale on the target "));
  fs.utimesSync(`${p.dst}/${name}`, OLD, OLD);
  t.is((await roundInMemory(p)).targetVouchedUnverified, VERIFY_BUDGET_FILES + 10);
  fs.appendFileSync(`${p.src}/${name}`, "appended on the source\n");
  const r = await roundInMemory(p);
  t.true(r.targetVouchedUnverified > 0, "the copy was not verified in this round");
  t.is(r.digest, r.sourceDigest);
  t.deepEqual(describeTree(p.dst), describeTree(p.src));
});
