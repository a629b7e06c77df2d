// The target half against a hostile or broken source: hand-made frames must be refused with a clear error, and nothing
// may be written outside the volume (no "..", absolute paths, writes through symlinks or into fifos, bombs).
import test from "ava";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import crypto from "node:crypto";
import { execFileSync } from "node:child_process";
import { compress } from "zstd-napi";
import { runTargetRound } from "../agent/sync/index.js";
import { FrameDecoder, FrameEncoder, decodeFrameRecords, emptyRoundStats, encodeRecord } from "../agent/sync/codec.js";
import type { Meta, SyncRecord } from "../agent/sync/codec.js";
import { silentLogger, TheseusError } from "../common/index.js";

const base = fs.mkdtempSync(path.join(os.tmpdir(), "theseus-sync-hostile-"));
test.after.always(() => fs.rmSync(base, { recursive: true, force: true }));

const META: Meta = { mode: 0o644, uid: 0, gid: 0, mtimeUs: 1_600_000_000_000_000 };
const DIR_META: Meta = { ...META, mode: 0o755 };
const sha = (b: Uint8Array | string): Buffer => crypto.createHash("sha256").update(b).digest();

function frameOf(records: SyncRecord[]): Buffer {
  const enc = new FrameEncoder();
  const w = FrameEncoder.writer();
  for (const r of records) encodeRecord(w, r);
  return enc.encode(w).frame;
}

let n = 0;
/** A fresh volume with a sibling "outside" directory, and a symlink in the volume that points there. */
function setup(): { dst: string; state: string; outside: string } {
  const dir = path.join(base, `case-${++n}`);
  const dst = path.join(dir, "volume");
  const outside = path.join(dir, "outside");
  fs.mkdirSync(dst, { recursive: true });
  fs.mkdirSync(outside);
  fs.symlinkSync(outside, path.join(dst, "to-outside"));
  return { dst, state: path.join(dir, "state"), outside };
}

async function play(frames: Uint8Array[]): Promise<{ error: TheseusError | undefined; outside: string[]; dst: string }> {
  const { dst, state, outside } = setup();
  let error: TheseusError | undefined;
  try {
    await runTargetRound({ root: dst, stateDir: state, logger: silentLogger() }, (up) =>
      (async function* () {
        // Read the target's index like a real source would (then its load reports, in the background), and answer.
        yield* answerAfterIndex(up, frames);
      })(),
    );
  } catch (e) {
    error = TheseusError.from(e);
  }
  return { error, outside: fs.readdirSync(outside), dst };
}

const root: SyncRecord = { t: "dir", path: "", meta: DIR_META };
const inline = (p: string, data = "evil"): SyncRecord => ({ t: "file_inline", path: p, meta: META, hash: sha(data), data: Buffer.from(data) });

const pathCases: Array<[string, SyncRecord[]]> = [
  ["a parent reference", [root, inline("../escape")]],
  ["a nested parent reference", [root, { t: "dir", path: "a", meta: DIR_META }, inline("a/../../escape")]],
  ["an absolute path", [root, inline("/tmp/escape")]],
  ["an empty component", [root, inline("a//b")]],
  ["a dot component", [root, inline("./x")]],
  ["a NUL byte", [root, inline("x\0y")]],
  ["a write through a symlink the round created", [root, { t: "symlink", path: "link", meta: META, target: "../outside" }, inline("link/evil")]],
  ["a write through a symlink already in the volume", [root, inline("to-outside/evil")]],
  ["a hard link out of the volume", [root, { t: "hardlink", path: "z", to: "../outside/x", hash: sha("") }]],
  ["a hard link to a symlink", [root, { t: "hardlink", path: "z", to: "to-outside", hash: sha("") }]],
  ["records out of order", [root, inline("b"), inline("a")]],
  ["the same path twice", [root, inline("b"), inline("b")]],
  ["no root record first", [inline("a")]],
  ["data outside a file", [root, { t: "data", offset: 0, data: Buffer.from("x") }]],
  ["a directory through a symlink", [root, { t: "dir", path: "to-outside/sub", meta: DIR_META }]],
];

for (const [name, records] of pathCases) {
  test(`refused: ${name}, nothing written outside`, async (t) => {
    const r = await play([frameOf(records)]);
    t.truthy(r.error, "the round must fail");
    t.is(r.error?.code, "protocol", r.error?.message);
    t.deepEqual(r.outside, []);
  });
}

test("a symlink in the volume is replaced by a directory, never followed", async (t) => {
  const r = await play([frameOf([root, { t: "dir", path: "to-outside", meta: DIR_META }, inline("to-outside/inside"), { t: "end", digest: sha(""), stats: emptyRoundStats() }])]);
  // The digest is made up, so the round fails at the very end; what matters is where the file went.
  t.is(r.error?.code, "data_loss");
  t.deepEqual(r.outside, []);
  t.true(fs.lstatSync(path.join(r.dst, "to-outside")).isDirectory());
  t.true(fs.existsSync(path.join(r.dst, "to-outside", "inside")));
});

