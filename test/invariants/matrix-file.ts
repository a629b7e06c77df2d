// One test file's share of the crash matrix: the cases of one owner, serially on one bench (two clusters), a test per
// case, the report written whatever happens. Cases known to fail (a protocol gap reported, not yet fixed) run as
// ava's test.failing with the reason, so that the suite stays green and the gap stays visible.
import anyTest from "ava";
import type { TestFn } from "ava";
import { allHeld, runMatrixCase, startBench, stopBench } from "./bench.js";
import type { Bench, CaseResult } from "./bench.js";
import { caseName, matrixCases } from "./cases.js";
import type { MatrixCase } from "./cases.js";
import { writeReport } from "./report.js";

interface Context {
  bench: Bench | undefined;
}

/** Cases that fail today, by caseName, with why (reported to the owners of the protocol code). */
export type KnownFailures = Readonly<Record<string, string>>;

export function registerMatrix(name: string, title: string, select: (c: MatrixCase) => boolean, known: KnownFailures = {}): void {
  const test = anyTest as TestFn<Context>;
  const results: CaseResult[] = [];
  test.before(async (t) => {
    t.timeout(12 * 60_000);
    t.context.bench = undefined;
    t.context.bench = await startBench(name);
  });
  test.after.always(async (t) => {
    await writeReport(name, title, results);
    await stopBench(t.context.bench);
  });
  // THESEUS_MATRIX_ONLY=substring runs only the matching cases (a developer chasing one failure).
  const only = process.env["THESEUS_MATRIX_ONLY"];
  const cases = matrixCases().filter((c) => select(c) && (only === undefined || caseName(c).includes(only)));
  for (const [index, c] of cases.entries()) {
    const title = caseName(c);
    const reason = known[title];
    const run = reason === undefined ? test.serial : test.serial.failing;
    run(reason === undefined ? title : `${title} — known failure: ${reason}`, async (t) => {
      t.timeout(8 * 60_000);
      const bench = t.context.bench;
      if (bench === undefined) throw new Error("no bench");
      const r = await runMatrixCase(bench, c, index);
      results.push(r);
      t.log(`${r.outcome}${r.resolutionMs === undefined ? "" : ` in ${(r.resolutionMs / 1000).toFixed(1)} s`}; ${r.notes.join("; ")}${r.reason === "" ? "" : `; reason: ${r.reason}`}`);
      t.true(r.reached, `the ${c.owner} did not crash at ${c.failpoint}: ${r.notes.join("; ")}`);
      t.true(r.singleWriter.held, `single writer: ${r.singleWriter.detail}`);
      t.true(r.noDataLoss.held, `no data loss: ${r.noDataLoss.detail}`);
      t.true(r.atomicity.held, `atomicity: ${r.atomicity.detail}`);
      t.true(r.liveness.held, `liveness: ${r.liveness.detail}`);
      if (c.expect !== undefined) t.is(r.outcome, c.expect, `the protocol says a crash at ${c.failpoint} ends ${c.expect}; reason: ${r.reason}`);
      t.true(allHeld(r));
    });
  }
}
