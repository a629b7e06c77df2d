// The parts of mover pods that need no cluster: a mover serves only its own agent's identity (not coordinators, not
// the peer agent) and reports its mount's free space; its sync state in the volume's reserved `.theseus-cache` is
// hidden from both walks and warm for the next mover; a state directory elsewhere inside the volume is still refused;
// the configuration is validated once.
import fs from "node:fs";
import { mkdir, mkdtemp, rm, statfs, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path, { join } from "node:path";
import anyTest from "ava";
import type { TestFn } from "ava";
import { resolveAgentOptions, startAgent } from "../agent/index.js";
import { CACHE_DIR, createSyncSource, runTargetRound } from "../agent/sync/index.js";
import { TheseusError, silentLogger } from "../common/index.js";
import { createThrowawayPki } from "../coordinator/index.js";
import type { ThrowawayPki } from "../coordinator/index.js";
import { AgentService } from "../proto/gen/theseus/v1/agent_pb.js";
import { createRpcClient } from "../rpc/index.js";

const test = anyTest as TestFn<{ dir: string; pki: ThrowawayPki }>;

test.before(async (t) => {
  t.context = { dir: await mkdtemp(join(tmpdir(), "theseus-movers-")), pki: await createThrowawayPki() };
});

test.after.always(async (t) => {
  await rm(t.context.dir, { recursive: true, force: true });
});

const moverSettings = (volume: string) => ({ clusterName: "eu-1", listen: "127.0.0.1:0", volumes: { data: volume }, tlsCa: "x", tlsCert: "x", tlsKey: "x", mode: "mover" as const });

test("a mover admits only its own agent: coordinators and the peer agent are refused before any handler runs", async (t) => {
  const volume = join(t.context.dir, "mover-volume");
  await mkdir(volume);
  const options = resolveAgentOptions(moverSettings(volume), { inCluster: true });
  t.is(options.cluster.kind, "none", "a mover never talks to the API server, even in a pod");
  t.is(options.stateDir, join(volume, CACHE_DIR), "its state lives in the claim, for the next mover");
  const mover = await startAgent(options, { tls: await t.context.pki.material({ role: "agent", name: "eu-1" }) });
  const call = async (role: "agent" | "coordinator", name: string): Promise<TheseusError | string> => {
    const client = createRpcClient(AgentService, mover.address, { tls: await t.context.pki.material({ role, name }), expectedPeer: { role: "agent", name: "eu-1" } });
    try {
      return (await client.getInfo({}, { timeoutMs: 5000 })).clusterName;
    } catch (error) {
      return TheseusError.from(error);
    } finally {
      client.close();
    }
  };
  try {
    t.is(await call("agent", "eu-1"), "eu-1");
    for (const [role, name] of [["coordinator", "alice"], ["agent", "us-2"]] as const) {
      const refused = await call(role, name);
      t.true(refused instanceof TheseusError && refused.code === "permission_denied", `${role}/${name}: ${String(refused)}`);
    }
  } finally {
    await mover.close(500);
  }
});

test("a mover reports its mount's free space in GetInfo, which the target's Prepare vote reads for a claim behind a mover", async (t) => {
  const volume = join(t.context.dir, "free-volume");
  await mkdir(volume);
  const mover = await startAgent(resolveAgentOptions(moverSettings(volume), { inCluster: true }), { tls: await t.context.pki.material({ role: "agent", name: "eu-1" }) });
  const client = createRpcClient(AgentService, mover.address, { tls: await t.context.pki.material({ role: "agent", name: "eu-1" }), expectedPeer: { role: "agent", name: "eu-1" } });
  try {
    const info = await client.getInfo({}, { timeoutMs: 5000 });
    const data = info.volumes.find((v) => v.name === "data");
    const fsInfo = await statfs(volume);
    t.not(data?.freeBytes, undefined, "the mover's volume says how much is free");
    // What the mount's filesystem holds at all bounds it (other writers on this machine move the exact figure).
    t.true(Number(data?.freeBytes ?? 0) > 0 && Number(data?.freeBytes ?? 0) <= fsInfo.blocks * fsInfo.bsize, `free ${String(data?.freeBytes)} of ${fsInfo.blocks * fsInfo.bsize}`);
  } finally {
    client.close();
    await mover.close(500);
  }
});

test("a mover's cache directory is hidden from both walks, and a new mover's round with it reads nothing again", async (t) => {
  const src = join(t.context.dir, "cache-src");
  const dst = join(t.context.dir, "cache-dst");
  await mkdir(join(src, "d"), { recursive: true });
  await mkdir(dst);
  await writeFile(join(src, "d", "a.txt"), "a\n");
  await writeFile(join(src, "big.bin"), Buffer.alloc(3 * 1024 * 1024, 7));
  const round = () => {
    // A fresh source and target each time, as each round's movers are new processes.
    const source = createSyncSource({ root: src, stateDir: join(src, CACHE_DIR, "sync", "source", "data"), logger: silentLogger() });
    return runTargetRound({ root: dst, stateDir: join(dst, CACHE_DIR, "sync", "target", "data"), logger: silentLogger() }, (up) => source.serve(up));
  };
  const first = await round();
  t.is(first.digest, first.sourceDigest);
  t.true(fs.existsSync(join(src, CACHE_DIR)) && fs.existsSync(join(dst, CACHE_DIR)), "both movers kept their state in their volume");
  t.deepEqual(fs.readdirSync(join(dst, CACHE_DIR)).sort(), ["sync"], "the source's cache was not sent into the target's");
  t.false(fs.existsSync(join(dst, CACHE_DIR, "sync", "source")), "nothing of the source's cache on the target");
  const second = await round();
  t.is(second.digest, first.digest, "the caches are not part of the digest");
  t.is(second.source.bytesRead, 0, "the source's new mover trusted its predecessor's cache");
  t.is(second.targetBytesRead, 0, "so did the target's");
  t.is(second.source.entriesChanged, 0);
});

test("a state directory inside the volume but outside its cache directory is still refused", async (t) => {
  const root = join(t.context.dir, "refuse");
  await mkdir(root);
  const source = createSyncSource({ root, stateDir: join(t.context.dir, "refuse-state"), logger: silentLogger() });
  const error = await t.throwsAsync(runTargetRound({ root, stateDir: path.join(root, "state"), logger: silentLogger() }, (up) => source.serve(up)), { instanceOf: TheseusError });
  t.is(error?.code, "invalid_argument");
});

test("volume access and the mover limit are validated once, with a hint", (t) => {
  const base = { clusterName: "eu-1", tlsCa: "x", tlsCert: "x", tlsKey: "x" };
  t.is(resolveAgentOptions(base).volumeAccess, "auto");
  t.is(resolveAgentOptions(base, { volumeAccess: "mover", moverLimit: 2 }).movers.limit, 2);
  for (const bad of [{ volumeAccess: "pods" }, { moverLimit: 0 }, { moverLimit: 1.5 }]) {
    const error = t.throws(() => resolveAgentOptions(base, bad), { instanceOf: TheseusError });
    t.is(error?.code, "invalid_argument");
    t.truthy(error?.hint, JSON.stringify(bad));
  }
  t.throws(() => resolveAgentOptions({ ...base, mode: "mover" }), { instanceOf: TheseusError, message: /exactly one volume/ });
});
