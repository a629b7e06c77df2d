// `theseus sync-dirs` as a user meets it when things die: the real CLI binary, its two real agent processes, kill -9.
// A dead agent is a failure with a message and a non-zero exit, the throwaway keys never outlive the run, and the
// agents never outlive the CLI.
import test from "ava";
import { spawn, spawnSync, execFileSync } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const CLI = fileURLToPath(new URL("../coordinator/main.js", import.meta.url));
const base = fs.mkdtempSync(path.join(os.tmpdir(), "theseus-sync-dirs-faults-"));
test.after.always(() => fs.rmSync(base, { recursive: true, force: true }));

interface Run {
  child: ChildProcess;
  done: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>;
}

/** Runs the CLI with its own TMPDIR, so what it leaves in a temporary directory can be seen. */
function runCli(args: string[], tmp: string): Run {
  fs.mkdirSync(tmp, { recursive: true });
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, TMPDIR: tmp }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout?.on("data", (c: Buffer) => (stdout += c.toString()));
  child.stderr?.on("data", (c: Buffer) => (stderr += c.toString()));
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal, stdout, stderr })),
  );
  return { child, done };
}

function childrenOf(pid: number): number[] {
  try {
    return execFileSync("pgrep", ["-P", String(pid)], { encoding: "utf8" }).split("\n").filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The agent of the CLI whose command line serves `dir`. */
function agentServing(cliPid: number, dir: string): number | undefined {
  return childrenOf(cliPid).find((pid) => {
    try {
      return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").includes(`data=${dir}`);
    } catch {
      return false;
    }
  });
}

// Generous: on a loaded machine a CLI takes many seconds just to load its modules.
async function until<T>(what: string, probe: () => T | undefined, timeoutMs = 180_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A source that takes seconds to send at 2 MiB/s: big enough to kill something mid-round (random: zstd cannot shrink it). */
function slowSource(name: string): string {
  const src = path.join(base, name);
  fs.mkdirSync(src, { recursive: true });
  for (let i = 0; i < 8; i++) fs.writeFileSync(path.join(src, `f${i}.bin`), crypto.randomBytes(2 * 1024 * 1024));
  return src;
}

/** Waits until the target directory has received something: the round is under way. */
async function midRound(dst: string): Promise<void> {
  await until("the round to start writing", () => {
    try {
      return fs.readdirSync(path.join(dst, ".theseus-partial")).length > 0 || fs.readdirSync(dst).some((n) => n.startsWith("f")) ? true : undefined;
    } catch {
      return undefined;
    }
  });
}

for (const side of ["source", "target"] as const) {
  test(`kill -9 of the ${side} agent mid-round: sync-dirs fails naming it, exits non-zero, and leaves no keys`, async (t) => {
    t.timeout(600_000);
    const src = slowSource(`kill-${side}-src`);
    const dst = path.join(base, `kill-${side}-dst`);
    const tmp = path.join(base, `kill-${side}-tmp`);
    const run = runCli(["sync-dirs", src, dst, "--state-dir", path.join(base, `kill-${side}-state`), "--bandwidth", "2MiB/s"], tmp);
    const pid = await until(`the ${side} agent`, () => agentServing(run.child.pid ?? -1, side === "source" ? src : dst));
    await midRound(dst);
    process.kill(pid, "SIGKILL");
    const r = await run.done;
    t.not(r.code, 0, `exit code ${String(r.code)}; stderr: ${r.stderr}`);
    t.regex(r.stderr, new RegExp(`the ${side} agent \\(pid ${pid}\\) was killed by SIGKILL`));
    t.deepEqual(fs.readdirSync(tmp), [], "the throwaway CA and agent keys are removed");
    for (const other of childrenOf(run.child.pid ?? -1)) t.false(alive(other));
  });
}

test("kill -9 of sync-dirs itself: both agents exit with it, and the next run removes the keys it left", async (t) => {
  t.timeout(600_000);
  const src = slowSource("kill-cli-src");
  const dst = path.join(base, "kill-cli-dst");
  const tmp = path.join(base, "kill-cli-tmp");
  const state = path.join(base, "kill-cli-state");
  const run = runCli(["sync-dirs", src, dst, "--state-dir", state, "--bandwidth", "2MiB/s"], tmp);
  const cli = run.child.pid ?? -1;
  const agents = await until("both agents", () => {
    const a = [agentServing(cli, src), agentServing(cli, dst)];
    return a.every((p) => p !== undefined) ? (a) : undefined;
  });
  await midRound(dst);
  run.child.kill("SIGKILL");
  await run.done;
  await until("both agents to exit", () => (agents.some(alive) ? undefined : true), 60_000);
  t.pass("both agents exited");
  t.is(fs.readdirSync(tmp).length, 1, "the killed run could not remove its keys itself");
  const again = runCli(["sync-dirs", src, dst, "--state-dir", state], tmp);
  const r = await again.done;
  t.is(r.code, 0, r.stderr);
  t.deepEqual(fs.readdirSync(tmp), [], "the next run removed the keys of the dead one");
  for (let i = 0; i < 8; i++) t.deepEqual(fs.readFileSync(path.join(dst, `f${i}.bin`)), fs.readFileSync(path.join(src, `f${i}.bin`)));
});

test("two sync-dirs from two sources into one destination: the second is refused naming the first, nothing is mixed", async (t) => {
  t.timeout(600_000);
  const srcA = slowSource("two-a-src");
  const srcB = path.join(base, "two-b-src");
  fs.mkdirSync(srcB);
  for (let i = 0; i < 20; i++) fs.writeFileSync(path.join(srcB, `b${i}.txt`), `from b ${i}\n`);
  const dst = path.join(base, "two-dst");
  const tmp = path.join(base, "two-tmp");
  // Slow enough to still be writing when the second run, which must load and start two agents first, gets there.
  const a = runCli(["sync-dirs", srcA, dst, "--state-dir", path.join(base, "two-a-state"), "--bandwidth", "128KiB/s"], tmp);
  await midRound(dst);
  const lock = JSON.parse(fs.readFileSync(path.join(dst, ".theseus-lock"), "utf8")) as { pid: number };
  t.is(lock.pid, agentServing(a.child.pid ?? -1, dst) ?? -1, "the lock names the target agent writing the volume");
  const b = await runCli(["sync-dirs", srcB, dst, "--state-dir", path.join(base, "two-b-state")], tmp).done;
  t.not(b.code, 0);
  t.regex(b.stderr, new RegExp(`is being written by a sync round, pid ${lock.pid} on `));
  t.true(a.child.exitCode === null, "the first run was still writing when the second was refused");
  a.child.kill("SIGTERM");
  const ra = await a.done;
  t.is(ra.code, 130, "SIGTERM cancels the first run, which cleans up");
  t.false(fs.readdirSync(dst).some((n) => n.startsWith("b")), "nothing of the second source landed");
  t.false(fs.existsSync(path.join(dst, ".theseus-lock")), "the cancelled round released the lock");
  // Once the first is gone, the second may write.
  const b2 = await runCli(["sync-dirs", srcB, dst, "--state-dir", path.join(base, "two-b-state")], tmp).done;
  t.is(b2.code, 0, b2.stderr);
  t.deepEqual(fs.readdirSync(dst).sort(), fs.readdirSync(srcB).sort());
});

test("a lock left by a dead writer is taken over", async (t) => {
  t.timeout(600_000);
  const src = path.join(base, "stale-src");
  fs.mkdirSync(src);
  fs.writeFileSync(path.join(src, "a.txt"), "a");
  const dst = path.join(base, "stale-dst");
  fs.mkdirSync(dst);
  // A pid that is surely not running: a child that already exited.
  const dead = spawn(process.execPath, ["-e", ""]);
  await new Promise((r) => dead.once("exit", r));
  fs.writeFileSync(path.join(dst, ".theseus-lock"), JSON.stringify({ pid: dead.pid, host: os.hostname(), what: "a sync round", sinceMs: Date.now() - 1000 }));
  const r = await runCli(["sync-dirs", src, dst, "--state-dir", path.join(base, "stale-state")], path.join(base, "stale-tmp")).done;
  t.is(r.code, 0, r.stderr);
  t.deepEqual(fs.readdirSync(dst), ["a.txt"]);
});

test("a skipped fifo is named in the text output", async (t) => {
  t.timeout(600_000);
  const src = path.join(base, "fifo-src");
  fs.mkdirSync(src, { recursive: true });
  fs.writeFileSync(path.join(src, "a.txt"), "a");
  execFileSync("mkfifo", [path.join(src, "pipe")]);
  const r = await runCli(["sync-dirs", src, path.join(base, "fifo-dst"), "--state-dir", path.join(base, "fifo-state")], path.join(base, "fifo-tmp")).done;
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /not copied: 1 special file .* skipped, "pipe"/);
});

// Serial: ava runs these before the concurrent ones, so that two more CLIs do not slow the kill tests past their waits.
test.serial("exit codes a user can act on: a path past PATH_MAX is bad input (exit 2) with a short message naming it", async (t) => {
  t.timeout(600_000);
  const src = path.join(base, "deep-src");
  fs.mkdirSync(src);
  // 40 levels of 200-character names (8 KB): created step by step, as no single syscall takes such a path.
  execFileSync("bash", ["-c", `cd "$1" && for i in $(seq 1 40); do mkdir "$2$i" && cd "$2$i"; done && echo deep > file`, "_", src, "d".repeat(197)]);
  const r = await runCli(["sync-dirs", src, path.join(base, "deep-dst"), "--state-dir", path.join(base, "deep-state")], path.join(base, "deep-tmp")).done;
  // rm(1) removes what fs.rmSync cannot (it walks by path, past PATH_MAX).
  execFileSync("rm", ["-rf", src, path.join(base, "deep-dst")]);
  t.is(r.code, 2, r.stderr.slice(0, 2000));
  t.regex(r.stderr, /longer than the system allows/);
  t.regex(r.stderr, /d{100}\.\.\.\(\d+ characters\)\.\.\./, "the path is named, shortened");
  t.true(r.stderr.length < 1500, `a short message (${r.stderr.length} characters)`);
});

test.serial("disk full on the target: the error names the file and the volume, and the partial file is removed to free its space", async (t) => {
  t.timeout(600_000);
  const src = path.join(base, "full-src");
  fs.mkdirSync(src);
  fs.writeFileSync(path.join(src, "a.txt"), "small, fits\n");
  fs.writeFileSync(path.join(src, "big.bin"), crypto.randomBytes(24 * 1024 * 1024));
  const dst = path.join(base, "full-dst");
  fs.mkdirSync(dst);
  // A 16 MiB filesystem of its own (a private mount namespace: nothing outside sees it); the run and the look at
  // what it left happen inside it.
  fs.mkdirSync(path.join(base, "full-tmp"), { recursive: true });
  const script = `mount -t tmpfs -o size=16m theseus-full "$2" && node "$1" sync-dirs "$3" "$2" --state-dir "$4"; echo "exit=$?"; ls -A "$2"; du -sk "$2"`;
  const out = spawnSync("unshare", ["-m", "bash", "-c", script, "_", CLI, dst, src, path.join(base, "full-state")], {
    encoding: "utf8",
    env: { ...process.env, TMPDIR: path.join(base, "full-tmp") },
  });
  if (out.error !== undefined || /mount: .*(permission|not permitted)/i.test(out.stderr)) {
    t.log(`no private tmpfs here (${out.error?.message ?? out.stderr}): skipped`);
    t.pass();
    return;
  }
  t.regex(out.stdout, /exit=1\b/, out.stderr);
  t.regex(out.stderr, /target volume .*full-dst is full \(no space or inodes left\) while writing big\.bin/);
  const listing = out.stdout.split("\n");
  t.true(listing.includes("a.txt"), "what was complete is kept");
  t.false(listing.includes(".theseus-partial"), "the staging directory (and its partial file) is gone");
  const kb = Number(/^(\d+)\s/m.exec(out.stdout.split("exit=")[1] ?? "")?.[1] ?? "-1");
  t.true(kb >= 0 && kb < 1024, `the space is free again (${kb} KiB used)`);
});
