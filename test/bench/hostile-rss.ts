// Peak memory of real agents under issue 13's hostile inputs: `npm run bench:hostile` (or
// `node dist/test/bench/hostile-rss.js`). Prints each agent's resident memory before and its peak (the kernel's VmHWM,
// reset before each attack) for: the sparse bomb (a hostile source declares 64 GiB of holes), a 600 GiB sparse file
// between two real agents, the index flood (a hostile target uploads 200,000 entries the source does not have) and
// the mass delete (a real target holds 25,000 files the source deleted). The bound is stated in docs/architecture.md.
import fs from "node:fs";
import path from "node:path";
import { copyVolume } from "../../coordinator/index.js";
import type { AgentProcess } from "../../coordinator/index.js";
import { emptyRoundStats, PROTOCOL_VERSION } from "../../agent/sync/codec.js";
import type { SyncRecord } from "../../agent/sync/codec.js";
import { holesList } from "../../agent/sync/state.js";
import {
  answerAfterIndex,
  createWorld,
  framesOf,
  hostileSync,
  META,
  openSession,
  peakRssMiB,
  pull,
  pushable,
  recordsOf,
  resetPeak,
  ROOT,
  rssMiB,
  sha,
  startHostileSource,
} from "../sync-hostile-helpers.js";

interface Row {
  attack: string;
  agent: string;
  beforeMiB: number;
  peakMiB: number;
}

async function measure(attack: string, agents: Record<string, AgentProcess>, run: () => Promise<void>): Promise<Row[]> {
  const before: Record<string, number> = {};
  for (const [name, a] of Object.entries(agents)) {
    before[name] = rssMiB(a.pid);
    resetPeak(a.pid);
  }
  await run();
  return Object.entries(agents).map(([name, a]) => ({ attack, agent: name, beforeMiB: before[name] ?? 0, peakMiB: peakRssMiB(a.pid) }));
}

async function main(): Promise<void> {
  const world = await createWorld("hostile-rss");
  const dir = (name: string): string => path.join(world.work, name);
  try {
    for (const d of ["bomb-dst", "huge-src", "huge-dst", "flood-src", "mass-src/kept", "mass-dst/kept"]) fs.mkdirSync(dir(d), { recursive: true });
    fs.writeFileSync(path.join(dir("huge-src"), "vm.img"), "");
    fs.truncateSync(path.join(dir("huge-src"), "vm.img"), 600 * 1024 ** 3);
    fs.writeFileSync(path.join(dir("flood-src"), "f"), "one file\n");
    fs.writeFileSync(path.join(dir("mass-src"), "kept", "z"), "stays");
    for (let i = 0; i < 25_000; i++) fs.writeFileSync(path.join(dir("mass-dst"), "kept", `${"d".repeat(90)}${String(i).padStart(10, "0")}`), "");
    const source = await world.spawn("eu-1", { huge: dir("huge-src"), flood: dir("flood-src"), mass: dir("mass-src") });
    const target = await world.spawn("us-2", { bomb: dir("bomb-dst"), huge: dir("huge-dst"), mass: dir("mass-dst") });
    const rows: Row[] = [];

    rows.push(
      ...(await measure("sparse bomb (64 GiB of holes declared)", { target }, async () => {
        const size = 64 * 1024 ** 3;
        const hostile = await startHostileSource(
          world,
          answerAfterIndex(
            framesOf([
              ROOT,
              { t: "file_begin", path: "bomb", meta: META, mode: "whole", baseHash: new Uint8Array(0), resumeFrom: 0 },
              { t: "zero", offset: 0, length: size },
              { t: "file_end", size, hash: holesList(size).digest() },
              { t: "end", digest: sha("made up"), stats: emptyRoundStats() },
            ]),
          ),
        );
        await pull(world, target, hostile.address, "bomb");
        await hostile.close();
      })),
    );

    rows.push(
      ...(await measure("600 GiB sparse file, two rounds", { source, target }, async () => {
        for (let i = 0; i < 2; i++) await copyVolume({ from: source.address, to: target.address, volume: "huge", tls: world.coordinator });
      })),
    );

    rows.push(
      ...(await measure("index flood (200,000 entries)", { source }, async () => {
        const session = await openSession(world, source, "flood");
        const start: SyncRecord = { t: "start", version: PROTOCOL_VERSION, targetUid: 0, targetGid: 0, preserveOwner: false, stripSetid: false };
        const entries = function* (): Generator<SyncRecord> {
          yield start;
          for (let i = 0; i < 200_000; i++) {
            const name = `a${String(i).padStart(10, "0")}${"x".repeat(100)}`;
            yield { t: "entry", e: { path: name, type: "file", meta: META, size: 0, hash: new Uint8Array(0), linkTarget: "", hardlinkTo: "" } };
          }
          yield { t: "index_end" };
        };
        const up = pushable<{ sessionId?: string; frame: Uint8Array }>();
        let first = true;
        for (const frame of framesOf(entries())) {
          up.push(first ? { sessionId: session.sessionId, frame } : { frame });
          first = false;
        }
        const call = hostileSync(world, source, session.token, up.iterable);
        try {
          for await (const r of recordsOf(call.frames)) if (r.t === "end" || r.t === "error") break;
        } finally {
          up.end();
          call.close();
        }
      })),
    );

    rows.push(
      ...(await measure("mass delete (25,000 files)", { source, target }, async () => {
        await copyVolume({ from: source.address, to: target.address, volume: "mass", tls: world.coordinator });
      })),
    );

    const line = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(40) : c.padStart(12))).join("");
    process.stdout.write(`${line(["attack", "agent", "before MiB", "peak MiB", "growth MiB"])}\n`);
    for (const r of rows) {
      process.stdout.write(`${line([r.attack, r.agent, r.beforeMiB.toFixed(0), r.peakMiB.toFixed(0), (r.peakMiB - r.beforeMiB).toFixed(0)])}\n`);
    }
  } finally {
    await world.cleanup();
  }
}

await main();
