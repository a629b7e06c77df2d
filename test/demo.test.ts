// `theseus demo --json` as a user runs it (the README's first command after `npm ci`), small: two local clusters come
// up, the app writes, the migration commits, and the one JSON object says every acknowledged write arrived, with the
// downtime measured and predicted and the rounds; nothing is left running afterwards.
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import test from "ava";
import type { DemoReport } from "../coordinator/demo/index.js";

const CLI = fileURLToPath(new URL("../coordinator/main.js", import.meta.url));

test("theseus demo --json moves the writing app between two local clusters and proves every acknowledged write arrived", async (t) => {
  t.timeout(20 * 60_000);
  const run = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, [CLI, "demo", "--size", "96MiB", "--json"], { maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : 1, stdout, stderr });
    });
  });
  t.is(run.code, 0, run.stderr.slice(-6000));
  const report = JSON.parse(run.stdout) as DemoReport;
  t.true(report.verified, report.verdict);
  t.is(report.outcome, "committed");
  t.true(report.ackedWrites > 0);
  t.is(report.lostWrites, 0);
  t.is(typeof report.downtimeMs.measured, "number");
  t.is(typeof report.downtimeMs.predicted, "number");
  t.is(typeof report.downtimeMs.coordinator, "number");
  t.true(report.rounds.length >= 2, "pre-sync rounds and the final one");
  t.deepEqual(
    report.timeline.map((p) => p.phase).filter((p) => ["presyncing", "quiescing", "final-round", "committed"].includes(p)),
    ["presyncing", "quiescing", "final-round", "committed"],
  );
  // The story went to stderr, with the working directory it then removed (clusters and all).
  const work = /working in (\S+)/.exec(run.stderr)?.[1];
  t.truthy(work);
  t.false(existsSync(work ?? "/"), "the demo removed its working directory and clusters");
  t.log(report.verdict);
});
