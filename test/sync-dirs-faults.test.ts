// `theseus sync-dirs` as a user meets it when things die: the real CLI binary, its two real agent processes, kill -9.
// A dead agent is a failure with a message and a non-zero exit, the throwaway keys never outlive the run, and the
// agents never outlive the CLI.
import test from "ava";
import { spawn, execFileSync } from "node:child_process";
import type { ChildProcess } from "node:child_process";
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

async function until<T>(what: string, probe: () => T | undefined, timeoutMs = 30_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A source that takes seconds to send at 2 MiB/s: big enough to kill something mid-round. */
function slowSource(name: string): string {
  const src = path.join(base, name);
  fs.mkdirSync(src, { recursive: true });
  for (let i = 0; i < 8; i++) fs.writeFileSync(path.join(src, `f${i}.bin`), Buffer.alloc(2 * 1024 * 1024, i + 1));
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
  await until("both agents to exit", () => (agents.some(alive) ? undefined : true), 10_000);
  t.pass("both agents exited");
  t.is(fs.readdirSync(tmp).length, 1, "the killed run could not remove its keys itself");
  const again = runCli(["sync-dirs", src, dst, "--state-dir", state], tmp);
  const r = await again.done;
  t.is(r.code, 0, r.stderr);
  t.deepEqual(fs.readdirSync(tmp), [], "the next run removed the keys of the dead one");
  for (let i = 0; i < 8; i++) t.deepEqual(fs.readFileSync(path.join(dst, `f${i}.bin`)), fs.readFileSync(path.join(src, `f${i}.bin`)));
});

test("a skipped fifo is named in the text output", async (t) => {
  const src = path.join(base, "fifo-src");
  fs.mkdirSync(src, { recursive: true });
  fs.writeFileSync(path.join(src, "a.txt"), "a");
  execFileSync("mkfifo", [path.join(src, "pipe")]);
  const r = await runCli(["sync-dirs", src, path.join(base, "fifo-dst"), "--state-dir", path.join(base, "fifo-state")], path.join(base, "fifo-tmp")).done;
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /not copied: 1 special file .* skipped, "pipe"/);
});
