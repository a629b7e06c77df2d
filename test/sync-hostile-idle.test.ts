// Idle bounds of a round (issue 13, "also found"), against real `theseus-agent` processes over real mTLS, with the
// timeouts made small through the environment the agents inherit: a Sync that never sends its first message is ended;
// a peer silent mid-round ends the round on either side and releases the volume; a Sync whose client half-closes ends;
// a slow-but-alive round is kept alive by keepalive frames.
import anyTest from "ava";
import type { TestFn } from "ava";
import fs from "node:fs";
import path from "node:path";
import type { AgentProcess } from "../coordinator/index.js";
import { copyVolume } from "../coordinator/index.js";
import { TheseusError } from "../common/index.js";
import { PROTOCOL_VERSION } from "../agent/sync/codec.js";
import type { SyncRecord } from "../agent/sync/codec.js";
import { createWorld, framesOf, HELD_NONE, hostileSync, openSession, pull, pushable, recordsOf, ROOT, startHostileSource } from "./sync-hostile-helpers.js";
import type { HostileSource, HostileSourceScript, World } from "./sync-hostile-helpers.js";

const FIRST_MESSAGE_MS = 1500;
const IDLE_MS = 4000;
const KEEPALIVE_MS = 500;
process.env["THESEUS_SYNC_FIRST_MESSAGE_MS"] = String(FIRST_MESSAGE_MS);
process.env["THESEUS_SYNC_IDLE_MS"] = String(IDLE_MS);
process.env["THESEUS_SYNC_KEEPALIVE_MS"] = String(KEEPALIVE_MS);

interface Context {
  world: World;
  source: AgentProcess;
  target: AgentProcess;
  hostile: HostileSource;
  play: { script: HostileSourceScript };
  vol: (side: "src" | "dst", name: string) => string;
}
const test = anyTest.serial as TestFn<Context>;

test.before(async (t) => {
  const world = await createWorld("hostile-idle");
  const vol = (side: "src" | "dst", name: string): string => path.join(world.work, side, name);
  for (const side of ["src", "dst"] as const) fs.mkdirSync(vol(side, "v"), { recursive: true });
  fs.writeFileSync(path.join(vol("src", "v"), "f"), "contents\n");
  const source = await world.spawn("eu-1", { v: vol("src", "v") });
  const target = await world.spawn("us-2", { v: vol("dst", "v") });
  const play: { script: HostileSourceScript } = { script: async function* () {} };
  const hostile = await startHostileSource(world, (up, ctx) => play.script(up, ctx));
  t.context = { world, source, target, hostile, play, vol };
});

test.after.always(async (t) => {
  await t.context.hostile?.close();
  await t.context.world?.cleanup();
});

const START: SyncRecord = { t: "start", version: PROTOCOL_VERSION, targetUid: 0, targetGid: 0, preserveOwner: false, stripSetid: false };

/** Reads a hostile target's call to its end: the records, its error, and how long it took. */
async function drain(frames: AsyncIterable<Uint8Array>, onFrame?: (f: Uint8Array) => void): Promise<{ records: SyncRecord[]; error: TheseusError | undefined; ms: number }> {
  const started = performance.now();
  const records: SyncRecord[] = [];
  try {
    const counted = (async function* () {
      for await (const f of frames) {
        onFrame?.(f);
        yield f;
      }
    })();
    for await (const r of recordsOf(counted)) records.push(r);
    return { records, error: undefined, ms: performance.now() - started };
  } catch (e) {
    return { records, error: TheseusError.from(e), ms: performance.now() - started };
  }
}

const bounded = <T>(ms: number, p: Promise<T>): Promise<T | "hung"> =>
  Promise.race([p, new Promise<"hung">((resolve) => setTimeout(() => resolve("hung"), ms).unref())]);

test("a Sync that never sends its first message is ended after the first-message timeout", async (t) => {
  const { world, source } = t.context;
  const up = pushable<{ frame: Uint8Array }>();
  const call = hostileSync(world, source, "no-token-needed-to-wait", up.iterable);
  const r = await bounded(FIRST_MESSAGE_MS + 10_000, drain(call.frames));
  call.close();
  if (r === "hung") return t.fail("the silent call was never ended");
  t.is(r.error?.code, "deadline_exceeded", r.error?.message);
  t.true(r.ms >= FIRST_MESSAGE_MS - 100, `ended after ${r.ms.toFixed(0)} ms`);
});

