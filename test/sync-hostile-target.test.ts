// A hostile or broken SOURCE against the real target agent (a `theseus-agent` process): a TransferService served here
// with agent eu-1's valid certificate, from which the coordinator tells the real target (us-2) to pull (issue 13).
import anyTest from "ava";
import type { TestFn } from "ava";
import fs from "node:fs";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import path from "node:path";
import type { AgentProcess } from "../coordinator/index.js";
import type { ErrorCode } from "../common/index.js";
import { decodeFrameRecords, emptyRoundStats, FrameDecoder } from "../agent/sync/codec.js";
import type { SyncRecord } from "../agent/sync/codec.js";
import { answerAfterIndex, createWorld, framesOf, HELD_NONE, META, pull, ROOT, sha, startHostileSource } from "./sync-hostile-helpers.js";
import type { HostileSource, HostileSourceScript, World } from "./sync-hostile-helpers.js";

interface Context {
  world: World;
  target: AgentProcess;
  hostile: HostileSource;
  /** What the hostile source plays on its next Sync call. */
  play: { script: HostileSourceScript };
  vol(name: string): string;
}
const test = anyTest.serial as TestFn<Context>;

const VOLUMES = ["staging-swap", "link-staging", "far-patch", "compressed", "append"];

test.before(async (t) => {
  const world = await createWorld("hostile-target");
  const vol = (name: string): string => path.join(world.work, "volumes", name);
  for (const v of VOLUMES) fs.mkdirSync(vol(v), { recursive: true });
  const target = await world.spawn("us-2", Object.fromEntries(VOLUMES.map((v) => [v, vol(v)])));
  const play = { script: answerAfterIndex([]) };
  const hostile = await startHostileSource(world, (up, ctx) => play.script(up, ctx));
  t.context = { world, target, hostile, play, vol };
});

test.after.always(async (t) => {
  await t.context.hostile?.close();
  await t.context.world?.cleanup();
});

const BOGUS_END: SyncRecord = { t: "end", digest: sha("made up"), stats: emptyRoundStats() };

/** Plays one round of `records` from the hostile source into `volume` of the real target. */
async function round(t: { context: Context }, volume: string, records: SyncRecord[]): Promise<ReturnType<typeof pull>> {
  t.context.play.script = answerAfterIndex(framesOf(records));
  return pull(t.context.world, t.context.target, t.context.hostile.address, volume);
}

/** A round cut inside a large file: the target keeps its first verified blocks in .theseus-partial/resume. */
async function cutInsideLargeFile(t: { context: Context }, volume: string): Promise<void> {
  const r = await round(t, volume, [
    ROOT,
    { t: "file_begin", path: "big", meta: META, mode: "whole", baseHash: new Uint8Array(0), resumeFrom: 0 },
    { t: "data", offset: 0, data: Buffer.alloc(8192, 7) },
  ]);
  if (r.error?.code !== "unavailable") throw new Error(`the cut round ended with ${r.error?.code ?? "success"}: ${r.error?.message ?? ""}`);
  if (!fs.statSync(path.join(t.context.vol(volume), ".theseus-partial", "resume")).isFile()) throw new Error("no resume file kept");
}

test("defect 1: a staging directory swapped for a symlink is never followed (nothing outside deleted, truncated or moved in)", async (t) => {
  const dst = t.context.vol("staging-swap");
  await cutInsideLargeFile(t, "staging-swap");
  // Anyone who can write the volume root replaces the staging directory with a link to a directory outside.
  const outside = path.join(t.context.world.work, "outside-1");
  fs.mkdirSync(outside);
  fs.writeFileSync(path.join(outside, "victim"), "precious");
  fs.writeFileSync(path.join(outside, "resume"), Buffer.alloc(16384, 1));
  fs.rmSync(path.join(dst, ".theseus-partial"), { recursive: true });
  fs.symlinkSync(outside, path.join(dst, ".theseus-partial"));
  // The next ordinary round: a large file resumed, a small one, the end.
  const big = Buffer.alloc(2 * 1024 * 1024, 7);
  await round(t, "staging-swap", [
    ROOT,
    { t: "file_begin", path: "big", meta: META, mode: "whole", baseHash: new Uint8Array(0), resumeFrom: 8192 },
    { t: "data", offset: 8192, data: big.subarray(8192, 1024 * 1024) },
    { t: "file_end", size: 1024 * 1024, hash: sha("whatever") },
    { t: "file_inline", path: "small", meta: META, hash: sha("x"), data: Buffer.from("x") },
    BOGUS_END,
  ]);
  t.deepEqual(fs.readdirSync(outside).sort(), ["resume", "victim"]);
  t.is(fs.readFileSync(path.join(outside, "victim"), "utf8"), "precious");
  t.deepEqual(fs.readFileSync(path.join(outside, "resume")), Buffer.alloc(16384, 1));
  t.false(fs.existsSync(path.join(dst, "big")), "the outside file was moved into the volume");
  const st = fs.lstatSync(path.join(dst, ".theseus-partial"), { throwIfNoEntry: false });
  t.false(st?.isSymbolicLink() ?? false, "the symlink is still there");
});

