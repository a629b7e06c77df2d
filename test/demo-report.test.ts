// The demo's verdict and text report: derived from the one document `--json` prints, so both say the same thing.
import test from "ava";
import { formatDemoReport, verdictOf } from "../coordinator/demo/index.js";
import type { DemoReport } from "../coordinator/demo/index.js";

const base: Omit<DemoReport, "verdict" | "verified"> = {
  migrationId: "m-1",
  outcome: "committed",
  source: { cluster: "eu-1", namespace: "ledger", storageClass: "local-path" },
  target: { cluster: "us-2", namespace: "ledger-us", storageClass: "local-path-immediate" },
  volume: { sizeBytes: 1024 ** 3, seedBytes: 512 * 1024 ** 2, usedBytesAtEnd: 700 * 1024 ** 2 },
  load: { recordBytes: 65536, ratePerSecond: 76, writeBytesPerSecond: 5_000_000, errors: 3 },
  ackedWrites: 1000,
  ackedBytes: 65_536_000,
  lostWrites: 0,
  downtimeMs: { measured: 1500, predicted: 1400, coordinator: 1700 },
  timeline: [
    { phase: "presyncing", startedAtMs: 1000, durationMs: 20_000 },
    { phase: "quiescing", startedAtMs: 21_000, durationMs: 500 },
  ],
  rounds: [{ volume: "ledger/ledger-data", round: 0, bytesChanged: 600 * 1024 ** 2, wireBytes: 600 * 1024 ** 2, durationMs: 9000, dirtyBytesPerSecond: 0 }],
  problems: [],
  durationMs: 90_000,
};

test("a committed migration with every ack present is verified; the verdict names the downtime and how far off the prediction was", (t) => {
  const v = verdictOf(base);
  t.true(v.verified);
  t.regex(v.verdict, /^VERIFIED: all 1000 acknowledged writes arrived in us-2\/ledger-us/);
  t.regex(v.verdict, /down 1\.50 s as its client saw it \(within the 3\.00 s target\)/);
  // The prediction is of the window quiesce -> target ready, so it is judged against the coordinator's measure of it.
  t.regex(v.verdict, /the cutover took 1\.70 s from quiesce to the target ready, 1\.40 s predicted \(-18%\)/);
  t.regex(verdictOf({ ...base, downtimeMs: { measured: 1500, predicted: 1400, coordinator: null } }).verdict, /\(-7%\)/, "without the coordinator's measure, the client's");
});

test("a prediction outside ±30% and a downtime over 3 s are said, but do not fail the data proof", (t) => {
  const v = verdictOf({ ...base, downtimeMs: { measured: 10_000, predicted: 5000, coordinator: 12_000 } });
  t.true(v.verified);
  t.regex(v.verdict, /over the 3\.00 s target/);
  t.regex(v.verdict, /-58%, outside ±30%\)/);
});

test("a lost write, an abort or no write at all is a failure that says which", (t) => {
  t.regex(verdictOf({ ...base, lostWrites: 2 }).verdict, /^FAILED: 2 of 1000 acknowledged writes are not in us-2/);
  t.regex(verdictOf({ ...base, outcome: "aborted", reason: "cutover refused" }).verdict, /^FAILED: the migration aborted: cutover refused/);
  t.regex(verdictOf({ ...base, ackedWrites: 0 }).verdict, /^FAILED: no write was acknowledged/);
  t.false(verdictOf({ ...base, problems: ["page 3: checksum"] }).verified);
});

test("the text report has the timeline, each round, both downtimes beside the prediction, and the verdict last", (t) => {
  const text = formatDemoReport({ ...base, ...verdictOf(base) });
  t.regex(text, /\+ {3}0\.0s {2}presyncing/);
  t.regex(text, /\+ {2}20\.0s {2}quiescing/);
  t.regex(text, /ledger\/ledger-data +0 +600\.0 MiB/);
  t.regex(text, /predicted at cutover: +1\.40 s/);
  t.regex(text, /measured by the load client: +1\.50 s/);
  t.regex(text, /measured by the coordinator: +1\.70 s/);
  t.regex(text.split("\n").at(-1) ?? "", /^verdict: VERIFIED/);
});

test("the text report shows what the prediction was made of: quiesce, the final round's model, start-up, each with its source", (t) => {
  const prediction = {
    downtimeMs: 1400,
    quiesceMs: 800,
    quiesceBasis: "estimated: 600 ms for the scale-down + 200 ms for the app to stop",
    finalRoundMs: 300,
    finalRoundBytes: 2 * 1024 ** 2,
    startupMs: 1500,
    startupBasis: "observed: pod status of 1 running source pod",
    fixedMs: 120,
    throughputBytesPerSecond: 40 * 1024 ** 2,
    dirtyBytesPerSecond: 5 * 1024 ** 2,
  };
  const text = formatDemoReport({ ...base, prediction, ...verdictOf(base) });
  t.regex(text, /quiesce +800 ms \(estimated: 600 ms/);
  t.regex(text, /final round +300 ms \(2\.00 MiB: fixed 120 ms, 40\.0 MiB\/s, app writing 5\.00 MiB\/s\)/);
  t.regex(text, /start-up +1\.50 s \(observed: pod status/);
  t.notRegex(formatDemoReport({ ...base, ...verdictOf(base) }), /start-up/, "no terms without a prediction");
});
