// The migration's plain display (a log, a pipe): one line per round, which names what the round took on trust.
import { PassThrough } from "node:stream";
import test from "ava";
import { create } from "@bufbuild/protobuf";
import { RoundStatsSchema } from "../proto/gen/theseus/v1/agent_pb.js";
import { createMigrationDisplay } from "../coordinator/cli/migration-display.js";

function shown(stats: Parameters<typeof create<typeof RoundStatsSchema>>[1]): string {
  const out = new PassThrough();
  let text = "";
  out.on("data", (chunk: Buffer) => (text += chunk.toString()));
  const display = createMigrationDisplay(out as unknown as NodeJS.WriteStream);
  display.show({ type: "round", volume: "shop/db", round: create(RoundStatsSchema, stats) });
  display.stop();
  return text;
}

test("a round's line says how many files it took as unchanged by size and mtime after a lost cache, on either side", (t) => {
  const line = shown({ round: 2, bytesChanged: 4096n, durationMs: 850n, wireBytes: 5000n, vouchedUnverified: 3n, targetVouchedUnverified: 2n });
  t.regex(line, /^round 2 of shop\/db: 4(\.0*)? KiB changed/);
  t.regex(line, /5 files taken as unchanged by size and mtime \(a lost cache\), not read yet/);
});

test("a round that took nothing on trust says nothing of it", (t) => {
  const line = shown({ round: 1, bytesChanged: 4096n, durationMs: 850n, wireBytes: 5000n });
  t.regex(line, /^round 1 of shop\/db/);
  t.notRegex(line, /taken as unchanged/);
});
