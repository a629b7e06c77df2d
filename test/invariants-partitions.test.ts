// Partitions and a full disk on two local clusters: the agents' and the coordinator's links cut (through cuttable
// proxies on 127.0.0.1, the substitution for network namespaces named in ./invariants/proxy.ts) in the middle of a
// pre-sync round, in the final round, between the coordinator and the source after prepare, and between the
// coordinator and the target after the commit point; and the target's volume on a small tmpfs that the final round
// fills. The four invariants as for a crash; report: test-results/invariants/partitions.md.
import anyTest from "ava";
import type { TestFn } from "ava";
import { allHeld, startBench, stopBench } from "./invariants/bench.js";
import type { Bench, CaseResult } from "./invariants/bench.js";
import { DISRUPTIONS, fullDisk, runDisruption, startLinks } from "./invariants/disruptions.js";
import type { Links } from "./invariants/disruptions.js";
import { writeReport } from "./invariants/report.js";

interface Context {
  bench: Bench | undefined;
  links: Links | undefined;
}
const test = anyTest as TestFn<Context>;
const results: CaseResult[] = [];

test.before(async (t) => {
  t.timeout(12 * 60_000);
  t.context.bench = undefined;
  t.context.links = undefined;
  t.context.bench = await startBench("part");
  t.context.links = await startLinks(t.context.bench);
});

test.after.always(async (t) => {
  await writeReport("partitions", "Partitions and a full disk", results);
  await t.context.links?.close();
  await stopBench(t.context.bench);
});

const only = process.env["THESEUS_MATRIX_ONLY"];
// The disk first: its tmpfs hides the target's PV directory for as long as it is mounted.
for (const [index, d] of [fullDisk(), ...DISRUPTIONS].entries()) {
  if (only !== undefined && !d.name.includes(only)) continue;
  test.serial(d.name, async (t) => {
    t.timeout(8 * 60_000);
    const { bench, links } = t.context;
    if (bench === undefined || links === undefined) throw new Error("no bench");
    const r = await runDisruption(bench, links, d, index);
    results.push(r);
    t.log(`${r.outcome}; ${r.notes.join("; ")}${r.reason === "" ? "" : `; reason: ${r.reason}`}`);
    t.true(r.reached, r.notes.join("; "));
    t.true(r.singleWriter.held, `single writer: ${r.singleWriter.detail}`);
    t.true(r.noDataLoss.held, `no data loss: ${r.noDataLoss.detail}`);
    t.true(r.atomicity.held, `atomicity: ${r.atomicity.detail}`);
    t.true(r.liveness.held, `liveness: ${r.liveness.detail}`);
    if (d.expect !== undefined) t.is(r.outcome, d.expect, `reason: ${r.reason}`);
    t.true(allHeld(r));
  });
}
