// A volume copied between two real agent processes arrives byte for byte, and the copy path refuses what it must.
import anyTest from "ava";
import type { TestFn } from "ava";
import { lstat, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TheseusError } from "../common/index.js";
import { compareTrees, copyVolume, createLocalInstallation, generateTree, spawnAgent } from "../coordinator/index.js";
import type { AgentProcess } from "../coordinator/index.js";
import type { TlsMaterial } from "../rpc/index.js";

interface Context {
  work: string;
  source: AgentProcess;
  target: AgentProcess;
  tls: TlsMaterial;
}

const test = anyTest.serial as TestFn<Context>;

test.before(async (t) => {
  const work = await mkdtemp(join(tmpdir(), "theseus-copy-"));
  const pki = join(work, "pki");
  const tls = await createLocalInstallation(pki, { installation: "test", agentClusters: ["eu-1", "us-2"], coordinator: "test" });
  const src = join(work, "src");
  await generateTree(src, { totalBytes: 4 * 1024 * 1024, seed: 7 });
  for (const dir of ["dst", "dst2", "dst3"]) await mkdir(join(work, dir));
  const source = await spawnAgent({ cluster: "eu-1", pkiDir: pki, volumes: { data: src }, stateDir: join(work, "state-eu-1"), logLevel: "warn" });
  const target = await spawnAgent({
    cluster: "us-2",
    pkiDir: pki,
    volumes: { data: join(work, "dst"), other: join(work, "dst2"), hostile: join(work, "dst3") },
    stateDir: join(work, "state-us-2"),
    logLevel: "warn",
  });
  t.context = { work, source, target, tls };
});

test.after.always(async (t) => {
  await Promise.all([t.context.source?.stop(), t.context.target?.stop()]);
  await rm(t.context.work, { recursive: true, force: true });
});

test("a volume copied between two agents is identical byte for byte, with modes, mtimes, symlinks and empty dirs", async (t) => {
  const { work, source, target, tls } = t.context;
  const result = await copyVolume({ from: source.address, to: target.address, volume: "data", tls });
  t.is(result.sourceCluster, "eu-1");
  t.is(result.targetCluster, "us-2");
  t.deepEqual(await compareTrees(join(work, "src"), join(work, "dst")), []);
  t.true((await lstat(join(work, "dst", "empty", "nested-empty"))).isDirectory());
  t.true((await lstat(join(work, "dst", "absolute-link"))).isSymbolicLink(), "symlinks are copied as links, never followed");
  t.true(Number(result.stats.wireBytes) > 0);
  t.true(Number(result.stats.bytesChanged) >= 4 * 1024 * 1024);
});

test("the copy can land in a volume of another name", async (t) => {
  const { work, source, target, tls } = t.context;
  await copyVolume({ from: source.address, to: target.address, volume: "data", targetVolume: "other", tls });
  t.deepEqual(await compareTrees(join(work, "src"), join(work, "dst2")), []);
});

test("an unknown volume fails with not_found and names the volumes served", async (t) => {
  const { source, target, tls } = t.context;
  const error = await t.throwsAsync(copyVolume({ from: source.address, to: target.address, volume: "nope", tls }), { instanceOf: TheseusError });
  t.is(error?.code, "not_found");
  t.regex(error?.hint ?? "", /data/);
});

test("a cancelled copy stops with code cancelled", async (t) => {
  const { source, target, tls } = t.context;
  const controller = new AbortController();
  controller.abort();
  const error = await t.throwsAsync(copyVolume({ from: source.address, to: target.address, volume: "data", targetVolume: "other", tls, signal: controller.signal }), { instanceOf: TheseusError });
  t.is(error?.code, "cancelled");
});

test("an agent that is not there fails with unavailable and a hint", async (t) => {
  const { target, tls } = t.context;
  const error = await t.throwsAsync(copyVolume({ from: "127.0.0.1:1", to: target.address, volume: "data", tls }), { instanceOf: TheseusError });
  t.is(error?.code, "unavailable");
  t.truthy(error?.hint);
});

test("the agent exits 0 on SIGTERM", async (t) => {
  const { work } = t.context;
  const pki = join(work, "pki");
  const vol = join(work, "sigterm");
  await mkdir(vol);
  await writeFile(join(vol, "f"), "x");
  const agent = await spawnAgent({ cluster: "eu-1", pkiDir: pki, volumes: { data: vol }, stateDir: join(work, "state-sigterm"), logLevel: "warn" });
  t.is(await agent.stop(), 0);
});
