// Block fingerprints (block-list.ts, agent/sync/fingerprints): the native XXH3-128 of every 4 KiB block in one call,
// stored beside a source's block lists, and the diff that trusts them: a block whose fingerprint is its base's is taken
// as unchanged without sha256; everything else is hashed, sent and verified as before.
import test from "ava";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { BlockList, blockHashes, fingerprint, fingerprints, FINGERPRINT_BYTES } from "../agent/sync/block-list.js";
import { ReadAhead } from "../agent/sync/read-ahead.js";
import { BlockStore } from "../agent/sync/state.js";
import { describeTree, makePair, roundInMemory } from "./sync-helpers.js";

const base = fs.mkdtempSync(path.join(os.tmpdir(), "theseus-sync-fingerprints-"));
test.after.always(() => fs.rmSync(base, { recursive: true, force: true }));

const KiB = 1024;
const MiB = 1024 * KiB;

test("fingerprints are XXH3-128, block by block, the last block short, in one call", (t) => {
  // The canonical XXH3-128 of "a" (as xxhsum -H2 prints it; cross-checked against the xxhash-addon package).
  t.is(fingerprint(Buffer.from("a")).toString("hex"), "a96faf705af16834e6c632b61e964e1f");
  const data = crypto.randomBytes(3 * 4096 + 100);
  const out = Buffer.alloc(4 * FINGERPRINT_BYTES);
  t.is(fingerprints(data, out), 4);
  for (let b = 0; b < 4; b++) {
    const block = data.subarray(b * 4096, Math.min((b + 1) * 4096, data.length));
    t.deepEqual(out.subarray(b * FINGERPRINT_BYTES, (b + 1) * FINGERPRINT_BYTES), fingerprint(block), `block ${b}`);
  }
  t.is(fingerprints(new Uint8Array(0), out), 0);
});

test("fingerprints refuses an output too small and arguments that are not bytes, writing nothing", (t) => {
  const out = Buffer.alloc(FINGERPRINT_BYTES, 7);
  t.throws(() => fingerprints(Buffer.alloc(4097), out), { instanceOf: TypeError, message: /too small/ });
  t.true(out.equals(Buffer.alloc(FINGERPRINT_BYTES, 7)));
  t.throws(() => fingerprints("text" as unknown as Uint8Array, out), { instanceOf: TypeError });
  t.throws(() => fingerprints(new Uint16Array(4) as unknown as Uint8Array, out), { instanceOf: TypeError });
});

test("blockHashes takes each block's sha256 (and fingerprint, when asked) in one call", (t) => {
  const data = crypto.randomBytes(2 * 4096 + 7);
  const shas = Buffer.alloc(3 * 32);
  const fps = Buffer.alloc(3 * FINGERPRINT_BYTES);
  t.is(blockHashes(data, fps, shas), 3);
  for (let b = 0; b < 3; b++) {
    const block = data.subarray(b * 4096, Math.min((b + 1) * 4096, data.length));
    t.deepEqual(shas.subarray(b * 32, (b + 1) * 32), crypto.createHash("sha256").update(block).digest(), `sha256 of block ${b}`);
    t.deepEqual(fps.subarray(b * FINGERPRINT_BYTES, (b + 1) * FINGERPRINT_BYTES), fingerprint(block), `fingerprint of block ${b}`);
  }
  const only = Buffer.alloc(3 * 32);
  t.is(blockHashes(data, null, only), 3);
  t.deepEqual(only, shas);
  t.throws(() => blockHashes(data, null, Buffer.alloc(64)), { instanceOf: TypeError, message: /too small/ });
  t.throws(() => blockHashes(data, Buffer.alloc(16), shas), { instanceOf: TypeError, message: /too small/ });
});

