// Crashes in the middle of a round, on the real path: agent processes over mTLS gRPC, killed or frozen mid-round, then
// the next round. A round whose peer is gone must end and release its volume, and the next round repairs everything.
import anyTest from "ava";
import type { TestFn } from "ava";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { CACHE_DIR, createSyncSource, runTargetRound } from "../agent/sync/index.js";
import { silentLogger, TheseusError } from "../common/index.js";
import { compareTrees, copyVolume, createLocalInstallation, spawnAgent } from "../coordinator/index.js";
import type { AgentProcess } from "../coordinator/index.js";
import type { TlsMaterial } from "../rpc/index.js";

interface Context {
  work: string;
  pki: string;
  tls: TlsMaterial;
  agents: AgentProcess[];
}

const test = anyTest.serial as TestFn<Context>;

test.before(async (t) => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "theseus-crash-"));
  const pki = path.join(work, "pki");
  const tls = await createLocalInstallation(pki, { installation: "test", agentClusters: ["eu-1", "us-2"], coordinator: "test" });
  t.context = { work, pki, tls, agents: [] };
});

test.after.always(async (t) => {
  for (const a of t.context.agents) {
    if (a.exitStatus() === undefined) process.kill(a.pid, "SIGKILL");
  }
  await Promise.all(t.context.agents.map((a) => a.exited));
  fs.rmSync(t.context.work, { recursive: true, force: true });
});

async function agent(t: { context: Context }, cluster: string, name: string, volume: string, env: Record<string, string> = {}): Promise<AgentProcess> {
  const a = await spawnAgent({ cluster, pkiDir: t.context.pki, volumes: { data: volume }, stateDir: path.join(t.context.work, `state-${name}`), logLevel: "warn", env });
  t.context.agents.push(a);
  return a;
}

function source(dir: string, files: number, bytes: number): void {
  fs.mkdirSync(dir, { recursive: true });
  // Random: compression must not shrink the round below what the transport buffers.
  for (let i = 0; i < files; i++) fs.writeFileSync(path.join(dir, `f${i}.bin`), crypto.randomBytes(bytes));
}

