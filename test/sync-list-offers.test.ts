// Block lists offered by the target (sync protocol 6, agent/sync/list-offers.ts): a source that lost its state
// patches a changed large file against the list the target keeps, instead of sending it whole; a source that holds
// its lists is offered none; a target whose offer is not what it claims, or cut, fails the round and leaves nothing in
// the source's state. Real halves and real files, as sync-engine.test.ts.
import test from "ava";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createSyncSource, runTargetRound } from "../agent/sync/index.js";
import { decodeFrameRecords, emptyRoundStats, encodeRecord, FrameDecoder, FrameEncoder, MAX_OFFERED_LIST_BYTES, PROTOCOL_VERSION } from "../agent/sync/codec.js";
import type { SyncRecord } from "../agent/sync/codec.js";
import { silentLogger, TheseusError } from "../common/index.js";
import { describeTree, makePair, roundInMemory } from "./sync-helpers.js";
import type { Pair } from "./sync-helpers.js";

const base = fs.mkdtempSync(path.join(os.tmpdir(), "theseus-sync-list-offers-"));
test.after.always(() => fs.rmSync(base, { recursive: true, force: true }));

const MiB = 1024 * 1024;
const PAGE = 4096;
const OLD = new Date("2024-01-02T03:04:05.678Z");

/** `pages` distinct 4 KiB pages (every block holds data), dated OLD. */
function seedDatabase(f: string, pages: number): void {
  const b = Buffer.allocUnsafe(pages * PAGE);
  for (let i = 0; i < pages; i++) crypto.createHash("sha256").update(`page ${i}`).digest().copy(b, i * PAGE);
  fs.writeFileSync(f, b);
  fs.utimesSync(f, OLD, OLD);
}

/** Rewrites the given pages in place, as a database does (the mtime moves on). */
function rewritePages(f: string, pages: Iterable<number>): number {
  const fd = fs.openSync(f, "r+");
  let n = 0;
  for (const p of pages) {
    fs.writeSync(fd, crypto.randomBytes(PAGE), 0, PAGE, p * PAGE);
    n++;
  }
  fs.closeSync(fd);
  return n;
}

function loseSourceState(p: Pair): Pair {
  fs.rmSync(p.srcState, { recursive: true });
  return { ...p, source: createSyncSource({ root: p.src, stateDir: p.srcState, logger: silentLogger() }) };
}

const listsIn = (stateDir: string): string[] => fs.readdirSync(path.join(stateDir, "blocks")).sort();

test("a source that lost its state patches a changed large file against the list the target offers, and keeps it", async (t) => {
  const p0 = makePair(base, "lost");
  // 40 MiB of data pages: a list of 10,240 hashes (320 KiB), offered in two pieces.
  const pages = 10 * 1024;
  seedDatabase(`${p0.src}/db`, pages);
  fs.writeFileSync(`${p0.src}/notes.txt`, "small files are unaffected\n");
  const first = await roundInMemory(p0);
  t.is(first.source.listsReceived, 0, "an empty target has nothing to offer");

  const p = loseSourceState(p0);
  const rewritten = rewritePages(`${p.src}/db`, Array.from({ length: pages / 100 }, (_, i) => i * 100 + 7));
  const r = await roundInMemory(p);
  t.is(r.source.listsReceived, 1);
  t.is(r.source.listBytesReceived, pages * 32);
  t.is(r.source.bytesRead, pages * PAGE, "the database is read once (before: hashed, then read again to go whole)");
  t.is(r.source.bytesChanged, rewritten * PAGE, "only the rewritten pages are sent");
  t.true(r.downWireBytes < rewritten * PAGE + 64 * 1024, `${r.downWireBytes} bytes down for ${rewritten} pages`);
  t.true(r.targetBytesRead === 0, "the target offers the list it keeps: it reads nothing");
  t.is(r.digest, r.sourceDigest);
  t.deepEqual(describeTree(p.dst), describeTree(p.src));
  // The source keeps the list of what it sent, with its fingerprints, and no scratch of the offer.
  const kept = listsIn(p.srcState);
  t.is(kept.filter((n) => n.endsWith(".tmp")).length, 0);
  t.is(kept.filter((n) => n.endsWith(".fp")).length, 1);

  // From now on it holds its lists: nothing is offered, and a change is a patch diffed by fingerprints.
  rewritePages(`${p.src}/db`, [3]);
  const next = await roundInMemory(p);
  t.is(next.source.listsReceived, 0);
  t.is(next.source.bytesChanged, PAGE);
  t.deepEqual(describeTree(p.dst), describeTree(p.src));
});

