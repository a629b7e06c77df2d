// Small files that grow by an append (logs, journals) travel as their tail, not whole (issue 12): between the engine's
// two real halves on real files, an append costs its tail on the wire, anything that is not an append still goes
// whole, and a target whose copy changed under the round fails it cleanly and is repaired by the next round.
import test from "ava";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import crypto from "node:crypto";
import { runTargetRound } from "../agent/sync/index.js";
import { ByteReader, ByteWriter, decodeRecord, encodeRecord, FrameEncoder, LARGE_FILE_BYTES, PROTOCOL_VERSION } from "../agent/sync/codec.js";
import type { Meta, SyncRecord } from "../agent/sync/codec.js";
import { silentLogger, TheseusError } from "../common/index.js";
import { describeTree, makePair, roundInMemory } from "./sync-helpers.js";
import type { Pair } from "./sync-helpers.js";

const base = fs.mkdtempSync(path.join(os.tmpdir(), "theseus-sync-appends-"));
test.after.always(() => fs.rmSync(base, { recursive: true, force: true }));

/** Log-like text that zstd cannot shrink much (hex of random bytes), so wire bytes follow the bytes sent. */
const text = (bytes: number): Buffer => Buffer.from(crypto.randomBytes(Math.ceil(bytes / 2)).toString("hex").slice(0, bytes));
const sha = (b: Uint8Array): Buffer => crypto.createHash("sha256").update(b).digest();

/** A pair whose first round has run over `files` (name -> content). */
async function synced(name: string, files: Record<string, Buffer>): Promise<Pair> {
  const p = makePair(base, name);
  for (const [f, data] of Object.entries(files)) fs.writeFileSync(path.join(p.src, f), data);
  await roundInMemory(p);
  return p;
}

test("an appended small file travels as its tail: bytes changed are the tail, the wire carries little more, and the copy is identical", async (t) => {
  const p = await synced("append", { "app.log": text(6000), "other.txt": text(3000) });
  const tail = text(300);
  fs.appendFileSync(path.join(p.src, "app.log"), tail);
  const r = await roundInMemory(p);
  t.is(r.source.entriesChanged, 1);
  t.is(r.source.bytesChanged, tail.length, "counted as the tail, not the file");
  // The record's own overhead (path, metadata, two hashes), the directory record and the end record: well under 1 KiB.
  t.true(r.downWireBytes < tail.length + 1024, `${r.downWireBytes} bytes down for a ${tail.length}-byte append to a 6300-byte file`);
  t.deepEqual(fs.readFileSync(path.join(p.dst, "app.log")), fs.readFileSync(path.join(p.src, "app.log")));
  t.deepEqual(describeTree(p.dst), describeTree(p.src), "modes and mtimes too");
  t.is(r.digest, r.sourceDigest);
  // And the next round sees nothing to do: the target's index holds the new content.
  const again = await roundInMemory(p);
  t.is(again.source.entriesChanged, 0);
  t.is(again.digest, r.digest);
});

test("not appends go whole: a rewrite of the same length with more after it, a truncated and regrown file, a file more than doubled", async (t) => {
  const rewritten = text(4000);
  const regrown = text(4000);
  const doubled = text(1000);
  const p = await synced("not-appends", { rewritten, regrown, doubled });
  // Same length as before plus an append, but other bytes in the first 4000: no shared prefix.
  fs.writeFileSync(path.join(p.src, "rewritten"), Buffer.concat([text(4000), text(100)]));
  // Cut to half, then written past the old end: longer than before, yet not the old content followed by more.
  fs.truncateSync(path.join(p.src, "regrown"), 2000);
  fs.appendFileSync(path.join(p.src, "regrown"), text(3000));
  // A real append, but of more than the old content: sent whole (see isAppend in source.ts).
  fs.appendFileSync(path.join(p.src, "doubled"), text(1500));
  const r = await roundInMemory(p);
  t.is(r.source.entriesChanged, 3);
  t.is(r.source.bytesChanged, 4100 + 5000 + 2500, "every file counted whole");
  t.true(r.downWireBytes >= 4100 + 5000 + 2500);
  t.deepEqual(describeTree(p.dst), describeTree(p.src));
  t.is(r.digest, r.sourceDigest);
});

test("a file the target changed since the last round is sent whole, its index showing what it holds now", async (t) => {
  const p = await synced("target-changed", { "app.log": text(5000) });
  // Same size on the target, other bytes: its index hash differs from the source's prefix.
  fs.writeFileSync(path.join(p.dst, "app.log"), text(5000));
  fs.appendFileSync(path.join(p.src, "app.log"), text(200));
  const r = await roundInMemory(p);
  t.is(r.source.bytesChanged, 5200);
  t.deepEqual(describeTree(p.dst), describeTree(p.src));
});

/** One round in which `meddle` runs once the target's index is sent and before the source's first frame is applied. */
async function roundMeddled(p: Pair, meddle: () => void): Promise<TheseusError | undefined> {
  try {
    await runTargetRound({ root: p.dst, stateDir: p.dstState, logger: silentLogger() }, (up) =>
      (async function* () {
        let frames = 0;
        for await (const frame of p.source.serve(up)) {
          // The source's first frame names its block lists; a few small files fit the next one, sent after the
          // source has read the whole index (its end follows it).
          if (++frames === 2) meddle();
          yield frame;
        }
      })(),
    );
    return undefined;
  } catch (e) {
    return TheseusError.from(e);
  }
}

