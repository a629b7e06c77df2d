// The journal on a real file system: records come back in order and replay into the driver's state, a write a crash
// cut short is not a record, a damaged one is refused, other processes' requests are seen by a follower, and one
// live driver keeps a second one out while a dead one's lock is taken over.
import { appendFile, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { toJson, create } from "@bufbuild/protobuf";
import test from "ava";
import { RoundStatsSchema } from "../proto/gen/theseus/v1/agent_pb.js";
import { journalPath, readMigration, replay } from "../coordinator/migration/index.js";
import type { MigrationSpec } from "../coordinator/migration/index.js";
import { appendToJournal, followJournal, openJournal, readJournal, readJournalFrom } from "../coordinator/migration/journal.js";
import { acquireDriverLock, liveDriver } from "../coordinator/migration/driver-lock.js";

const homes: string[] = [];
test.after.always(async () => {
  for (const home of homes) await rm(home, { recursive: true, force: true });
});

async function home(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "theseus-journal-"));
  homes.push(dir);
  return dir;
}

const spec = (id: string): MigrationSpec => ({
  id,
  from: { name: "eu", address: "127.0.0.1:1", cluster: "eu" },
  to: { name: "us", address: "127.0.0.1:2", cluster: "us" },
  plan: { namespace: "shop", toNamespace: "shop-us", migrationId: id },
  mode: "move",
  bandwidthBytesPerSecond: 0,
  autoCutover: true,
  maxDowntimeMs: 3000,
  cutoverAtMs: undefined,
  leaseMs: 30_000,
  quiesceEstimateMs: 1000,
  startupEstimateMs: 2000,
});

const placement = { sourceCluster: "eu", targetCluster: "us", sourceNamespace: "shop", targetNamespace: "shop-us", labelSelector: "", helmRelease: "" };

test("records are durable lines that replay into the phase, the timeline, the rounds, the rate and the requests", async (t) => {
  const dir = await home();
  const journal = await openJournal(dir, "m1");
  await journal.append({ type: "created", spec: spec("m1") });
  await journal.append({ type: "planned", placement });
  await journal.append({ type: "staged", volumes: [{ sourceVolume: "shop/data", targetVolume: "shop-us/data", usedBytes: 10 }] });
  await journal.append({ type: "begun" });
  const round = create(RoundStatsSchema, { round: 1, bytesChanged: 5n, sourceDigest: new Uint8Array([1, 2]), targetDigest: new Uint8Array([1, 2]) });
  await journal.append({ type: "round", volume: "shop/data", final: false, round: toJson(RoundStatsSchema, round) });
  await journal.close();
  await appendToJournal(dir, "m1", { type: "rate", bytesPerSecond: 1_000_000 });
  await appendToJournal(dir, "m1", { type: "request", request: "cutover" });

  const text = await readFile(journalPath(dir, "m1"), "utf8");
  t.is(text.split("\n").length, 8, "seven lines, each ended by its newline");
  t.is(((await stat(journalPath(dir, "m1"))).mode & 0o777), 0o600, "the journal is the user's alone");
  const view = await readMigration(dir, "m1");
  t.is(view.state.phase, "presyncing");
  t.deepEqual(view.timeline.map((e) => e.phase), ["planning", "staging", "beginning", "presyncing"]);
  t.is(view.rounds.length, 1);
  t.is(view.rounds[0]?.round.bytesChanged, 5n);
  t.deepEqual([...(view.rounds[0]?.round.sourceDigest ?? [])], [1, 2]);
  t.is(view.bandwidthBytesPerSecond, 1_000_000);
  t.deepEqual(view.requests, [{ request: "cutover" }]);
});

test("a last line a crash cut short is not a record; it is read once its newline arrives", async (t) => {
  const dir = await home();
  const journal = await openJournal(dir, "m2");
  await journal.append({ type: "created", spec: spec("m2") });
  await journal.close();
  const half = JSON.stringify({ atMs: 1, type: "planned", placement });
  await appendFile(journalPath(dir, "m2"), half.slice(0, 20));
  const before = await readJournalFrom(dir, "m2", 0);
  t.is(before.records.length, 1);
  t.is(replay(before.records).state.phase, "planning");
  await appendFile(journalPath(dir, "m2"), `${half.slice(20)}\n`);
  const after = await readJournalFrom(dir, "m2", before.offset);
  t.deepEqual(after.records.map((r) => r.type), ["planned"]);
});

test("a damaged record in the middle is refused as data loss, and an unknown id as not found", async (t) => {
  const dir = await home();
  const journal = await openJournal(dir, "m3");
  await journal.append({ type: "created", spec: spec("m3") });
  await journal.close();
  await appendFile(journalPath(dir, "m3"), "{not json\n");
  const error = await t.throwsAsync(readJournal(dir, "m3"));
  t.is((error as { code?: string } | undefined)?.code, "data_loss");
  const missing = await t.throwsAsync(readJournal(dir, "nope"));
  t.is((missing as { code?: string } | undefined)?.code, "not_found");
  t.regex(missing?.message ?? "", /no migration nope/);
});

test("a journal that does not replay through the transitions is refused, not guessed at", async (t) => {
  const dir = await home();
  const journal = await openJournal(dir, "m4");
  await journal.append({ type: "created", spec: spec("m4") });
  await journal.append({ type: "commit-decided" });
  await journal.close();
  const error = await t.throwsAsync(readMigration(dir, "m4"));
  t.is((error as { code?: string } | undefined)?.code, "failed_precondition");
});

test("a follower sees what other processes append after its offset", async (t) => {
  const dir = await home();
  const journal = await openJournal(dir, "m5");
  await journal.append({ type: "created", spec: spec("m5") });
  await journal.close();
  const { offset } = await readJournalFrom(dir, "m5", 0);
  const controller = new AbortController();
  const seen: string[] = [];
  const following = (async () => {
    for await (const record of followJournal(dir, "m5", offset, 20, controller.signal)) {
      seen.push(record.type === "request" ? `request:${record.request}` : record.type);
      if (seen.length === 2) controller.abort();
    }
  })();
  await appendToJournal(dir, "m5", { type: "request", request: "abort", reason: "user" });
  await appendToJournal(dir, "m5", { type: "request", request: "cutover" });
  await following;
  t.deepEqual(seen, ["request:abort", "request:cutover"]);
});

test("one live driver per migration; a dead driver's lock is taken over", async (t) => {
  const dir = await home();
  const journal = await openJournal(dir, "m6");
  await journal.append({ type: "created", spec: spec("m6") });
  await journal.close();
  const lockFile = join(dir, "migrations", "m6", "driver.pid");
  // The test runner's parent is alive and is not us: a driver elsewhere.
  await writeFile(lockFile, `${process.ppid}\n`);
  t.is(await liveDriver(dir, "m6"), process.ppid);
  const refused = await t.throwsAsync(acquireDriverLock(dir, "m6"));
  t.is((refused as { code?: string } | undefined)?.code, "failed_precondition");
  t.regex(refused?.message ?? "", new RegExp(`process ${process.ppid}`));
  // A pid no process has (beyond pid_max): the crashed driver's leftover.
  await writeFile(lockFile, "99999999\n");
  t.is(await liveDriver(dir, "m6"), undefined);
  const lock = await acquireDriverLock(dir, "m6");
  t.is(await liveDriver(dir, "m6"), process.pid);
  await lock.release();
  t.is(await liveDriver(dir, "m6"), undefined);
});