test("a source that holds its lists is offered none: an incremental round's upstream stays the index", async (t) => {
  const p = makePair(base, "held");
  seedDatabase(`${p.src}/a.db`, 512);
  seedDatabase(`${p.src}/b.db`, 768);
  await roundInMemory(p);
  rewritePages(`${p.src}/b.db`, [1, 500]);
  const r = await roundInMemory(p);
  t.is(r.source.listsReceived, 0);
  t.is(r.source.bytesChanged, 2 * PAGE);
  const up = r.source.wireBytes - r.downWireBytes;
  t.true(up < 4 * 1024, `${up} bytes up: the index of three entries, the lists' hashes down`);
});

test("a sparse file's offered list (zero runs between data) patches it, holes kept", async (t) => {
  const p0 = makePair(base, "sparse");
  const f = `${p0.src}/sparse.img`;
  const fd = fs.openSync(f, "w");
  // Data, hole, data, hole, data over 96 MiB, 36 MiB of it data: runs fall inside and at the edges of the pieces.
  const extents: Array<[number, number]> = [[0, 4], [20, 36], [80, 96]];
  for (const [from, to] of extents) {
    for (let m = from; m < to; m++) {
      const chunk = Buffer.allocUnsafe(MiB);
      for (let o = 0; o < MiB; o += PAGE) crypto.createHash("sha256").update(`${m}:${o}`).digest().copy(chunk, o);
      fs.writeSync(fd, chunk, 0, MiB, m * MiB);
    }
  }
  fs.ftruncateSync(fd, 96 * MiB);
  fs.closeSync(fd);
  fs.utimesSync(f, OLD, OLD);
  await roundInMemory(p0);
  const p = loseSourceState(p0);
  const at = (mib: number, page: number): number => (mib * MiB) / PAGE + page;
  rewritePages(f, [at(0, 1), at(35, 255), at(80, 0)]);
  const r = await roundInMemory(p);
  t.is(r.source.listsReceived, 1);
  t.is(r.source.bytesChanged, 3 * PAGE);
  t.is(r.digest, r.sourceDigest);
  t.deepEqual(describeTree(p.dst), describeTree(p.src));
  t.true(fs.statSync(`${p.dst}/sparse.img`).blocks * 512 < 40 * MiB, "the holes stay holes");
});

// ---------------------------------------------------------------------------------------------------------------------
// Broken or hostile targets: the source is real, the target is a script.

const START: SyncRecord = { t: "start", version: PROTOCOL_VERSION, targetUid: 0, targetGid: 0, preserveOwner: false, stripSetid: false };
const DIR = { mode: 0o755, uid: 0, gid: 0, mtimeUs: 1_600_000_000_000_000 };

function frame(records: SyncRecord[]): Buffer {
  const w = FrameEncoder.writer();
  for (const r of records) encodeRecord(w, r);
  return new FrameEncoder().encode(w).frame;
}

/**
 * Plays `frames` as the target against a real source; what the source answered, in-band or thrown (an early failure
 * ends its call with the error, as the transport reports it), and its state's lists after.
 */
async function againstSource(name: string, frames: Buffer[]): Promise<{ records: SyncRecord[]; error: { code: string; message: string } | undefined; lists: string[] }> {
  const root = path.join(base, name, "src");
  const state = path.join(base, name, "state");
  fs.mkdirSync(root, { recursive: true });
  const source = createSyncSource({ root, stateDir: state, logger: silentLogger() });
  const records: SyncRecord[] = [];
  const decoder = new FrameDecoder();
  let error: { code: string; message: string } | undefined;
  try {
    for await (const f of source.serve((async function* () { yield* frames; })())) records.push(...decodeFrameRecords(decoder.decode(f)));
    error = records.find((r): r is Extract<SyncRecord, { t: "error" }> => r.t === "error");
  } catch (e) {
    error = TheseusError.from(e);
  }
  return { records, error, lists: listsIn(state) };
}

