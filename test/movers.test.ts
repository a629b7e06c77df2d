// Mover pods on two local clusters: agents started with THESEUS_VOLUME_ACCESS=mover read and write claims only through
// pods of the agent image that the real API server creates and the emulated kubelet runs (mounting the claim). A copy
// between the clusters runs through a mover on each side (the source's relayed by its agent, the target's pulling
// from the source agent), the content and digests agree, the next round's movers start warm from the claim's cache,
// and the movers are gone afterwards; a mover deleted mid-round fails the round cleanly and the next one resumes; a
// migration of the demo app under load runs every round through one mover per side (pods counted from the API
// servers' watches) and commits with every acknowledged write; an aborted one leaves no mover pod or Secret; and a
// target agent killed mid pre-sync deletes its old mover when it restarts, and a fresh one serves the rest.
import { createHash, randomBytes } from "node:crypto";
import { cp, mkdir, readFile, readdir, lstat, readlink, symlink, writeFile } from "node:fs/promises";
import { loadavg } from "node:os";
import { join } from "node:path";
import { Watch } from "@kubernetes/client-node";
import anyTest from "ava";
import type { TestFn } from "ava";
import { moverLabelSelector } from "../agent/cluster/index.js";
import type { KubeObject } from "../app-model/index.js";
import { TheseusError, sleep } from "../common/index.js";
import { loadKubeConfig } from "../kube/index.js";
import { copyVolume } from "../coordinator/copy/index.js";
import type { DemoCluster } from "../coordinator/demo/index.js";
import { assertAllAcked, migrate, ok, startApp, theseus, verifyAcks, withClusters } from "./migration-e2e-support.js";
import type { Clusters } from "./migration-e2e-support.js";
import { eventually } from "./local-clusters-support.js";

// Read by `theseus local up`'s agents (the CLI child inherits it): every claim through a mover, none directly.
process.env["THESEUS_VOLUME_ACCESS"] = "mover";

const test = anyTest.serial as TestFn<{ clusters: Clusters }>;
withClusters(test, "mvsrc", "mvdst");

// A failed test keeps its pods' logs (movers included) in test-results/movers/, before the clusters go down.
test.afterEach.always(async (t) => {
  if (t.passed) return;
  const c = t.context.clusters;
  for (const side of ["source", "target"] as const) {
    // Not the keys: a mover pod mounts the agent's (a throwaway PKI here, but keys stay out of reports).
    await cp(join(c[side].cluster.dataDir, "pods"), join("test-results", "movers", side), { recursive: true, filter: (path) => !path.endsWith(".key") }).catch(() => undefined);
  }
});

async function claim(c: DemoCluster, namespace: string, name: string, storageClass: string): Promise<void> {
  await c.objects.create({ apiVersion: "v1", kind: "Namespace", metadata: { name: namespace } }).catch(() => undefined);
  await c.objects.create({
    apiVersion: "v1",
    kind: "PersistentVolumeClaim",
    metadata: { name, namespace },
    spec: { accessModes: ["ReadWriteOnce"], storageClassName: storageClass, resources: { requests: { storage: "256Mi" } } },
  });
}

/** The PV directory behind a bound claim (on this machine: the local clusters' provisioner makes directories). */
async function claimDir(c: DemoCluster, namespace: string, name: string): Promise<string> {
  return eventually(`claim ${namespace}/${name} bound`, async () => {
    const pvc = await c.objects.get({ apiVersion: "v1", kind: "PersistentVolumeClaim", namespace, name });
    const volumeName = (pvc?.["spec"] as { volumeName?: string } | undefined)?.volumeName;
    if (volumeName === undefined || volumeName === "") return undefined;
    const pv = await c.objects.get({ apiVersion: "v1", kind: "PersistentVolume", namespace: "", name: volumeName });
    const spec = (pv?.["spec"] ?? {}) as { hostPath?: { path?: string }; local?: { path?: string } };
    return spec.hostPath?.path ?? spec.local?.path;
  });
}

async function movers(c: DemoCluster, kind: "Pod" | "Secret"): Promise<KubeObject[]> {
  return c.objects.list(await c.objects.resourceFor("v1", kind), { labelSelector: moverLabelSelector(c.cluster.name) });
}