for (const [name, meddle] of [
  ["rewritten", (f: string): void => fs.writeFileSync(f, text(5000))],
  ["appended to", (f: string): void => fs.appendFileSync(f, "x")],
  ["deleted", (f: string): void => fs.rmSync(f)],
] as const) {
  test(`a target copy ${name} during the round fails it as a state mismatch, untouched; the next round sends it whole`, async (t) => {
    const p = await synced(`meddled-${name.replace(/ /g, "-")}`, { "app.log": text(5000) });
    fs.appendFileSync(path.join(p.src, "app.log"), text(200));
    const dstFile = path.join(p.dst, "app.log");
    let meddled: Buffer | undefined;
    const error = await roundMeddled(p, () => {
      meddle(dstFile);
      meddled = fs.existsSync(dstFile) ? fs.readFileSync(dstFile) : undefined;
    });
    t.is(error?.code, "failed_precondition", error?.message);
    t.regex(error?.message ?? "", /appended to app\.log against contents the target does not hold/);
    t.deepEqual(fs.existsSync(dstFile) ? fs.readFileSync(dstFile) : undefined, meddled, "the failed append wrote nothing");
    t.false(fs.existsSync(path.join(p.dst, ".theseus-partial")));
    const r = await roundInMemory(p);
    t.is(r.source.bytesChanged, 5200, "resent whole");
    t.deepEqual(describeTree(p.dst), describeTree(p.src));
    t.is(r.digest, r.sourceDigest);
  });
}

test("a round cut after an append was applied keeps it: the file is complete in place, and the next round sends nothing for it", async (t) => {
  const p = await synced("cut", { "app.log": text(5000), "z.txt": text(1000) });
  fs.appendFileSync(path.join(p.src, "app.log"), text(200));
  let error: TheseusError | undefined;
  try {
    await runTargetRound({ root: p.dst, stateDir: p.dstState, logger: silentLogger() }, (up) =>
      (async function* () {
        // The source's end record travels in a frame of its own: cut the stream after the records, its second
        // frame (the first names its block lists).
        let frames = 0;
        for await (const frame of p.source.serve(up)) {
          yield frame;
          if (++frames === 2) return;
        }
      })(),
    );
  } catch (e) {
    error = TheseusError.from(e);
  }
  t.is(error?.code, "unavailable", error?.message);
  t.deepEqual(fs.readFileSync(path.join(p.dst, "app.log")), fs.readFileSync(path.join(p.src, "app.log")));
  t.false(fs.existsSync(path.join(p.dst, ".theseus-partial")));
  const r = await roundInMemory(p);
  t.is(r.source.bytesChanged, 0, "nothing resent");
  t.deepEqual(describeTree(p.dst), describeTree(p.src));
  t.is(r.digest, r.sourceDigest);
});

const META: Meta = { mode: 0o640, uid: 1000, gid: 1000, mtimeUs: -1_234_567 };

test("codec: file_append round-trips, and lengths that would make a large file or append nothing are refused", (t) => {
  const rec: SyncRecord = { t: "file_append", path: "var/log/app.log", meta: META, baseSize: 4321, baseHash: sha(Buffer.from("b")), hash: sha(Buffer.from("h")), tail: Buffer.from("tail\n") };
  const w = new ByteWriter();
  encodeRecord(w, rec);
  encodeRecord(w, { t: "delete", path: "next" });
  const r = new ByteReader(w.take());
  const got = decodeRecord(r);
  t.is(got.t, "file_append");
  if (got.t !== "file_append") return;
  t.deepEqual({ ...got, baseHash: Buffer.from(got.baseHash), hash: Buffer.from(got.hash), tail: Buffer.from(got.tail) }, rec);
  t.deepEqual(decodeRecord(r), { t: "delete", path: "next" }, "the record's length is exactly what was encoded");
  t.true(r.done);

  const refused = (over: Partial<Extract<SyncRecord, { t: "file_append" }>>): TheseusError | undefined => {
    const bad = new ByteWriter();
    encodeRecord(bad, { ...rec, ...over });
    return t.throws<TheseusError>(() => decodeRecord(new ByteReader(bad.take())));
  };
  t.is(refused({ baseSize: LARGE_FILE_BYTES })?.code, "protocol");
  t.is(refused({ baseSize: 2 ** 50 })?.code, "protocol");
  t.is(refused({ baseSize: 1000, tail: Buffer.alloc(LARGE_FILE_BYTES - 1000) })?.code, "protocol");
  t.is(refused({ tail: Buffer.alloc(0) })?.code, "protocol");
  t.is(refused({ baseHash: Buffer.alloc(31) })?.code, "protocol");
  t.is(refused({ hash: Buffer.alloc(0) })?.code, "protocol");
  // The largest append allowed: base and tail one byte short of a large file.
  const edge = new ByteWriter();
  encodeRecord(edge, { ...rec, baseSize: 1000, tail: Buffer.alloc(LARGE_FILE_BYTES - 1001) });
  t.is(decodeRecord(new ByteReader(edge.take())).t, "file_append");
});

test("protocol 4 and later: a target that speaks 3 (no file_append) is refused by the source before anything is sent", async (t) => {
  const p = makePair(base, "version");
  fs.writeFileSync(path.join(p.src, "f"), "x");
  t.true(PROTOCOL_VERSION >= 4);
  const w = FrameEncoder.writer();
  encodeRecord(w, { t: "start", version: 3, targetUid: 0, targetGid: 0, preserveOwner: false, stripSetid: false });
  encodeRecord(w, { t: "index_end" });
  const frame = new FrameEncoder().encode(w).frame;
  const error = await t.throwsAsync<TheseusError>(async () => {
    for await (const down of p.source.serve((async function* () { yield frame; })())) t.fail(`sent ${down.length} bytes`);
  });
  t.is(error?.code, "failed_precondition");
  t.regex(error?.message ?? "", new RegExp(`speaks sync protocol 3, this agent ${PROTOCOL_VERSION}`));
});
