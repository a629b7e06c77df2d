// `theseus sync-dirs` end to end: two real agent processes over mTLS gRPC on 127.0.0.1. The first run copies, a run
// after a change sends only the change, a run without change sends next to nothing, and both digests agree.
import test from "ava";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { syncDirs } from "../coordinator/cli/sync-dirs.js";

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
