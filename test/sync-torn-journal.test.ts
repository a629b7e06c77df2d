// The torn-file journal (torn.ts) keeps a patch's verified prefix as its changes against the base list: a checkpoint
// writes what the patch changed, never the prefix's whole list, and a later round rebuilds the prefix from the base.
import test from "ava";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { BlockList } from "../agent/sync/block-list.js";
import { ChangedBlocks, loadTornFiles, tornJournalFor } from "../agent/sync/torn.js";

const base = fs.mkdtempSync(path.join(os.tmpdir(), "theseus-torn-journal-"));
test.after.always(() => fs.rmSync(base, { recursive: true, force: true }));

const ZERO = crypto.createHash("sha256").update(Buffer.alloc(4096)).digest();
const hashes = (n: number): Buffer[] => Array.from({ length: n }, () => crypto.randomBytes(32));
function listOf(hs: readonly Buffer[]): BlockList {
  const l = new BlockList();
  for (const h of hs) l.append(h);
  return l;
}

/** A base of 8 data blocks and a patch of it: blocks 2-3 rewritten, 5 zeroed, and the file grown by blocks 8-9. */
function patched(): { baseList: BlockList; patchList: BlockList; changes: ChangedBlocks; expected: Buffer[] } {
  const old = hashes(8);
  const fresh = hashes(4);
  const expected = [old[0], old[1], fresh[0], fresh[1], old[4], ZERO, old[6], old[7], fresh[2], fresh[3]] as Buffer[];
  const changes = new ChangedBlocks();
  changes.add(2, 4);
  changes.add(5, 6);
  changes.add(8, 10);
  return { baseList: listOf(old), patchList: listOf(expected), changes, expected };
}

test("changes against the base rebuild the prefix exactly, zero blocks and growth past the base included", (t) => {
  const { baseList, patchList, changes, expected } = patched();
  for (const blocks of [0, 3, 6, 10]) {
    const { list, changes: back } = ChangedBlocks.applyTo(baseList, changes.encode(patchList, blocks), blocks);
    t.true(list.digest().equals(listOf(expected.slice(0, blocks)).digest()), `prefix of ${blocks}`);
    t.deepEqual(back.encode(patchList, blocks), changes.encode(patchList, blocks));
  }
  // Only the changed blocks are written: 3 runs, 5 hashes.
  t.is(changes.encode(patchList, 10).length, 3 * 16 + 5 * 32);
  // Blocks past the base that are not all changes (a cut file) cannot be rebuilt.
  const partial = new ChangedBlocks();
  partial.add(2, 4);
  t.throws(() => ChangedBlocks.applyTo(baseList, partial.encode(patchList, 10), 10), { message: /beyond the base/ });
  const gap = new ChangedBlocks();
  gap.add(9, 10);
  t.throws(() => ChangedBlocks.applyTo(baseList, gap.encode(patchList, 10), 10), { message: /bad run/ });
  // Writes go forward only: a change before the last one is a bug of the caller.
  t.throws(() => changes.add(1, 2), { instanceOf: RangeError });
});

test("a journal checkpointed twice is loaded with the prefix the patch verified; no new change rewrites only the header", (t) => {
  const stateDir = path.join(base, "checkpoints");
  const { baseList, patchList, changes, expected } = patched();
  const baseHash = baseList.digest();
  const journal = tornJournalFor(stateDir, "db/main.db");
  journal.begin("db/main.db", baseHash, patchList, new ChangedBlocks(), 0, 4);
  journal.checkpoint(6, patchList, changes);
  const changesFile = fs.readdirSync(path.join(stateDir, "torn")).find((n) => n.endsWith(".changes")) ?? "";
  const first = fs.statSync(path.join(stateDir, "torn", changesFile));
  journal.extendDirty(12);
  // Block 7 moved the prefix on, but the patch changed nothing more below it.
  journal.checkpoint(7, patchList, changes);
  const second = fs.statSync(path.join(stateDir, "torn", changesFile));
  t.is(second.ino, first.ino, "the changes file was not rewritten");

  const loaded = loadTornFiles(stateDir, (h) => (h.equals(baseHash) ? baseList : undefined)).get("db/main.db");
  t.truthy(loaded);
  t.is(loaded?.file.blocks, 7);
  t.is(loaded?.file.dirtyBlocks, 12);
  t.true(loaded?.file.prefixList.digest().equals(listOf(expected.slice(0, 7)).digest()));
  t.deepEqual(loaded?.file.changes.encode(patchList, 7), changes.encode(patchList, 7));
});

test("a journal whose base list is gone, whose changes were damaged, or of the old format is dropped, not trusted", (t) => {
  const { baseList, patchList, changes } = patched();
  const baseHash = baseList.digest();
  const write = (name: string): string => {
    const stateDir = path.join(base, name);
    const journal = tornJournalFor(stateDir, "f");
    journal.begin("f", baseHash, patchList, new ChangedBlocks(), 0, 10);
    journal.checkpoint(10, patchList, changes);
    return stateDir;
  };
  const gone = write("base-gone");
  t.is(loadTornFiles(gone, () => undefined).size, 0);
  t.deepEqual(fs.readdirSync(path.join(gone, "torn")), [], "and removed");

  const damaged = write("damaged");
  const file = path.join(damaged, "torn", fs.readdirSync(path.join(damaged, "torn")).find((n) => n.endsWith(".changes")) ?? "");
  const bytes = fs.readFileSync(file);
  bytes[20] = (bytes[20] ?? 0) ^ 1;
  fs.writeFileSync(file, bytes);
  t.is(loadTornFiles(damaged, () => baseList).size, 0);

  const old = path.join(base, "format-1", "torn");
  fs.mkdirSync(old, { recursive: true });
  fs.writeFileSync(path.join(old, "k.json"), JSON.stringify({ path: "f", baseHash: baseHash.toString("hex"), blocks: 0, prefixHash: "00", dirtyBlocks: 4 }));
  fs.writeFileSync(path.join(old, "k.list"), Buffer.alloc(32));
  t.is(loadTornFiles(path.join(base, "format-1"), () => baseList).size, 0);
  t.deepEqual(fs.readdirSync(old), []);
});