/** path -> type and content (sha256 or link target), Theseus's reserved names at the root left out. */
async function tree(root: string, rel = ""): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of (await readdir(join(root, rel))).sort()) {
    if (rel === "" && name.startsWith(".theseus-")) continue;
    const path = rel === "" ? name : `${rel}/${name}`;
    const info = await lstat(join(root, path));
    if (info.isDirectory()) {
      out[path] = "dir";
      Object.assign(out, await tree(root, path));
    } else if (info.isSymbolicLink()) out[path] = `link:${await readlink(join(root, path))}`;
    else out[path] = `file:${createHash("sha256").update(await readFile(join(root, path))).digest("hex")}`;
  }
  return out;
}

/** Records every mover pod seen in either cluster until stopped. */
function watchMovers(c: Clusters): { stop(): Promise<{ source: Set<string>; target: Set<string> }> } {
  const seen = { source: new Set<string>(), target: new Set<string>() };
  let running = true;
  const loop = (async () => {
    while (running) {
      for (const side of ["source", "target"] as const) {
        for (const pod of await movers(c[side], "Pod").catch(() => [])) seen[side].add(pod.metadata.name ?? "");
      }
      await sleep(200);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return seen;
    },
  };
}

/**
 * Counts the mover pods each API server creates until stopped: from a watch (ADDED events, resumed from the last
 * resourceVersion when it drops), so that a pod that lives shorter than any sampling interval still counts.
 */
function countMoverPods(c: Clusters): { stop(): Promise<{ source: Set<string>; target: Set<string> }> } {
  const created = { source: new Set<string>(), target: new Set<string>() };
  const stopping = new AbortController();
  const loops = (["source", "target"] as const).map(async (side) => {
    const watch = new Watch(loadKubeConfig(c[side].cluster.kubeconfigPath));
    let resourceVersion: string | undefined;
    while (!stopping.signal.aborted) {
      await new Promise<void>((resolve) => {
        const query = { labelSelector: moverLabelSelector(c[side].cluster.name), ...(resourceVersion === undefined ? {} : { resourceVersion }) };
        watch
          .watch("/api/v1/pods", query, (type: string, object: KubeObject) => {
            if (object.metadata.resourceVersion !== undefined) resourceVersion = object.metadata.resourceVersion;
            if (type === "ADDED") created[side].add(`${object.metadata.namespace ?? ""}/${object.metadata.name ?? ""}`);
          }, (err: unknown) => {
            // An expired resourceVersion (410): start over; the initial ADDED events name pods already counted.
            if (err !== null && err !== undefined) resourceVersion = undefined;
            resolve();
          })
          .then((request) => stopping.signal.addEventListener("abort", () => request.abort(), { once: true }), () => resolve());
      });
      if (!stopping.signal.aborted) await sleep(200);
    }
  });
  return {
    async stop() {
      // Events in flight reach the watch within a moment of the last change.
      await sleep(1000);
      stopping.abort();
      await Promise.all(loops);
      return created;
    },
  };
}

async function assertMoversGone(t: { is(a: unknown, b: unknown, m?: string): void }, c: Clusters): Promise<void> {
  for (const side of ["source", "target"] as const) {
    for (const kind of ["Pod", "Secret"] as const) {
      // Deleted pods terminate within their grace period (5 s); their Secrets go with them.
      const left = await eventually(`${side} movers (${kind}) gone`, async () => ((await movers(c[side], kind)).length === 0 ? true : undefined), 60_000).catch(() => false);
      t.is(left, true, `${side}: no mover ${kind} left`);
    }
  }
}

test("a copy between two clusters runs through a mover pod on each side; the next round's movers start warm; none is left", async (t) => {
  t.timeout(8 * 60_000);
  const c = t.context.clusters;
  await claim(c.source, "shop", "data", "local-path-immediate");
  // WaitForFirstConsumer on the target: the mover is the claim's first consumer, and binds it.
  await claim(c.target, "shop", "data", "local-path");
  const src = await claimDir(c.source, "shop", "data");
  await mkdir(join(src, "a", "b"), { recursive: true });
  await writeFile(join(src, "a", "b", "small.txt"), "hello through a mover\n");
  await writeFile(join(src, "big.bin"), randomBytes(6 * 1024 * 1024));
  await symlink("a/b/small.txt", join(src, "link"));
  for (let i = 0; i < 50; i++) await writeFile(join(src, "a", `f${i}.txt`), `file ${i}\n`.repeat(i + 1));

  const watch = watchMovers(c);
  const first = await copyVolume({ from: c.from.address, to: c.to.address, volume: "shop/data", tls: c.tls });
  const seen = await watch.stop();
  t.true(seen.source.size >= 1, `a mover pod served the source claim (seen: ${[...seen.source].join(", ")}; target: ${[...seen.target].join(", ")})`);
  t.true(seen.target.size >= 1, "a mover pod served the target claim");
  t.is(Buffer.from(first.stats.sourceDigest).toString("hex"), Buffer.from(first.stats.targetDigest).toString("hex"));
  t.true(Number(first.stats.bytesChanged) >= 6 * 1024 * 1024);
  const dst = await claimDir(c.target, "shop", "data");
  t.deepEqual(await tree(dst), await tree(src), "the target claim holds the source's files");
  await assertMoversGone(t, c);

  // New movers, same claims: each finds its predecessor's cache in the claim, so nothing is read again.
  await writeFile(join(src, "a", "f1.txt"), "changed\n");
  const second = await copyVolume({ from: c.from.address, to: c.to.address, volume: "shop/data", tls: c.tls, round: 1 });
  t.is(Number(second.stats.entriesChanged), 1);
  t.true(Number(second.stats.bytesRead) < 64 * 1024, `source read ${second.stats.bytesRead} bytes (warm cache)`);
  t.true(Number(second.stats.targetBytesRead) < 64 * 1024, `target read ${second.stats.targetBytesRead} bytes (warm cache)`);
  t.deepEqual(await tree(dst), await tree(src));
  await assertMoversGone(t, c);
});

test("a mover pod deleted mid-round fails the round cleanly, and the next round resumes", async (t) => {
  t.timeout(8 * 60_000);
  const c = t.context.clusters;
  await claim(c.source, "cut", "data", "local-path-immediate");
  await claim(c.target, "cut", "data", "local-path-immediate");
  const src = await claimDir(c.source, "cut", "data");
  const size = 48 * 1024 * 1024;
  await writeFile(join(src, "large.bin"), randomBytes(size));

  // Slow enough (8 MiB/s) that the round is still running when the target's mover is deleted.
  let deleted = "";
  const cut = copyVolume({
    from: c.from.address,
    to: c.to.address,
    volume: "cut/data",
    tls: c.tls,
    bandwidthBytesPerSecond: 8 * 1024 * 1024,
    onProgress: (p) => {
      if (deleted !== "" || Number(p.bytes) < 12 * 1024 * 1024) return;
      deleted = "pending";
      void movers(c.target, "Pod").then(async (pods) => {
        const pod = pods.find((p) => p.metadata.namespace === "cut");
        deleted = pod?.metadata.name ?? "none";
        if (pod !== undefined) await c.target.objects.delete({ apiVersion: "v1", kind: "Pod", namespace: "cut", name: deleted });
      });
    },
  });
  const error = await t.throwsAsync(cut, { instanceOf: TheseusError });
  t.not(deleted, "none", "a target mover was running mid-round");
  t.true(["unavailable", "cancelled", "aborted"].includes(error?.code ?? ""), `the round failed with ${error?.code ?? "?"}: ${error?.message ?? ""}`);
  await assertMoversGone(t, c);

  const resumed = await copyVolume({ from: c.from.address, to: c.to.address, volume: "cut/data", tls: c.tls, round: 1 });
  t.is(Buffer.from(resumed.stats.sourceDigest).toString("hex"), Buffer.from(resumed.stats.targetDigest).toString("hex"));
  t.true(Number(resumed.stats.wireBytes) < size * 0.85, `the resumed round sent ${resumed.stats.wireBytes} of ${size} bytes`);
  const dst = await claimDir(c.target, "cut", "data");
  t.deepEqual(await tree(dst), await tree(src));
  await assertMoversGone(t, c);
});

test("a migration of the demo app under load runs its rounds through mover pods and commits with every acknowledged write", async (t) => {
  t.timeout(10 * 60_000);
  const c = t.context.clusters;
  const app = await startApp(c, c.home, "mig", { writeBytesPerSecond: 500_000 });
  await sleep(2000);
  const count = countMoverPods(c);
  const { handle, drained } = await migrate(c, app, "movers-move", { mode: "move", autoCutover: true });
  const followed = app.follow(c.target, app.targetNamespace);
  const outcome = await handle.outcome;
  await drained;
  const created = await count.stop();
  t.is(outcome.outcome, "committed", outcome.reason);
  // The migration's mover serves all its rounds on each side: no pod start-up in the final round (the downtime).
  t.true(outcome.rounds.length >= 2, `rounds: ${outcome.rounds.length}`);
  t.is(created.source.size, 1, `one mover pod on the source for ${outcome.rounds.length} rounds: ${[...created.source].join(", ")}`);
  t.is(created.target.size, 1, `one mover pod on the target for ${outcome.rounds.length} rounds: ${[...created.target].join(", ")}`);
  await followed;
  await sleep(2000);
  const summary = await app.stop();
  assertAllAcked(t, await verifyAcks(c.target, app.targetNamespace, app), summary);
  await assertMoversGone(t, c);
  t.log(`load average ${loadavg().map((l) => l.toFixed(2)).join(" ")}`);
  t.log(`through movers: ${outcome.rounds.length} rounds, downtime ${outcome.measuredDowntimeMs ?? "-"} ms (predicted ${outcome.predictedDowntimeMs ?? "-"} ms), client gap ${summary.longestGapMs} ms`);
});

test("an aborted migration through movers used one mover pod per side for its rounds, and leaves no mover pod or Secret", async (t) => {
  t.timeout(10 * 60_000);
  const c = t.context.clusters;
  const app = await startApp(c, c.home, "abt", { writeBytesPerSecond: 200_000 });
  await sleep(1000);
  const count = countMoverPods(c);
  const { handle, events, drained } = await migrate(c, app, "movers-abort", { mode: "move", autoCutover: false });
  // Pre-sync rounds until at least two have run on the same movers, then abort.
  await eventually("two pre-sync rounds", async () => (events.filter((e) => e.type === "round").length >= 2 ? true : undefined), 5 * 60_000);
  await handle.abort("the test aborts");
  const outcome = await handle.outcome;
  await drained;
  const created = await count.stop();
  t.is(outcome.outcome, "aborted", outcome.reason);
  const rounds = events.filter((e) => e.type === "round").length;
  t.is(created.source.size, 1, `one mover pod on the source for ${rounds} rounds: ${[...created.source].join(", ")}`);
  t.is(created.target.size, 1, `one mover pod on the target for ${rounds} rounds: ${[...created.target].join(", ")}`);
  await assertMoversGone(t, c);
  await app.stop();
});

test("a target agent killed during pre-sync: its restart deletes the old mover instead of adopting it, one fresh mover serves the rest, and none is left", async (t) => {
  t.timeout(10 * 60_000);
  const c = t.context.clusters;
  const app = await startApp(c, c.home, "crash", { writeBytesPerSecond: 200_000 });
  await sleep(1000);
  const count = countMoverPods(c);
  const { handle, events, drained } = await migrate(c, app, "movers-crash", { mode: "move", autoCutover: false });
  const roundsSeen = (): number[] => events.flatMap((e) => (e.type === "round" ? [e.round.round] : []));
  await eventually("the first round", async () => (roundsSeen().length > 0 ? true : undefined), 180_000);
  const before = (await movers(c.target, "Pod")).map((p) => p.metadata.name ?? "");
  t.is(before.length, 1, `the target's mover before the crash: ${before.join(", ")}`);
  const statePath = join(c.home, "clusters", c.target.cluster.name, "state.json");
  const pid = (JSON.parse(await readFile(statePath, "utf8")) as { agent: { process: { pid: number } } }).agent.process.pid;
  process.kill(pid, "SIGKILL");
  const lastBefore = Math.max(...roundsSeen());
  ok(await theseus(c.home, ["local", "up", c.target.cluster.name, "--agent", "process"]), "theseus local up (restarts the target's agent)");
  await eventually("a round after the agent's restart", async () => (Math.max(...roundsSeen()) > lastBefore ? true : undefined), 180_000);
  // Deleted, perhaps still terminating: a pod with a deletionTimestamp serves no round.
  const after = (await movers(c.target, "Pod")).filter((p) => p.metadata.deletionTimestamp === undefined).map((p) => p.metadata.name ?? "");
  t.false(after.some((name) => before.includes(name)), `the crashed agent's mover was deleted, not adopted (now: ${after.join(", ")})`);
  const followed = app.follow(c.target, app.targetNamespace);
  // Awaited below; if the migration fails first, the teardown cancels it, which must not be an unhandled rejection.
  followed.catch(() => undefined);
  await handle.cutover();
  const outcome = await handle.outcome;
  await drained;
  const created = await count.stop();
  t.is(outcome.outcome, "committed", outcome.reason);
  t.is(created.target.size, 2, `the target's movers: the crashed agent's and one fresh one for all later rounds: ${[...created.target].join(", ")}`);
  t.is(created.source.size, 1, `the source's agent lived on with its one mover: ${[...created.source].join(", ")}`);
  await followed;
  await sleep(2000);
  const summary = await app.stop();
  assertAllAcked(t, await verifyAcks(c.target, app.targetNamespace, app), summary);
  await assertMoversGone(t, c);
});