test("contents that do not match their hash are refused and never placed", async (t) => {
  const bad: SyncRecord = { t: "file_inline", path: "f", meta: META, hash: sha("something else"), data: Buffer.from("evil") };
  const r = await play([frameOf([root, bad])]);
  t.is(r.error?.code, "data_loss");
  t.false(fs.existsSync(path.join(r.dst, "f")));
  t.false(fs.existsSync(path.join(r.dst, ".theseus-partial")), "staging is cleaned up");
});

test("a large file whose blocks do not match the final hash is refused and never placed", async (t) => {
  const r = await play([
    frameOf([
      root,
      { t: "file_begin", path: "big", meta: META, mode: "whole", baseHash: new Uint8Array(0), resumeFrom: 0 },
      { t: "data", offset: 0, data: Buffer.alloc(8192, 1) },
      { t: "file_end", size: 8192, hash: sha("not the list") },
    ]),
  ]);
  t.is(r.error?.code, "data_loss");
  t.false(fs.existsSync(path.join(r.dst, "big")));
});

test("misplaced and oversized blocks are refused", async (t) => {
  for (const rec of [
    { t: "data", offset: 100, data: Buffer.alloc(10) },
    { t: "data", offset: 8192, data: Buffer.alloc(10) },
    { t: "zero", offset: 0, length: 2 ** 50 },
  ] as SyncRecord[]) {
    const r = await play([frameOf([root, { t: "file_begin", path: "big", meta: META, mode: "whole", baseHash: new Uint8Array(0), resumeFrom: 0 }, rec])]);
    t.is(r.error?.code, "protocol", JSON.stringify(rec).slice(0, 60));
    t.false(fs.existsSync(path.join(r.dst, "big")));
  }
});

test("a patch against contents the target does not hold is refused", async (t) => {
  const r = await play([frameOf([root, { t: "file_begin", path: "big", meta: META, mode: "patch", baseHash: sha("x"), resumeFrom: 0 }])]);
  t.is(r.error?.code, "failed_precondition");
});

test("metadata for a fifo is refused (never opened for writing), and the reserved staging name is refused", async (t) => {
  const { dst, state } = setup();
  execFileSync("mkfifo", [path.join(dst, "pipe")]);
  const error = await t.throwsAsync<TheseusError>(
    runTargetRound({ root: dst, stateDir: state, logger: silentLogger() }, (up) =>
      (async function* () {
        yield* answerAfterIndex(up, [frameOf([root, { t: "file_meta", path: "pipe", meta: META, size: 0, hash: sha("") }])]);
      })(),
    ),
  );
  t.is(error?.code, "failed_precondition");
  const r = await play([frameOf([root, inline(".theseus-partial/x")])]);
  t.is(r.error?.code, "failed_precondition");
});

test("frames: a decompression bomb, a lying zstd header, garbage and truncation are refused", async (t) => {
  const header = (codec: number, rawLength: number, payload: Buffer): Buffer => {
    const h = Buffer.alloc(5);
    h[0] = codec;
    h.writeUInt32LE(rawLength, 1);
    return Buffer.concat([h, payload]);
  };
  const bomb = compress(Buffer.alloc(64 * 1024 * 1024));
  const cases: Array<[string, Buffer]> = [
    ["a bomb declared big", header(1, 64 * 1024 * 1024, bomb)],
    ["a bomb declared small", header(1, 1000, bomb)],
    ["two zstd frames", header(1, 20, Buffer.concat([compress(Buffer.alloc(10)), compress(Buffer.alloc(10))]))],
    ["garbage zstd", header(1, 10, Buffer.from("not zstd at all"))],
    ["an unknown codec", header(7, 3, Buffer.from("abc"))],
    ["a raw length mismatch", header(0, 10, Buffer.from("abc"))],
    ["a truncated record", frameOf([root]).subarray(0, 9)],
    ["an unknown record kind", header(0, 1, Buffer.from([99]))],
  ];
  for (const [name, frame] of cases) {
    const r = await play([frame]);
    t.is(r.error?.code, "protocol", `${name}: ${r.error?.message ?? "accepted"}`);
  }
});

test("a stream that ends without its end record fails the round as unavailable, with a hint to resume", async (t) => {
  const r = await play([frameOf([root, inline("a")])]);
  t.is(r.error?.code, "unavailable");
  t.truthy(r.error?.hint);
});

async function* answerAfterIndex(up: AsyncIterable<Uint8Array>, frames: Uint8Array[]): AsyncGenerator<Uint8Array> {
  // A source's first record (protocol 6): it holds no block lists.
  yield frameOf([{ t: "lists_held", hashes: new Uint8Array(0), last: true }]);
  const it = up[Symbol.asyncIterator]();
  const decoder = new FrameDecoder();
  for (let ended = false; !ended; ) {
    const r = await it.next();
    if (r.done === true) break;
    ended = decodeFrameRecords(decoder.decode(r.value)).some((rec) => rec.t === "index_end");
  }
  void (async () => {
    for (let r = await it.next(); r.done !== true; r = await it.next());
  })();
  yield* frames;
}

