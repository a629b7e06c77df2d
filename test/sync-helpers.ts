// Shared helpers for the sync engine tests: an in-memory connection between the two halves and tree comparison.
import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { createSyncSource, runTargetRound } from "../agent/sync/index.js";
import type { RoundResult, SyncSource } from "../agent/sync/index.js";
import { silentLogger } from "../common/index.js";

export interface Pair {
  src: string;
  dst: string;
  srcState: string;
  dstState: string;
  source: SyncSource;
}

export function makePair(base: string, name: string): Pair {
  const dir = path.join(base, name);
  const p = {
    src: path.join(dir, "src"),
    dst: path.join(dir, "dst"),
    srcState: path.join(dir, "state-src"),
    dstState: path.join(dir, "state-dst"),
  };
  for (const d of Object.values(p)) fs.mkdirSync(d, { recursive: true });
  return { ...p, source: createSyncSource({ root: p.src, stateDir: p.srcState, logger: silentLogger() }) };
}

/**
 * One round with the two halves joined by async iterables in this process. `downWireBytes`: the source's frames only
 * (wireBytes counts both directions, the target's index included).
 */
export async function roundInMemory(p: Pair, source: SyncSource = p.source): Promise<RoundResult & { downWireBytes: number }> {
  let up = 0;
  const r = await runTargetRound({ root: p.dst, stateDir: p.dstState, logger: silentLogger() }, (frames) =>
    source.serve(
      (async function* () {
        for await (const f of frames) {
          up += f.length;
          yield f;
        }
      })(),
    ),
  );
  // The target's load reports after the source's end are not in its count: never below zero.
  return { ...r, downWireBytes: Math.max(0, r.source.wireBytes - up) };
}

/** A listing of everything that must be reproduced: type, mode, mtime, size, content hash, link target, link groups. */
export function describeTree(root: string): string[] {
  const out: string[] = [];
  const inodes = new Map<number, string>();
  const visit = (rel: string): void => {
    const abs = rel === "" ? root : path.join(root, rel);
    const st = fs.lstatSync(abs);
    const mt = Math.round(st.mtimeMs * 1000);
    if (st.isDirectory()) {
      if (rel !== "") out.push(`d ${rel} ${(st.mode & 0o7777).toString(8)} ${mt}`);
      for (const n of fs.readdirSync(abs).sort()) if (!(rel === "" && n === ".theseus-partial")) visit(rel === "" ? n : `${rel}/${n}`);
    } else if (st.isSymbolicLink()) {
      out.push(`l ${rel} -> ${fs.readlinkSync(abs)} ${mt}`);
    } else {
      const h = crypto.createHash("sha256").update(fs.readFileSync(abs)).digest("hex").slice(0, 16);
      let link = "";
      if (st.nlink > 1) {
        const first = inodes.get(st.ino);
        if (first === undefined) inodes.set(st.ino, rel);
        else link = ` = ${first}`;
      }
      out.push(`f ${rel} ${(st.mode & 0o7777).toString(8)} ${mt} ${st.size} ${h}${link}`);
    }
  };
  visit("");
  return out;
}