test("ReadAhead returns a file's chunks in order, stops at the size it was given, and settles a read in flight", async (t) => {
  const file = path.join(base, "read-ahead");
  const data = crypto.randomBytes(5 * 64 * KiB + 123);
  fs.writeFileSync(file, data);
  const fd = fs.openSync(file, "r");
  try {
    // Two buffers read one chunk ahead; more read more at once, and none may touch the chunk the caller holds.
    for (const buffers of [2, 3, 4]) {
      const reader = new ReadAhead(fd, Array.from({ length: buffers }, () => Buffer.alloc(64 * KiB)), data.length - 100);
      const got: Buffer[] = [];
      for (let pos = 0; ; ) {
        const chunk = await reader.read(pos);
        if (chunk.length === 0) break;
        // The reads ahead complete meanwhile: the chunk held is still the file's, until the next call.
        await new Promise((resolve) => setTimeout(resolve, 5));
        t.deepEqual(chunk, data.subarray(pos, pos + chunk.length), `${buffers} buffers, chunk at ${pos}`);
        got.push(Buffer.from(chunk));
        pos += chunk.length;
      }
      t.deepEqual(Buffer.concat(got), data.subarray(0, data.length - 100));
    }
    t.throws(() => new ReadAhead(fd, [Buffer.alloc(64 * KiB)], data.length), { instanceOf: RangeError });
    // A read out of order is served directly, and a read in flight is waited for before the descriptor is closed.
    const again = new ReadAhead(fd, [Buffer.alloc(64 * KiB), Buffer.alloc(64 * KiB)], data.length);
    t.deepEqual(Buffer.from(await again.read(64 * KiB)), data.subarray(64 * KiB, 128 * KiB));
    t.deepEqual(Buffer.from(await again.read(0)), data.subarray(0, 64 * KiB));
    await again.settle();
  } finally {
    fs.closeSync(fd);
  }
});

function dataList(blocks: Buffer[]): BlockList {
  const list = new BlockList();
  for (const b of blocks) list.appendData(b, true);
  return list;
}

test("matchingRun counts the blocks whose fingerprints match from a block on, across its windows, up to a change or its limit", (t) => {
  const blocks = Array.from({ length: 40 }, () => crypto.randomBytes(4096));
  const list = dataList(blocks);
  const fps = Buffer.alloc(40 * FINGERPRINT_BYTES);
  fingerprints(Buffer.concat(blocks), fps);
  t.is(list.matchingRun(0, fps, 0, 40), 40, "all of them");
  t.is(list.matchingRun(3, fps, 3 * FINGERPRINT_BYTES, 37), 37, "from an offset");
  t.is(list.matchingRun(0, fps, 0, 21), 21, "no further than the limit");
  const changed = Buffer.from(fps);
  changed.writeUInt8(changed.readUInt8(23 * FINGERPRINT_BYTES + 5) ^ 1, 23 * FINGERPRINT_BYTES + 5);
  t.is(list.matchingRun(0, changed, 0, 40), 23, "up to the first change, found inside a window of 16");
  t.is(list.matchingRun(23, changed, 23 * FINGERPRINT_BYTES, 17), 0, "none from the changed one");
  t.is(list.matchingRun(24, changed, 24 * FINGERPRINT_BYTES, 16), 16, "and all after it");
  const withZeros = new BlockList();
  withZeros.appendZeros(8);
  t.is(withZeros.matchingRun(0, fps, 0, 8), 0, "a zero run has no fingerprints to match");
});

test("a list's zero runs are found by search: a zero-hash marker only at a hash boundary, never across two hashes", (t) => {
  const ZERO = crypto.createHash("sha256").update(Buffer.alloc(4096)).digest();
  // Data, a zero block, data, two zero blocks, data: the runs round-trip through the canonical encoding.
  const zero = Buffer.alloc(4096);
  const data = Buffer.concat([crypto.randomBytes(4096), zero, crypto.randomBytes(8192), zero, zero, crypto.randomBytes(4096)]);
  const list = new BlockList();
  list.appendData(data, true);
  t.is(list.length, 7);
  t.is(list.dataBlocks, 4);
  t.deepEqual([1, 4, 5].map((b) => list.isZeroAt(b)), [true, true, true]);
  t.deepEqual([0, 2, 3, 6].map((b) => list.isZeroAt(b)), [false, false, false, false]);
  const encoded = Buffer.concat([...list.encode()]);
  const back = BlockList.decode(encoded);
  t.true(back.digest().equals(list.digest()));
  t.is(back.length, 7);
  // Two data hashes that hold the zero hash's bytes between them (its first 12 at the end of one, the rest at the
  // start of the next): no run marker, and decoded as the two hashes they are.
  const a = Buffer.concat([crypto.randomBytes(20), ZERO.subarray(0, 12)]);
  const b = Buffer.concat([ZERO.subarray(12), crypto.randomBytes(12)]);
  const first = crypto.randomBytes(32);
  const straddling = BlockList.decode(Buffer.concat([first, a, b]));
  t.is(straddling.length, 3);
  t.is(straddling.dataBlocks, 3);
  t.deepEqual([straddling.at(0), straddling.at(1), straddling.at(2)], [first, a, b]);
  // A real marker after them still starts a run.
  const run = Buffer.alloc(40);
  ZERO.copy(run);
  run.writeBigUInt64LE(5n, 32);
  const withRun = BlockList.decode(Buffer.concat([first, a, b, run]));
  t.is(withRun.length, 8);
  t.true(withRun.isZeroAt(7));
  // And a list of hashes cut inside one is refused, as before.
  t.throws(() => BlockList.decode(Buffer.concat([first, a, b.subarray(0, 31)])), { message: /malformed/ });
});

