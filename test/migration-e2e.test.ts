// The transaction end to end on two local clusters (real API servers, real agents, the demo app writing all the
// while, its load client recording every acknowledgement): a move commits with every acknowledged write on the target,
// keeps the source scaled to zero until `theseus finish` removes it; a copy commits with the source running on.
// Aborts, crashes and refusals have files of their own (migration-e2e-abort, -recovery, -refusals), each with its
// own clusters, so that they run side by side.
import { readFile } from "node:fs/promises";
import anyTest from "ava";
import type { TestFn } from "ava";
import { sleep } from "../common/index.js";
import { waitForAppUrl } from "../coordinator/demo/index.js";
import { eventually } from "./local-clusters-support.js";
import { TARGET_CLASS, assertAllAcked, deploymentReplicas, migrate, migrationStatusOf, ok, startApp, theseus, verifyAcks, withClusters } from "./migration-e2e-support.js";
import type { Clusters } from "./migration-e2e-support.js";

const test = anyTest as TestFn<{ clusters: Clusters }>;
withClusters(test, "mig-eu", "mig-us");

test.serial("move: the app and every acknowledged write arrive in the target under its namespace and storage class; the source is kept at zero until finish removes it", async (t) => {
  t.timeout(8 * 60_000);
  const c = t.context.clusters;
  const app = await startApp(c, c.home, "mv", { writeBytesPerSecond: 2_000_000 });
  await sleep(2000);
  const { handle, events, drained } = await migrate(c, app, "e2e-move", { mode: "move", autoCutover: true });
  const followed = app.follow(c.target, app.targetNamespace);
  const outcome = await handle.outcome;
  await drained;
  t.is(outcome.outcome, "committed", outcome.reason);
  const targetUrl = await followed;
  // A few acks from the target prove that the load client followed the app there.
  const acked = async (): Promise<number> => (await readFile(app.acksFile, "utf8")).split("\n").filter((l) => l.includes(targetUrl)).length;
  await eventually("acks from the target", async () => ((await acked()) >= 5 ? true : undefined), 120_000);
  const summary = await app.stop();
  assertAllAcked(t, await verifyAcks(c.target, app.targetNamespace, app), summary);

  t.is(await deploymentReplicas(c, "source", app.namespace), 0, "the source is retired (scaled to zero, kept)");
  t.is(await deploymentReplicas(c, "target", app.targetNamespace), 1);
  const claim = await c.target.objects.get({ apiVersion: "v1", kind: "PersistentVolumeClaim", namespace: app.targetNamespace, name: "ledger-data" });
  t.is((claim?.["spec"] as { storageClassName?: string } | undefined)?.storageClassName, TARGET_CLASS);
  t.true(outcome.rounds.length >= 2, "pre-sync ran rounds before the final one");
  t.not(outcome.measuredDowntimeMs, undefined);
  t.not(outcome.predictedDowntimeMs, undefined);
  const phases = events.flatMap((e) => (e.type === "phase" ? [e.phase] : []));
  t.true(phases.indexOf("quiescing") < phases.indexOf("committed"), phases.join(" -> "));
  t.log(`move: ${summary.acked} acks, client gap ${summary.longestGapMs} ms, coordinator ${outcome.measuredDowntimeMs ?? "-"} ms, predicted ${outcome.predictedDowntimeMs ?? "-"} ms`);

  // `theseus finish` removes the kept source: its workload, claim and service, and the migration's records there.
  ok(await theseus(c.home, ["finish", "e2e-move"]), "theseus finish e2e-move");
  t.is((await migrationStatusOf(c, "e2e-move")).phase, "finished");
  for (const [apiVersion, kind, name] of [["apps/v1", "Deployment", "ledger"], ["v1", "PersistentVolumeClaim", "ledger-data"], ["v1", "Service", "ledger"]] as const) {
    t.is(await c.source.objects.get({ apiVersion, kind, namespace: app.namespace, name }), undefined, `the source's ${kind} is removed`);
  }
  for (const kind of ["ConfigMap", "Secret"]) {
    t.is(await c.source.objects.get({ apiVersion: "v1", kind, namespace: "theseus-system", name: "theseus-migration-e2e-move" }), undefined, `the source's participant ${kind} is removed`);
  }
  t.is(await deploymentReplicas(c, "target", app.targetNamespace), 1, "the target runs on");
  ok(await theseus(c.home, ["finish", "e2e-move"]), "theseus finish again changes nothing");
});

test.serial("copy: the target runs a clone with every write acknowledged before the quiesce; the source runs on with all of its own", async (t) => {
  t.timeout(8 * 60_000);
  const c = t.context.clusters;
  const app = await startApp(c, c.home, "cp");
  await sleep(2000);
  const { handle, drained } = await migrate(c, app, "e2e-copy", { mode: "copy", autoCutover: true });
  const outcome = await handle.outcome;
  await drained;
  t.is(outcome.outcome, "committed", outcome.reason);
  // The source was quiesced and unquiesced: its pod is a new one, perhaps at a new address.
  await app.follow(c.source, app.namespace);
  await waitForAppUrl(c.source, app.namespace, { ready: true, timeoutMs: 120_000 });
  await waitForAppUrl(c.target, app.targetNamespace, { ready: true, timeoutMs: 120_000 });
  await sleep(2000);
  const summary = await app.stop();
  t.is(await deploymentReplicas(c, "source", app.namespace), 1, "the source runs on");
  t.is(await deploymentReplicas(c, "target", app.targetNamespace), 1);
  assertAllAcked(t, await verifyAcks(c.source, app.namespace, app), summary);
  const quiesced = outcome.timeline.find((p) => p.phase === "quiescing")?.startedAtMs;
  t.not(quiesced, undefined, "the timeline has the quiesce");
  assertAllAcked(t, await verifyAcks(c.target, app.targetNamespace, app, quiesced));
  t.is((await migrationStatusOf(c, "e2e-copy")).phase, "finished", "a copy needs no finish: the source was never to be retired");
});
