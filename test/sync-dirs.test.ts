// `theseus sync-dirs` end to end: two real agent processes over mTLS gRPC on 127.0.0.1. The first run copies, a run
// after a change sends only the change, a run without change sends next to nothing, and both digests agree.
import test from "ava";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { syncDirs } from "../coordinator/cli/sync-dirs.js";
import type { SyncDirsResult } from "../coordinator/cli/sync-dirs.js";

const CLI = fileURLToPath(new URL("../coordinator/main.js", import.meta.url));

const base = fs.mkdtempSync(path.join(os.tmpdir(), "theseus-sync-dirs-"));
test.after.always(() => fs.rmSync(base, { recursive: true, force: true }));

test("sync-dirs: round 0 copies, round 1 sends only the change, round 2 sends ~nothing; state stays out of DST", async (t) => {
  const src = path.join(base, "src");
  const dst = path.join(base, "dst");
  const stateDir = path.join(base, "state");
  fs.mkdirSync(path.join(src, "logs"), { recursive: true });
  for (let i = 0; i < 300; i++) fs.writeFileSync(path.join(src, "logs", `f${i}.txt`), `entry ${i}\n`.repeat(100));
  fs.writeFileSync(path.join(src, "table.db"), Buffer.alloc(4 * 1024 * 1024, 7));
  fs.symlinkSync("table.db", path.join(src, "current"));

  const r0 = await syncDirs({ src, dst, stateDir, bandwidthBytesPerSecond: 0 });
  t.is(r0.entriesScanned, 304);
  t.true(r0.sourcePeakRssBytes > 0 && r0.targetPeakRssBytes > 0);
  t.deepEqual(fs.readFileSync(path.join(dst, "table.db")), fs.readFileSync(path.join(src, "table.db")));
  t.deepEqual(fs.readdirSync(dst).sort(), ["current", "logs", "table.db"], "no state files in DST");

  const fd = fs.openSync(path.join(src, "table.db"), "r+");
  fs.writeSync(fd, Buffer.alloc(4096, 9), 0, 4096, 4096 * 100);
  fs.closeSync(fd);
  fs.appendFileSync(path.join(src, "logs", "f7.txt"), "one more line\n");
  const r1 = await syncDirs({ src, dst, stateDir, bandwidthBytesPerSecond: 0 });
  // The page, and the log's appended line alone (an append travels as its tail).
  const changed = 4096 + "one more line\n".length;
  t.is(r1.bytesChanged, changed);
  // Both directions: the change, and the target's index (well under 100 bytes an entry).
  t.true(r1.wireBytes <= 1.5 * changed + 100 * r1.entriesScanned, `wire ${r1.wireBytes} for ${changed} changed`);
  t.deepEqual(fs.readFileSync(path.join(dst, "table.db")), fs.readFileSync(path.join(src, "table.db")));
  t.not(r1.digest, r0.digest);

  const r2 = await syncDirs({ src, dst, stateDir, bandwidthBytesPerSecond: 0 });
  t.is(r2.entriesChanged, 0);
  t.true(r2.wireBytes < 200 + 100 * r2.entriesScanned, `wire ${r2.wireBytes}: the index and the end record`);
  t.is(r2.digest, r1.digest);
});

test("sync-dirs --rounds-from-stdin: the agents stay up, a line runs one more round, its figures are its own; EOF ends", async (t) => {
  const src = path.join(base, "warm-src");
  const dst = path.join(base, "warm-dst");
  fs.mkdirSync(src, { recursive: true });
  for (let i = 0; i < 50; i++) fs.writeFileSync(path.join(src, `f${i}.txt`), `file ${i}\n`.repeat(50));
  const child = spawn(process.execPath, [CLI, "sync-dirs", src, dst, "--json", "--state-dir", path.join(base, "warm-state"), "--rounds-from-stdin"]);
  const lines: string[] = [];
  let waiter: (() => void) | undefined;
  let partial = "";
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    const parts = (partial + chunk).split("\n");
    partial = parts.pop() ?? "";
    lines.push(...parts.filter((l) => l.startsWith("{")));
    waiter?.();
  });
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
  const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
  const nextResult = async (n: number): Promise<SyncDirsResult> => {
    while (lines.length < n) {
      const more = new Promise<void>((resolve) => (waiter = resolve));
      if ((await Promise.race([more.then(() => "line"), exited.then(() => "exit")])) === "exit" && lines.length < n) {
        throw new Error(`sync-dirs exited before round ${n}: ${stderr}`);
      }
    }
    return JSON.parse(lines[n - 1] as string) as SyncDirsResult;
  };

  const first = await nextResult(1);
  t.is(first.entriesChanged, 51, "the root and 50 files");
  fs.appendFileSync(path.join(src, "f3.txt"), "appended\n");
  child.stdin.write("\n");
  const second = await nextResult(2);
  t.is(second.entriesChanged, 1);
  t.is(second.bytesChanged, "appended\n".length);
  t.deepEqual(fs.readFileSync(path.join(dst, "f3.txt")), fs.readFileSync(path.join(src, "f3.txt")));
  // The agents were already up: no start-up in the second round's wall time or CPU.
  t.true(second.wallMs < first.wallMs, `second round ${second.wallMs} ms, first (with start-up) ${first.wallMs} ms`);
  t.true(second.cpuSeconds >= 0 && second.cpuSeconds < first.cpuSeconds, `CPU ${second.cpuSeconds} s, first ${first.cpuSeconds} s`);
  child.stdin.end();
  t.is(await exited, 0, stderr);
  t.is(lines.length, 2, "EOF runs no round");
  t.deepEqual(fs.readdirSync(os.tmpdir()).filter((n) => n.startsWith(`theseus-sync-dirs-pki-${child.pid}-`)), [], "the session's keys are removed");
});