test("a stored list keeps its fingerprints; a damaged fingerprint file only costs them, never the list", (t) => {
  const dir = fs.mkdtempSync(path.join(base, "store-"));
  const store = new BlockStore(dir);
  const blocks = [crypto.randomBytes(4096), Buffer.alloc(4096), Buffer.alloc(4096), crypto.randomBytes(4096)];
  const list = dataList(blocks);
  t.true(list.hasFingerprints);
  t.is(list.dataBlocks, 2, "zero blocks are a run, without a fingerprint");
  const hash = list.digest();
  store.put(hash, list);

  const back = store.get(hash);
  if (back === undefined) return t.fail("the list was not read back");
  t.true(back.digest().equals(hash));
  t.true(back.hasFingerprints);
  t.true(back.fingerprintMatches(0, fingerprint(blocks[0] as Buffer), 0));
  t.false(back.fingerprintMatches(1, fingerprint(Buffer.alloc(4096)), 0), "a zero block has no fingerprint to match");
  t.true(back.isZeroAt(2));
  t.true(back.fingerprintMatches(3, fingerprint(blocks[3] as Buffer), 0));
  t.false(back.fingerprintMatches(3, fingerprint(blocks[0] as Buffer), 0));

  const fp = path.join(dir, "blocks", `${hash.toString("hex")}.fp`);
  const bytes = fs.readFileSync(fp);
  bytes[3] = (bytes[3] as number) ^ 0xff;
  fs.writeFileSync(fp, bytes);
  const damaged = store.get(hash);
  t.true(damaged?.digest().equals(hash), "the list itself is intact");
  t.false(damaged?.hasFingerprints, "the damaged fingerprints are not used");

  fs.writeFileSync(fp, bytes.subarray(0, 20));
  t.false(store.get(hash)?.hasFingerprints, "a cut fingerprint file is not used");
  // Lists no longer referenced take their fingerprints with them.
  store.retainOnly(new Set());
  t.deepEqual(fs.readdirSync(path.join(dir, "blocks")), []);
});

test("a list loses its fingerprints for good when a block comes without one", (t) => {
  const list = dataList([crypto.randomBytes(4096)]);
  list.append(crypto.createHash("sha256").update("x").digest());
  t.false(list.hasFingerprints);
  t.deepEqual([...list.encodeFingerprints()], []);
  const copy = new BlockList();
  copy.copyFrom(list, 0, 2);
  t.false(copy.hasFingerprints, "a copy of a list without them has none either");
});

/** A database-like file: `pages` random 4 KiB pages. */
function writeDb(file: string, pages: number): void {
  fs.writeFileSync(file, crypto.randomBytes(pages * 4096));
}

function rewritePages(file: string, pages: number[]): void {
  const fd = fs.openSync(file, "r+");
  for (const p of pages) fs.writeSync(fd, crypto.randomBytes(4096), 0, 4096, p * 4096);
  fs.closeSync(fd);
}

test("rounds after the first find rewritten pages by fingerprint and send exactly those; the copy is exact", async (t) => {
  const p = makePair(base, "pages");
  writeDb(`${p.src}/db`, 2048); // 8 MiB
  const first = await roundInMemory(p);
  t.is(first.source.bytesChanged, 8 * MiB);
  const fpFiles = fs.readdirSync(path.join(p.srcState, "blocks")).filter((n) => n.endsWith(".fp"));
  t.is(fpFiles.length, 1, "the source stored the list's fingerprints");

  for (const round of [1, 2, 3]) {
    const pages = [0, 17 * round, 1000 + round, 2047];
    rewritePages(`${p.src}/db`, pages);
    const r = await roundInMemory(p);
    t.is(r.source.bytesChanged, pages.length * 4096, `round ${round}: only the rewritten pages`);
    t.is(r.digest, r.sourceDigest);
    t.true(fs.readFileSync(`${p.dst}/db`).equals(fs.readFileSync(`${p.src}/db`)), `round ${round}: the copy is exact`);
  }
  t.deepEqual(describeTree(p.dst), describeTree(p.src));
});

