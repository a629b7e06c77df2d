// Issue 12, caches that survive: an agent keeps each volume's sync state in the volume's reserved cache directory, so
// that an agent restarted with a new state directory (an emptyDir on another node) finds it, and the next round
// reads and sends only what changed. Where the volume cannot hold it (read-only, nearly full), the agent's own
// directory does, as before.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import anyTest from "ava";
import type { TestFn } from "ava";
import { Writable } from "node:stream";
import { createLogger, silentLogger } from "../common/index.js";
import { CACHE_DIR, SyncSources, runTargetRound, syncStateDir } from "../agent/sync/index.js";

const test = anyTest as TestFn<{ dir: string }>;

test.beforeEach(async (t) => {
  t.context.dir = await mkdtemp(join(tmpdir(), "theseus-state-in-volume-"));
});
test.afterEach.always(async (t) => {
  await rm(t.context.dir, { recursive: true, force: true });
});

const PAGE = 4096;
const DB_PAGES = 8192; // 32 MiB

/** A round as two agents run it: the source through the agent's registry, the target's state dir as pullRound picks it. */
function agentRound(src: string, dst: string, sourceAgentDir: string, targetAgentDir: string) {
  const source = new SyncSources(sourceAgentDir, silentLogger()).get("data", src);
  const stateDir = syncStateDir(targetAgentDir, "target", "data", dst);
  return runTargetRound({ root: dst, stateDir, logger: silentLogger() }, (up) => source.serve(up));
}

test("agents restarted with new state directories find the volumes' caches: the next round reads and sends only the change", async (t) => {
  const { dir } = t.context;
  const src = join(dir, "src");
  const dst = join(dir, "dst");
  fs.mkdirSync(join(src, "small"), { recursive: true });
  fs.mkdirSync(dst);
  for (let i = 0; i < 200; i++) fs.writeFileSync(join(src, "small", `f${i}.txt`), `file ${i}\n`.repeat(20));
  const db = Buffer.alloc(DB_PAGES * PAGE);
  for (let p = 0; p < DB_PAGES; p++) db.fill(p % 251, p * PAGE, (p + 1) * PAGE);
  fs.writeFileSync(join(src, "db.bin"), db);

  const first = await agentRound(src, dst, join(dir, "agent-src-1"), join(dir, "agent-dst-1"));
  t.is(first.digest, first.sourceDigest);
  t.true(fs.existsSync(join(src, CACHE_DIR, "sync", "source", "data", "index")), "the source's cache is in its volume");
  t.true(fs.existsSync(join(dst, CACHE_DIR, "sync", "target", "data", "index")), "the target's cache is in its volume");
  t.false(fs.existsSync(join(dir, "agent-src-1", "sync")), "and not in the source agent's directory");
  t.false(fs.existsSync(join(dir, "agent-dst-1", "sync")), "nor in the target agent's");

  // 1% of the database's pages rewritten, while both agents are replaced by new ones with empty state directories.
  const fd = fs.openSync(join(src, "db.bin"), "r+");
  const changed = Math.round(DB_PAGES / 100);
  for (let i = 0; i < changed; i++) fs.writeSync(fd, Buffer.alloc(PAGE, 0xee), 0, PAGE, ((i * 97) % DB_PAGES) * PAGE);
  fs.closeSync(fd);
  const second = await agentRound(src, dst, join(dir, "agent-src-2"), join(dir, "agent-dst-2"));
  t.is(second.digest, second.sourceDigest);
  t.is(second.source.bytesChanged, changed * PAGE, "only the rewritten pages were sent: the base's block list was found");
  t.is(second.source.bytesRead, DB_PAGES * PAGE, "the source read the changed database only, no small file");
  t.is(second.targetBytesRead, 0, "the target trusted its cache");
  t.is(second.source.vouchedUnverified, 0, "nothing was taken on trust from a quick check");
  t.true(fs.readFileSync(join(dst, "db.bin")).equals(fs.readFileSync(join(src, "db.bin"))));
  t.false(fs.existsSync(join(dst, CACHE_DIR, "sync", "source")), "nothing of the source's cache reached the target");
});

test("placement state-dir (sync-dirs) keeps every volume's state in the agent's directory, none in the volume", async (t) => {
  const { dir } = t.context;
  const src = join(dir, "src");
  const dst = join(dir, "dst");
  fs.mkdirSync(src);
  fs.mkdirSync(dst);
  fs.writeFileSync(join(src, "a.txt"), "a\n");
  const sources = new SyncSources(join(dir, "agent-src"), silentLogger(), "state-dir");
  const targets = new SyncSources(join(dir, "agent-dst"), silentLogger(), "state-dir");
  const stateDir = targets.stateDir("target", "data", dst);
  t.is(stateDir, join(dir, "agent-dst", "sync", "target", "data"));
  const result = await runTargetRound({ root: dst, stateDir, logger: silentLogger() }, (up) => sources.get("data", src).serve(up));
  t.is(result.digest, result.sourceDigest);
  t.true(fs.existsSync(join(dir, "agent-src", "sync", "source", "data", "index")));
  t.deepEqual(fs.readdirSync(src), ["a.txt"], "nothing of Theseus's in the source directory");
  t.deepEqual(fs.readdirSync(dst), ["a.txt"], "nor in the target's");
});

test("a volume that is nearly full or read-only keeps no state: the agent's own directory does", (t) => {
  const { dir } = t.context;
  const agentDir = join(dir, "agent");
  const roomy = join(dir, "roomy");
  fs.mkdirSync(roomy);
  t.is(syncStateDir(agentDir, "source", "v", roomy), join(roomy, CACHE_DIR, "sync", "source", "v"));
  t.is(syncStateDir(join(roomy, CACHE_DIR), "target", "v", roomy), join(roomy, CACHE_DIR, "sync", "target", "v"), "a mover's is the same directory");

  const mount = join(dir, "mnt");
  fs.mkdirSync(mount);
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=16m", "tmpfs", mount]);
  } catch (error) {
    t.log(`mount failed (${(error as Error).message.split("\n")[0]}): not root here`);
    t.pass();
    return;
  }
  try {
    t.is(syncStateDir(agentDir, "source", "v", mount), join(agentDir, "sync", "source", "v"), "16 MiB free is not room for the state");
    t.false(fs.existsSync(join(mount, CACHE_DIR)), "and nothing was written into the volume");
    // The agent asks at every round's start (each second while pre-syncing): it says so once, not every round.
    const lines: string[] = [];
    const sink = new Writable({ write: (chunk: Buffer, _encoding, done) => (lines.push(chunk.toString()), done()) });
    const sources = new SyncSources(agentDir, createLogger({ destination: sink }));
    for (let round = 0; round < 3; round++) t.is(sources.stateDir("source", "v", mount), join(agentDir, "sync", "source", "v"));
    t.is(lines.filter((l) => l.includes("cannot hold its sync state")).length, 1, "logged once");
    execFileSync("mount", ["-o", "remount,size=256m,ro", mount]);
    t.is(syncStateDir(agentDir, "source", "v", mount), join(agentDir, "sync", "source", "v"), "a read-only volume keeps no state");
    execFileSync("mount", ["-o", "remount,rw", mount]);
    t.is(syncStateDir(agentDir, "target", "v", mount), join(mount, CACHE_DIR, "sync", "target", "v"), "256 MiB free and writable: in the volume");
  } finally {
    execFileSync("umount", [mount]);
  }
});