test("defect 1: a staging directory that is not the agent's own fails the round and is not emptied", async (t) => {
  const dst = t.context.vol("staging-swap");
  fs.rmSync(path.join(dst, ".theseus-partial"), { recursive: true, force: true });
  fs.mkdirSync(path.join(dst, ".theseus-partial"), { mode: 0o777 });
  fs.chmodSync(path.join(dst, ".theseus-partial"), 0o777);
  fs.writeFileSync(path.join(dst, ".theseus-partial", "someone-elses"), "data");
  const r = await round(t, "staging-swap", [ROOT, { t: "file_inline", path: "small", meta: META, hash: sha("x"), data: Buffer.from("x") }, BOGUS_END]);
  t.is(r.error?.code, "failed_precondition", r.error?.message);
  t.true(fs.existsSync(path.join(dst, ".theseus-partial", "someone-elses")));
  fs.rmSync(path.join(dst, ".theseus-partial"), { recursive: true, force: true });
});

test("defect 9: a hard link into the staging directory is refused, nothing unverified is published", async (t) => {
  const dst = t.context.vol("link-staging");
  await cutInsideLargeFile(t, "link-staging");
  const r = await round(t, "link-staging", [ROOT, { t: "hardlink", path: "leak", to: ".theseus-partial/resume", hash: sha("") }, BOGUS_END]);
  t.is(r.error?.code, "failed_precondition", r.error?.message);
  t.false(fs.existsSync(path.join(dst, "leak")));
});

/** Reads the target's index until its end, remembering each entry's hash; then answers what `answer` builds from it. */
function answerWithIndex(answer: (hashes: Map<string, Uint8Array>) => SyncRecord[]): HostileSourceScript {
  return async function* (up) {
    yield* framesOf([HELD_NONE]);
    const decoder = new FrameDecoder();
    const hashes = new Map<string, Uint8Array>();
    for (let ended = false; !ended; ) {
      const r = await up.next();
      if (r.done === true) return;
      for (const rec of decodeFrameRecords(decoder.decode(r.value.frame))) {
        if (rec.t === "entry") hashes.set(rec.e.path, Buffer.from(rec.e.hash));
        if (rec.t === "index_end") ended = true;
      }
    }
    void (async () => {
      try {
        for (let r = await up.next(); r.done !== true; r = await up.next());
      } catch {
        // the call ended
      }
    })();
    yield* framesOf(answer(hashes));
  };
}

test("defect 3: a far patch block is refused before anything is written, and a lying end leaves the old size", async (t) => {
  const dst = t.context.vol("far-patch");
  const OLD = 2 * 1024 * 1024;
  fs.writeFileSync(path.join(dst, "db"), Buffer.alloc(OLD, 3));
  const TIB = 2 ** 40;
  const patch = (hashes: Map<string, Uint8Array>): SyncRecord => ({
    t: "file_begin",
    path: "db",
    meta: META,
    mode: "patch",
    baseHash: hashes.get("db") ?? new Uint8Array(32),
    resumeFrom: 0,
  });
  const attacks: Array<[string, (h: Map<string, Uint8Array>) => SyncRecord[], ErrorCode]> = [
    ["a data block at 1 TiB", (h) => [ROOT, patch(h), { t: "data", offset: TIB, data: Buffer.alloc(4096, 9) }], "protocol"],
    [
      // 4 GiB, not more: a large file's block list is still one Buffer (defects 2 and 4 are open).
      "a zero run to 4 GiB and an end with a false hash",
      (h) => [ROOT, patch(h), { t: "zero", offset: OLD, length: 2 ** 32 - OLD }, { t: "file_end", size: 2 ** 32, hash: sha("lie") }],
      "data_loss",
    ],
    [
      "a data block past the end and an end with a false hash",
      (h) => [ROOT, patch(h), { t: "data", offset: OLD, data: Buffer.alloc(4096, 9) }, { t: "file_end", size: OLD + 4096, hash: sha("lie") }],
      "data_loss",
    ],
  ];
  for (const [name, records, code] of attacks) {
    t.context.play.script = answerWithIndex(records);
    const r = await pull(t.context.world, t.context.target, t.context.hostile.address, "far-patch");
    t.is(r.error?.code, code, `${name}: ${r.error?.message ?? "accepted"}`);
    t.is(fs.statSync(path.join(dst, "db")).size, OLD, `${name}: the file's size changed`);
  }
});

