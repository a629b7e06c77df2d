// Abort at each step boundary before the commit decision, end to end: the coordinator dies there (a failpoint's
// crash, as kill -9), then `theseus abort ID` (which exits 0: the abort did what was asked) leaves the source as it
// was, with every acknowledged write, and the target as before staging. Real clusters, agents and the writing demo app.
import anyTest from "ava";
import type { TestFn } from "ava";
import { FAILPOINT_CRASH_EXIT_CODE, sleep } from "../common/index.js";
import { waitForAppUrl } from "../coordinator/demo/index.js";
import { appObjects, assertAllAcked, assertUndone, mappingArgs, migrationStatusOf, namespaceObjects, ok, startApp, theseus, verifyAcks, withClusters } from "./migration-e2e-support.js";
import type { Clusters } from "./migration-e2e-support.js";

const test = anyTest as TestFn<{ clusters: Clusters }>;
withClusters(test, "miga-eu", "miga-us");

const BEFORE_COMMIT = [
  "coordinator.before-stage",
  "coordinator.before-begin",
  "coordinator.presync.after-round",
  "coordinator.before-prepare",
  "coordinator.before-quiesce",
  "coordinator.before-final-round",
  "coordinator.before-commit-decision",
] as const;

for (const [i, failpoint] of BEFORE_COMMIT.entries()) {
  test.serial(`abort after the coordinator crashed at ${failpoint}: the source as it was, the target as before staging`, async (t) => {
    t.timeout(6 * 60_000);
    const c = t.context.clusters;
    const app = await startApp(c, c.home, `ab${i}`);
    const before = { source: await appObjects(c.source, app.namespace), target: await namespaceObjects(c.target, app.targetNamespace) };
    const id = `e2e-abort-${i}`;
    const run = await theseus(c.home, ["migrate", ...mappingArgs(c, app), "--migration-id", id, "--auto-cutover", "--max-downtime", "1h", "-o", "json"], `${failpoint}=crash`);
    t.is(run.code, FAILPOINT_CRASH_EXIT_CODE, `migrate should have died at ${failpoint}:\n${run.stderr.slice(-3000)}`);
    const aborted = ok(await theseus(c.home, ["abort", id, "--reason", `test: crashed at ${failpoint}`, "-o", "json"]), `theseus abort ${id}`);
    t.regex(aborted.stdout, /"outcome":\s*"aborted"/);
    t.is((await migrationStatusOf(c, id)).phase, "aborted");
    ok(await theseus(c.home, ["abort", id]), "an abort asked again of an aborted migration succeeds too");

    await app.follow(c.source, app.namespace);
    await waitForAppUrl(c.source, app.namespace, { ready: true, timeoutMs: 120_000 });
    await assertUndone(t, c, app, before);
    await sleep(1000);
    const summary = await app.stop();
    assertAllAcked(t, await verifyAcks(c.source, app.namespace, app), summary);
  });
}
