// What the transaction refuses, end to end on two local clusters with the demo app writing: pre-sync that cannot
// converge (the app writes faster than the bandwidth allows) is refused quickly with the reason and what would help,
// and the source runs on; a target that does not become ready after the commit point, and took no write, is rolled
// back to the source, which says so, leaving the source as it was and the target as before staging.
import anyTest from "ava";
import type { TestFn } from "ava";
import { waitForAppUrl } from "../coordinator/demo/index.js";
import { appObjects, assertAllAcked, assertUndone, mappingArgs, migrationStatusOf, namespaceObjects, startApp, theseus, verifyAcks, withClusters } from "./migration-e2e-support.js";
import type { Clusters } from "./migration-e2e-support.js";

const test = anyTest as TestFn<{ clusters: Clusters }>;
withClusters(test, "mign-eu", "mign-us");

test.serial("a cutover that cannot converge (the app writes faster than the bandwidth allows) is refused with the reason, and the source runs on", async (t) => {
  t.timeout(8 * 60_000);
  const c = t.context.clusters;
  // A claim that holds what the app writes while the test runs (the plan refuses a target claim smaller than the data).
  const app = await startApp(c, c.home, "nc", { sizeBytes: 1024 ** 3, writeBytesPerSecond: 3_000_000, recordBytes: 64 * 1024 });
  const before = { source: await appObjects(c.source, app.namespace), target: await namespaceObjects(c.target, app.targetNamespace) };
  const id = "e2e-diverging";
  const started = Date.now();
  // The app's records compress about 2:1 and a busy machine slows its writes to ~1.6 MiB/s: at 1 MiB/s on the wire
  // the rounds moved as much as the app wrote, which proves nothing. At 512 KiB/s a round moves half of that.
  const run = await theseus(c.home, ["migrate", ...mappingArgs(c, app), "--migration-id", id, "--auto-cutover", "--bandwidth", "512KiB/s"]);
  t.log(`refused after ${Math.round((Date.now() - started) / 1000)} s`);
  t.is(run.code, 1, run.stderr.slice(-3000));
  t.regex(`${run.stdout}\n${run.stderr}`, /cannot converge/);
  t.regex(`${run.stdout}\n${run.stderr}`, /bandwidth/, "it says what would help");
  t.is((await migrationStatusOf(c, id)).phase, "aborted");
  await assertUndone(t, c, app, before);
  const summary = await app.stop();
  assertAllAcked(t, await verifyAcks(c.source, app.namespace, app), summary);
});

test.serial("a target that does not become ready after the commit point, having taken no write, is rolled back to the source, which runs as it was", async (t) => {
  t.timeout(8 * 60_000);
  const c = t.context.clusters;
  const app = await startApp(c, c.home, "nr");
  const before = { source: await appObjects(c.source, app.namespace), target: await namespaceObjects(c.target, app.targetNamespace) };
  const id = "e2e-not-ready";
  // An image the target's (emulated) kubelet does not know: its pod stays Pending, so the target never gets ready.
  const run = await theseus(c.home, [
    "migrate",
    ...mappingArgs(c, app),
    "--image-registry",
    "theseus.local=registry.invalid",
    "--migration-id",
    id,
    "--auto-cutover",
    "--max-downtime",
    "1h",
    "--ready-timeout",
    "15s",
  ]);
  const said = `${run.stdout}\n${run.stderr}`;
  t.is(run.code, 1, "the migration ended aborted (rolled back)");
  t.regex(said, /rolled back to the source/, said.slice(-3000));
  t.regex(said, /took no write/);
  t.regex(said, /did not become ready/);
  const status = await migrationStatusOf(c, id);
  t.is(status.phase, "aborted");
  t.regex(status.reason ?? "", /rolled back/);
  await app.follow(c.source, app.namespace);
  await waitForAppUrl(c.source, app.namespace, { ready: true, timeoutMs: 120_000 });
  await assertUndone(t, c, app, before);
  const summary = await app.stop();
  assertAllAcked(t, await verifyAcks(c.source, app.namespace, app), summary);
});