test("every other page of a 4 MiB read rewritten: the records of one read are spread over frames the target accepts", async (t) => {
  // A large file is read 4 MiB at a time (source.ts, LARGE_READ_BYTES): 512 separate 4 KiB records in one read would
  // make a 2 MiB frame, beyond MAX_FRAME_RAW_BYTES, if the diff flushed only between reads.
  const p = makePair(base, "alternate");
  writeDb(`${p.src}/db`, 3 * 1024); // 12 MiB: three reads
  await roundInMemory(p);
  const pages = Array.from({ length: 1536 }, (_, i) => i * 2);
  rewritePages(`${p.src}/db`, pages);
  const r = await roundInMemory(p);
  t.is(r.source.bytesChanged, pages.length * 4096, "exactly the rewritten pages");
  t.is(r.digest, r.sourceDigest);
  t.true(fs.readFileSync(`${p.dst}/db`).equals(fs.readFileSync(`${p.src}/db`)));
});

test("a base list without fingerprints (state from before them) is diffed by sha256, and the next round has them", async (t) => {
  const p = makePair(base, "upgrade");
  writeDb(`${p.src}/db`, 512);
  await roundInMemory(p);
  const blocksDir = path.join(p.srcState, "blocks");
  for (const n of fs.readdirSync(blocksDir)) if (n.endsWith(".fp")) fs.rmSync(path.join(blocksDir, n));

  rewritePages(`${p.src}/db`, [3, 300]);
  const r = await roundInMemory(p);
  t.is(r.source.bytesChanged, 2 * 4096);
  t.true(fs.readFileSync(`${p.dst}/db`).equals(fs.readFileSync(`${p.src}/db`)));
  t.true(fs.readdirSync(blocksDir).some((n) => n.endsWith(".fp")), "the new list has its fingerprints");

  rewritePages(`${p.src}/db`, [4]);
  const again = await roundInMemory(p);
  t.is(again.source.bytesChanged, 4096);
  t.true(fs.readFileSync(`${p.dst}/db`).equals(fs.readFileSync(`${p.src}/db`)));
});

test("pages rewritten with zeros and zero pages given data are found too", async (t) => {
  const p = makePair(base, "zeros");
  const file = `${p.src}/db`;
  writeDb(file, 300);
  const fd = fs.openSync(file, "r+");
  fs.writeSync(fd, Buffer.alloc(8 * 4096), 0, 8 * 4096, 100 * 4096); // pages 100-107 are zeros
  fs.closeSync(fd);
  await roundInMemory(p);
  const fd2 = fs.openSync(file, "r+");
  fs.writeSync(fd2, Buffer.alloc(4096), 0, 4096, 5 * 4096); // data -> zeros
  fs.writeSync(fd2, crypto.randomBytes(4096), 0, 4096, 103 * 4096); // zeros -> data
  fs.closeSync(fd2);
  const r = await roundInMemory(p);
  t.is(r.source.bytesChanged, 2 * 4096);
  t.true(fs.readFileSync(`${p.dst}/db`).equals(fs.readFileSync(file)));
});

test("the diff trusts a matching fingerprint without hashing the block (the trade-off block-list.ts documents)", async (t) => {
  // Forge the stored fingerprint of page 7 to be that of the content it is about to get: the round must then take
  // the page as unchanged, which shows the rewritten page is found by its fingerprint alone and not by sha256.
  const p = makePair(base, "trust");
  writeDb(`${p.src}/db`, 512);
  await roundInMemory(p);
  const blocksDir = path.join(p.srcState, "blocks");
  const fpName = fs.readdirSync(blocksDir).find((n) => n.endsWith(".fp"));
  if (fpName === undefined) return t.fail("no fingerprint file");
  const page = crypto.randomBytes(4096);
  const body = fs.readFileSync(path.join(blocksDir, fpName)).subarray(0, 512 * FINGERPRINT_BYTES);
  fingerprint(page).copy(body, 7 * FINGERPRINT_BYTES);
  const check = crypto.createHash("sha256").update(body).digest().subarray(0, FINGERPRINT_BYTES);
  fs.writeFileSync(path.join(blocksDir, fpName), Buffer.concat([body, check]));
  const fd = fs.openSync(`${p.src}/db`, "r+");
  fs.writeSync(fd, page, 0, 4096, 7 * 4096);
  fs.writeSync(fd, crypto.randomBytes(4096), 0, 4096, 9 * 4096);
  fs.closeSync(fd);
  const r = await roundInMemory(p);
  t.is(r.source.bytesChanged, 4096, "page 9 is sent; page 7 is taken as unchanged by its (forged) fingerprint");
});