async function until(what: string, probe: () => boolean, timeoutMs = 60_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The target has started receiving: its staging directory holds something. */
function receiving(dst: string): boolean {
  try {
    return fs.readdirSync(path.join(dst, ".theseus-partial")).length > 0;
  } catch {
    return false;
  }
}

test("a frozen target (SIGSTOP mid-round) does not hold the source's volume: keepalive ends the round, and a new target's round runs", async (t) => {
  const { work, tls } = t.context;
  const src = path.join(work, "frozen-src");
  // More than the HTTP/2 window and the socket buffers hold: the source must block on the frozen peer.
  source(src, 12, 4 * 1024 * 1024);
  // Keepalive in seconds rather than a minute, so that the test waits for it; the path is the production one.
  const from = await agent(t, "eu-1", "frozen-eu-1", src, { THESEUS_KEEPALIVE_MS: "2000" });
  const dstA = path.join(work, "frozen-dst-a");
  fs.mkdirSync(dstA);
  const frozen = await agent(t, "us-2", "frozen-us-2-a", dstA);
  // A replacement target of the same cluster (the frozen one's host is lost): its rounds are refused while the
  // source still counts the frozen round as running, and run once the dead connection is dropped.
  const dstB = path.join(work, "frozen-dst-b");
  fs.mkdirSync(dstB);
  const replacement = await agent(t, "us-2", "frozen-us-2-b", dstB);
  const first = copyVolume({ from: from.address, to: frozen.address, volume: "data", tls, bandwidthBytesPerSecond: 8 * 1024 * 1024 });
  first.catch(() => undefined);
  await until("the round to start", () => receiving(dstA));
  process.kill(frozen.pid, "SIGSTOP");
  let refusals = 0;
  const giveUp = Date.now() + 90_000;
  for (;;) {
    try {
      await copyVolume({ from: from.address, to: replacement.address, volume: "data", tls });
      break;
    } catch (error) {
      if (!(error instanceof TheseusError && error.code === "failed_precondition" && /already running/.test(error.message)) || Date.now() > giveUp) throw error;
      refusals++;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  t.true(refusals > 0, "the frozen round held the volume for a while (else this test proved nothing)");
  t.deepEqual(await compareTrees(src, dstB), []);
  process.kill(frozen.pid, "SIGKILL");
});

/** Scratch files of rounds (spool.*, applied.*, index.new.*, *.tmp) in a volume's sync state directories. */
function scratchFiles(volume: string): string[] {
  const out: string[] = [];
  for (const role of ["source", "target"] as const) {
    const dir = volumeState(volume, role);
    if (!fs.existsSync(dir)) continue;
    for (const n of fs.readdirSync(dir)) if (/^(spool|applied|index\.new)\.|\.tmp$/.test(n)) out.push(`${role}/${n}`);
  }
  return out;
}

test("kill -9 of the target at points of a round, restarted each time, then of the source: the next round completes, the copy is exact, and no killed round's files are left", async (t) => {
  const { work, tls } = t.context;
  const src = path.join(work, "kill-src");
  source(src, 6, 3 * 1024 * 1024);
  fs.mkdirSync(path.join(src, "small"));
  for (let i = 0; i < 2000; i++) fs.writeFileSync(path.join(src, "small", `s${i}`), `small ${i}\n`);
  let from = await agent(t, "eu-1", "kill-eu-1", src);
  const dst = path.join(work, "kill-dst");
  fs.mkdirSync(dst);
  let killedWithFiles = 0;
  for (const delayMs of [0, 300, 900, 1800]) {
    const target = await agent(t, "us-2", "kill-us-2", dst);
    const round = copyVolume({ from: from.address, to: target.address, volume: "data", tls, bandwidthBytesPerSecond: 4 * 1024 * 1024 });
    round.catch(() => undefined);
    await new Promise((r) => setTimeout(r, delayMs));
    process.kill(target.pid, "SIGKILL");
    await target.exited;
    if (scratchFiles(dst).length > 0) killedWithFiles++;
  }
  // And the source, mid-round: its index.new.* stays behind.
  {
    const target = await agent(t, "us-2", "kill-us-2", dst);
    fs.writeFileSync(path.join(src, "f0.bin"), crypto.randomBytes(3 * 1024 * 1024));
    const round = copyVolume({ from: from.address, to: target.address, volume: "data", tls, bandwidthBytesPerSecond: 1024 * 1024 });
    round.catch(() => undefined);
    await until("the source's round to start", () => scratchFiles(src).length > 0);
    process.kill(from.pid, "SIGKILL");
    await from.exited;
    await round.catch(() => undefined);
    t.true(scratchFiles(src).length > 0, "the killed source left its index.new behind");
    process.kill(target.pid, "SIGKILL");
    await target.exited;
    from = await agent(t, "eu-1", "kill-eu-1", src);
  }
  t.true(killedWithFiles > 0, "some killed target left its round's files (else this test proves nothing about sweeping)");
  const target = await agent(t, "us-2", "kill-us-2", dst);
  await copyVolume({ from: from.address, to: target.address, volume: "data", tls });
  t.deepEqual(await compareTrees(src, dst), []);
  t.false(fs.existsSync(path.join(dst, ".theseus-partial")), "the staging directory is gone after a complete round");
  t.deepEqual(scratchFiles(dst), [], "the target's killed rounds' files are swept");
  t.deepEqual(scratchFiles(src), [], "the source's killed round's files are swept");
});

/** A volume's sync state for ROLE, kept in the volume itself (agent/sync/registry.ts). */
function volumeState(volume: string, role: "source" | "target"): string {
  return path.join(volume, CACHE_DIR, "sync", role, "data");
}

/** The target's torn-file journal for its volume "data": the verified prefix (blocks) of the file being patched. */
function tornPrefixBlocks(volume: string): number {
  const dir = path.join(volumeState(volume, "target"), "torn");
  try {
    for (const n of fs.readdirSync(dir)) {
      if (n.endsWith(".json")) return (JSON.parse(fs.readFileSync(path.join(dir, n), "utf8")) as { blocks: number }).blocks;
    }
  } catch {
    // not yet written, or being renamed
  }
  return -1;
}

test("kill -9 of the target mid-patch of a large file: the file is journaled torn, never taken for complete, and the rerun sends only what the cut patch had left", async (t) => {
  const { work, tls } = t.context;
  const src = path.join(work, "torn-src");
  const size = 96 * 1024 * 1024;
  fs.mkdirSync(src);
  fs.writeFileSync(path.join(src, "db.bin"), crypto.randomBytes(size));
  const from = await agent(t, "eu-1", "torn-eu-1", src);
  const dst = path.join(work, "torn-dst");
  fs.mkdirSync(dst);
  let target = await agent(t, "us-2", "torn-us-2", dst);
  await copyVolume({ from: from.address, to: target.address, volume: "data", tls });
  // Every block changes (a database rewritten in place): the next round patches all 96 MiB of the target's copy.
  fs.writeFileSync(path.join(src, "db.bin"), crypto.randomBytes(size));
  const cut = copyVolume({ from: from.address, to: target.address, volume: "data", tls, bandwidthBytesPerSecond: 8 * 1024 * 1024 });
  cut.catch(() => undefined);
  // Killed once the journal counts at least half the file as verified.
  await until("the patch to pass half the file", () => tornPrefixBlocks(dst) * 4096 >= size / 2, 120_000);
  process.kill(target.pid, "SIGKILL");
  await target.exited;
  const prefix = tornPrefixBlocks(dst) * 4096;
  t.true(prefix >= size / 2 && prefix < size, `the kill fell mid-patch (${prefix} bytes verified)`);

  // Never taken for complete: a source that holds exactly the torn bytes (a copy of the target's volume) must still
  // send the file. Trusting the torn file's hash would have let this round agree without sending anything. (Played on
  // a copy of the target's volume and state, so that the real repair below still finds the torn file.)
  const probeDst = path.join(work, "torn-probe-dst");
  const probeState = path.join(work, "torn-probe-state");
  fs.cpSync(dst, probeDst, { recursive: true, preserveTimestamps: true });
  fs.cpSync(volumeState(dst, "target"), probeState, { recursive: true, preserveTimestamps: true });
  const probeSrc = path.join(work, "torn-probe-src");
  fs.cpSync(dst, probeSrc, { recursive: true, preserveTimestamps: true });
  fs.rmSync(path.join(probeSrc, ".theseus-lock"), { force: true });
  const probe = await runTargetRound({ root: probeDst, stateDir: probeState, logger: silentLogger() }, (up) =>
    createSyncSource({ root: probeSrc, stateDir: path.join(work, "torn-probe-src-state"), logger: silentLogger() }).serve(up),
  );
  t.true(probe.source.bytesChanged >= size / 2, `the torn file was sent (${probe.source.bytesChanged} bytes)`);
  t.deepEqual(await compareTrees(probeSrc, probeDst), []);

  // The rerun: the verified prefix stays, the rest is sent.
  target = await agent(t, "us-2", "torn-us-2", dst);
  const rerun = await copyVolume({ from: from.address, to: target.address, volume: "data", tls });
  t.deepEqual(await compareTrees(src, dst), []);
  const resent = Number(rerun.stats.wireBytes);
  t.log(`file ${size} bytes, verified before the kill ${prefix}, resent ${resent}`);
  t.true(resent < size - prefix + 40 * 1024 * 1024, `resent ${resent} bytes of ${size} (${prefix} verified before the kill)`);
  t.true(resent < size * 0.6, `resent ${resent} bytes, well under the file's ${size}`);
  t.deepEqual(fs.readdirSync(path.join(volumeState(dst, "target"), "torn")), [], "nothing is torn any more");
});