const hashOf = (b: Uint8Array): Buffer => crypto.createHash("sha256").update(b).digest();

test("an offered list whose sha256 is not its hash fails the round, and the source keeps nothing of it", async (t) => {
  const piece = Buffer.alloc(64, 7);
  const r = await againstSource("lying", [
    frame([START]),
    frame([{ t: "list_offer", hash: hashOf(Buffer.from("another list")), total: 64, offset: 0, piece }, { t: "index_end" }]),
  ]);
  t.is(r.records[0]?.t, "lists_held", "the source names its lists first");
  const e = r.error;
  t.is(e?.code, "protocol");
  t.regex(e?.message ?? "", /offered a block list whose hash is not/);
  t.deepEqual(r.lists, [], "no list and no scratch file stay in the source's state");
});

test("an offer cut by an index entry, or begun past its start, fails the round", async (t) => {
  const piece = Buffer.alloc(32, 9);
  const h = hashOf(Buffer.alloc(64, 9));
  const entry: SyncRecord = { t: "entry", e: { path: "", type: "dir", meta: DIR, size: 0, hash: new Uint8Array(0), linkTarget: "", hardlinkTo: "" } };
  // The rest of the offer would be in the next frame: the entry comes first instead.
  const cut = await againstSource("cut", [frame([START]), frame([{ t: "list_offer", hash: h, total: 64, offset: 0, piece }]), frame([entry, { t: "index_end" }])]);
  t.regex(cut.error?.message ?? "", /index went on before an offered block list was complete/);
  t.deepEqual(cut.lists, []);
  const late = await againstSource("late", [frame([START]), frame([{ t: "list_offer", hash: h, total: 64, offset: 32, piece }, { t: "index_end" }])]);
  t.regex(late.error?.message ?? "", /began past its start/);
});

test("an offer larger than a list can be is refused before anything is written", async (t) => {
  const r = await againstSource("huge", [
    frame([START]),
    frame([{ t: "list_offer", hash: hashOf(Buffer.alloc(1)), total: MAX_OFFERED_LIST_BYTES + 1, offset: 0, piece: Buffer.alloc(32) }]),
  ]);
  t.regex(r.error?.message ?? "", /exceeds/);
  t.deepEqual(r.lists, []);
});

test("a source that does not name its lists first fails the target's round before anything is applied", async (t) => {
  const p = makePair(base, "unnamed");
  fs.writeFileSync(`${p.dst}/kept.txt`, "the target's own file\n");
  const error = await t.throwsAsync<TheseusError>(
    runTargetRound({ root: p.dst, stateDir: p.dstState, logger: silentLogger() }, () =>
      (async function* () {
        yield frame([{ t: "dir", path: "", meta: DIR }, { t: "delete", path: "kept.txt" }, { t: "end", digest: Buffer.alloc(32), stats: emptyRoundStats() }]);
      })(),
    ),
  );
  t.true(error instanceof TheseusError);
  t.is(error?.code, "protocol");
  t.regex(error?.message ?? "", /sent dir before naming the block lists it holds/);
  t.true(fs.existsSync(`${p.dst}/kept.txt`));
});

test("an offer after the target's index is refused, neither counted nor stored: it could serve no entry, only fill the source's state", async (t) => {
  const piece = Buffer.alloc(64, 5);
  const r = await againstSource("after-index", [
    frame([START, { t: "index_end" }, { t: "list_offer", hash: hashOf(piece), total: 64, offset: 0, piece }]),
  ]);
  t.is(r.error, undefined, "the round itself completes");
  const end = r.records.find((rec): rec is Extract<SyncRecord, { t: "end" }> => rec.t === "end");
  t.is(end?.stats.listsReceived, 0, "the offer was refused, not received");
  t.deepEqual(r.lists, []);
});
