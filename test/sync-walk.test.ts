// The walk both sides share (walk.ts): entries stat'ed by the native addon, many per call and relative to their
// directory, must be exactly what fs.lstatSync says, since the hash caches compare mtimes and ctimes to the bit, and
// entries that vanish under it are the live app's deletes, not errors.
import test from "ava";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { walk } from "../agent/sync/walk.js";
import type { WalkEntry } from "../agent/sync/walk.js";
import { nativeAddon } from "../agent/sync/native.js";

const base = fs.mkdtempSync(path.join(os.tmpdir(), "theseus-sync-walk-"));
test.after.always(() => fs.rmSync(base, { recursive: true, force: true }));

const FIELDS = ["mode", "uid", "gid", "size", "ino", "dev", "nlink", "blocks", "mtimeMs", "ctimeMs"] as const;

test("every entry's stat is fs.lstatSync's to the bit, in a directory wider than a batch, of every kind", (t) => {
  const root = path.join(base, "kinds");
  fs.mkdirSync(path.join(root, "wide"), { recursive: true });
  // 600 names: three native calls for this directory, the last one short.
  for (let i = 0; i < 600; i++) fs.writeFileSync(path.join(root, "wide", `f${String(i).padStart(3, "0")}`), "x".repeat(i));
  fs.writeFileSync(path.join(root, "nanos"), "n");
  // Sub-millisecond mtimes, before 1970 too: what ms-with-fraction conversions get wrong first.
  fs.utimesSync(path.join(root, "nanos"), 1.5, 1234567890.123456);
  fs.writeFileSync(path.join(root, "old"), "o");
  fs.utimesSync(path.join(root, "old"), -1000.25, -1000.75);
  fs.linkSync(path.join(root, "nanos"), path.join(root, "nanos-link"));
  fs.symlinkSync("nanos", path.join(root, "sym"));
  execFileSync("mkfifo", [path.join(root, "fifo")]);
  fs.writeFileSync(path.join(root, "\u00e9t\u00e9 \u{1F600}"), "utf-8 name");

  const entries = [...walk(root)];
  t.is(entries.length, 1 + 1 + 600 + 6);
  const byPath = new Map(entries.map((e) => [e.path, e] as const));
  for (const e of entries) {
    const st = fs.lstatSync(e.path === "" ? root : path.join(root, e.path));
    for (const f of FIELDS) t.is(e.st[f], st[f], `${e.path}: ${f}`);
  }
  const typeOf = (p: string): WalkEntry["type"] | undefined => byPath.get(p)?.type;
  t.deepEqual([typeOf("wide"), typeOf("nanos"), typeOf("sym"), typeOf("fifo")], ["dir", "file", "symlink", "special"]);
  t.is(byPath.get("nanos")?.st.nlink, 2);
  // Pre-order, names sorted: the walk's order is the protocol's.
  t.deepEqual(entries.slice(0, 3).map((e) => e.path), ["", "fifo", "nanos"]);
});

test("a directory removed while the walk is in it: the entries not yet stat'ed vanish, without an error", (t) => {
  const root = path.join(base, "removed");
  fs.mkdirSync(path.join(root, "d"), { recursive: true });
  for (let i = 0; i < 300; i++) fs.writeFileSync(path.join(root, "d", `f${String(i).padStart(3, "0")}`), "");
  fs.writeFileSync(path.join(root, "z"), "after");
  const seen: string[] = [];
  for (const e of walk(root)) {
    seen.push(e.path);
    // Past the first batch of 256, which was stat'ed while the directory was there.
    if (e.path === "d/f255") fs.rmSync(path.join(root, "d"), { recursive: true });
  }
  t.true(seen.includes("d/f255"));
  t.false(seen.includes("d/f256"), "the next batch found the directory gone");
  t.is(seen[seen.length - 1], "z", "and the walk went on");
});

test("lstatAt says which entries it could not stat, and refuses a symlink in the directory's place", (t) => {
  const root = path.join(base, "native");
  fs.mkdirSync(root);
  fs.writeFileSync(path.join(root, "a"), "a");
  fs.symlinkSync(root, path.join(base, "native-link"));
  const out = new Float64Array(2 * 13);
  t.is(nativeAddon.lstatAt(root, ["a", "missing"], 0, 2, out), 2);
  t.is(out[0], 0);
  t.is(out[4], 1, "a's size");
  t.is(out[13], os.constants.errno.ENOENT);
  t.true([-os.constants.errno.ELOOP, -os.constants.errno.ENOTDIR].includes(nativeAddon.lstatAt(path.join(base, "native-link"), ["a"], 0, 1, out)), "not followed");
  t.is(nativeAddon.lstatAt(path.join(base, "nowhere"), ["a"], 0, 1, out), -os.constants.errno.ENOENT);
  t.throws(() => nativeAddon.lstatAt(root, ["a"], 0, 2, out), { instanceOf: TypeError, message: /outside names/ });
  t.throws(() => nativeAddon.lstatAt(root, ["a"], 0, 1, new Float64Array(12)), { instanceOf: TypeError, message: /too small/ });
});