test("issue 12: a small-file append with a wrong base, a lying hash or oversized lengths is refused, the target's file unchanged", async (t) => {
  const dst = t.context.vol("append");
  const outside = path.join(t.context.world.work, "append-outside");
  const BASE = Buffer.from("line 1\nline 2\n");
  const TAIL = Buffer.from("line 3\n");
  fs.writeFileSync(path.join(dst, "log"), BASE);
  fs.writeFileSync(outside, BASE);
  // A symlink whose target holds the base: an append must not follow it (nor write outside the volume).
  fs.symlinkSync(outside, path.join(dst, "link"));
  const append = (over: Partial<Extract<SyncRecord, { t: "file_append" }>> = {}): SyncRecord => ({
    t: "file_append",
    path: "log",
    meta: META,
    baseSize: BASE.length,
    baseHash: sha(BASE),
    hash: sha(Buffer.concat([BASE, TAIL])),
    tail: TAIL,
    ...over,
  });
  const attacks: Array<[string, SyncRecord, ErrorCode]> = [
    ["a wrong base hash", append({ baseHash: sha("another base") }), "failed_precondition"],
    ["a wrong base size", append({ baseSize: BASE.length - 1, baseHash: sha(BASE.subarray(0, BASE.length - 1)) }), "failed_precondition"],
    ["a lying hash of the result", append({ hash: sha("not the result") }), "data_loss"],
    ["a base of 1 TiB", append({ baseSize: 2 ** 40 }), "protocol"],
    ["base and tail together a large file", append({ tail: Buffer.alloc(1024 * 1024 - BASE.length, 1) }), "protocol"],
    ["an empty tail", append({ tail: Buffer.alloc(0) }), "protocol"],
    ["an append to a symlink", append({ path: "link" }), "failed_precondition"],
    ["an append through a symlink", append({ path: "link/log" }), "protocol"],
    ["an append to a path outside the volume", append({ path: "../append-outside" }), "protocol"],
  ];
  for (const [name, record, code] of attacks) {
    const r = await round(t, "append", [ROOT, record, BOGUS_END]);
    t.is(r.error?.code, code, `${name}: ${r.error?.message ?? "accepted"}`);
    t.deepEqual(fs.readFileSync(path.join(dst, "log")), BASE, `${name}: the target's file changed`);
    t.deepEqual(fs.readFileSync(outside), BASE, `${name}: the file outside the volume changed`);
    t.false(fs.existsSync(path.join(dst, ".theseus-partial")), `${name}: staging left behind`);
  }
  // The control: the same record told the truth is applied (the made-up digest fails the round only at its end).
  const honest = await round(t, "append", [ROOT, append(), BOGUS_END]);
  t.is(honest.error?.code, "data_loss", honest.error?.message);
  t.deepEqual(fs.readFileSync(path.join(dst, "log")), Buffer.concat([BASE, TAIL]));
  t.true(fs.lstatSync(path.join(dst, "link")).isSymbolicLink());
});

test("a peer's error text reaches the coordinator without escape sequences or newlines", async (t) => {
  const r = await round(t, "far-patch", [ROOT, { t: "error", code: "internal", message: "\u001b[2J\u001b[31mall good\nerror (ok): \u0007done" }]);
  t.is(r.error?.code, "internal");
  t.notRegex(r.error?.message ?? "", /[\u0000-\u001f\u007f-\u009f]/);
});

test("a gRPC message with the compressed flag but no encoding gets a real error, not 'undefined undefined: undefined'", async (t) => {
  const { world, target } = t.context;
  // Below the adapter: a raw HTTP/2 server with agent eu-1's certificate answers Sync with one message whose
  // compressed flag is set, without any grpc-encoding header.
  const server = http2.createSecureServer({ ca: world.eu1.caPem, cert: world.eu1.certPem, key: world.eu1.keyPem, requestCert: true, minVersion: "TLSv1.3" });
  server.on("stream", (stream) => {
    stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
    stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
    stream.end(Buffer.from([1, 0, 0, 0, 2, 0x0a, 0x00]));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    const r = await pull(world, target, `127.0.0.1:${(server.address() as AddressInfo).port}`, "compressed");
    t.is(r.error?.code, "protocol", r.error?.message);
    t.regex(r.error?.message ?? "", /compressed flag without a grpc-encoding/);
    t.notRegex(r.error?.message ?? "", /undefined/);
    t.regex(r.error?.hint ?? "", /never compress/);
  } finally {
    server.close();
  }
});