test("a target silent mid-round (its index never ends) is ended after the idle timeout, and the volume is released", async (t) => {
  const { world, source, target } = t.context;
  const session = await openSession(world, source, "v");
  const up = pushable<{ sessionId?: string; frame: Uint8Array }>();
  up.push({ sessionId: session.sessionId, frame: framesOf([START])[0] as Buffer });
  const call = hostileSync(world, source, session.token, up.iterable);
  const r = await bounded(IDLE_MS + 15_000, drain(call.frames));
  call.close();
  if (r === "hung") return t.fail("the silent round was never ended");
  t.is(r.error?.code, "deadline_exceeded", r.error?.message);
  // The volume is free again: an ordinary round runs.
  const next = await copyVolume({ from: source.address, to: target.address, volume: "v", tls: world.coordinator });
  t.is(Number(next.stats.entriesChanged) > 0, true);
});

test("a Sync whose client half-closes before its index ended ends (with the reason), and so does one after it", async (t) => {
  const { world, source } = t.context;
  for (const records of [[START], [START, { t: "index_end" } as SyncRecord]]) {
    const session = await openSession(world, source, "v");
    const up = pushable<{ sessionId?: string; frame: Uint8Array }>();
    up.push({ sessionId: session.sessionId, frame: framesOf(records)[0] as Buffer });
    up.end();
    const call = hostileSync(world, source, session.token, up.iterable);
    const r = await bounded(IDLE_MS + 15_000, drain(call.frames));
    call.close();
    if (r === "hung") return t.fail(`the half-closed call (${records.length} records) never ended`);
    t.log(`${records.length} records then half-close: ended after ${r.ms.toFixed(0)} ms with ${r.error?.code ?? r.records.map((x) => x.t).join(",")}`);
    if (records.length === 1) t.true(r.records.some((x) => x.t === "error") || r.error !== undefined);
    else t.true(r.records.some((x) => x.t === "end"), "a complete index, half-closed: the round still completes");
  }
});

test("a slow-but-alive target is kept alive: the real source sends keepalive frames while it waits for the index", async (t) => {
  const { world, source } = t.context;
  const session = await openSession(world, source, "v");
  const up = pushable<{ sessionId?: string; frame: Uint8Array }>();
  up.push({ sessionId: session.sessionId, frame: framesOf([START])[0] as Buffer });
  const call = hostileSync(world, source, session.token, up.iterable);
  let empty = 0;
  // The index ends after half the idle timeout, as after a slow walk; meanwhile the source has nothing to send.
  setTimeout(() => {
    up.push({ frame: framesOf([{ t: "index_end" }])[0] as Buffer });
  }, IDLE_MS / 2).unref();
  const r = await drain(call.frames, (f) => {
    if (f.length === 5) empty++;
  });
  up.end();
  call.close();
  t.is(r.error, undefined, r.error?.message);
  t.true(r.records.some((x) => x.t === "end"));
  t.true(empty >= 2, `${empty} keepalive frames while the index was pending`);
});

test("a source silent mid-round ends the target's round after the idle timeout, and the target's volume is released", async (t) => {
  const { world, source, target, hostile, play } = t.context;
  play.script = async function* (up) {
    // Read the target's index and answer the root, then say nothing more (but keep reading).
    void (async () => {
      try {
        for (let r = await up.next(); r.done !== true; r = await up.next());
      } catch {
        // ended
      }
    })();
    yield* framesOf([HELD_NONE, ROOT]);
    await new Promise<void>(() => undefined);
  };
  const r = await bounded(IDLE_MS + 15_000, pull(world, target, hostile.address, "v"));
  if (r === "hung") return t.fail("the target waited for ever on a silent source");
  t.is(r.error?.code, "deadline_exceeded", r.error?.message);
  t.regex(r.error?.message ?? "", /the source sent nothing for \d+ s/);
  const session = await openSession(world, source, "v");
  const next = await pull(world, target, source.address, "v", session);
  t.is(next.error, undefined, next.error?.message);
});
