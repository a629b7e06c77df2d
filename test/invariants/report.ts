// The matrix's report: one row per case (failpoint, process, outcome, the four invariants, time to resolution),
// printed by the test run and written as Markdown and JSON to THESEUS_REPORT_DIR (default test-results/invariants/).
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { LIVENESS_BOUND_MS, allHeld, reportDir } from "./bench.js";
import type { CaseResult } from "./bench.js";

const mark = (held: boolean): string => (held ? "held" : "BROKEN");

export function formatReport(title: string, results: readonly CaseResult[]): string {
  const rows = results.map((r) => {
    const outcome = r.expected === undefined || r.expected === r.outcome ? r.outcome : `${r.outcome} (expected ${r.expected})`;
    const time = r.resolutionMs === undefined ? "-" : `${(r.resolutionMs / 1000).toFixed(1)} s`;
    return `| ${r.failpoint} | ${r.owner}${r.recovery === "restart" ? "" : `, ${r.recovery}`} | ${r.reached ? "yes" : "NO"} | ${outcome} | ${mark(r.singleWriter.held)} | ${mark(r.noDataLoss.held)} | ${mark(r.atomicity.held)} | ${mark(r.liveness.held)} | ${time} | ${allHeld(r) ? "pass" : "FAIL"} |`;
  });
  const details = results
    .filter((r) => !allHeld(r))
    .map((r) => `- ${r.failpoint} (${r.owner}, ${r.recovery}, ${r.migrationId}): ${[r.singleWriter, r.noDataLoss, r.atomicity, r.liveness].filter((i) => !i.held).map((i) => i.detail).join("; ")}${r.reason === "" ? "" : ` — reason: ${r.reason}`} — ${r.notes.join("; ")}`);
  return [
    `## ${title}`,
    "",
    `Invariants: 1 single writer (watch streams of both API servers), 2 no data loss (every ack verified where the app serves; after an abort the source's data equals its state at quiesce), 3 atomicity (journal, both participants and both clusters agree), 4 liveness (ended within ${LIVENESS_BOUND_MS / 1000} s of the crash).`,
    "",
    "| failpoint | process | crashed there | outcome | 1 single writer | 2 no data loss | 3 atomicity | 4 liveness | time to resolution | case |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ...rows,
    ...(details.length === 0 ? [] : ["", "Failures:", ...details]),
    "",
  ].join("\n");
}

/** Prints the table and writes NAME.md and NAME.json; returns the Markdown. */
export async function writeReport(name: string, title: string, results: readonly CaseResult[]): Promise<string> {
  const text = formatReport(title, results);
  const dir = reportDir();
  await writeFile(join(dir, `${name}.md`), text);
  await writeFile(join(dir, `${name}.json`), `${JSON.stringify(results, null, 2)}\n`);
  process.stdout.write(`\n${text}\n(written to ${join(dir, `${name}.md`)})\n`);
  return text;
}
