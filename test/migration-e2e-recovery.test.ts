// Crashes and silence during a migration, end to end on two local clusters with the demo app writing: a coordinator
// killed during pre-sync while the agents pre-sync on, then `theseus resume` carries it to its commit; an agent
// killed and restarted during pre-sync resumes its rounds from its persisted record; a quiesced source whose
// coordinator died restores itself when its lease runs out, and the coordinator then treats the migration as aborted.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import anyTest from "ava";
import type { TestFn } from "ava";
import { FAILPOINT_CRASH_EXIT_CODE, sleep } from "../common/index.js";
import { waitForAppUrl } from "../coordinator/demo/index.js";
import { eventually } from "./local-clusters-support.js";
import {
  appObjects,
  assertAllAcked,
  assertUndone,
  deploymentReplicas,
  mappingArgs,
  migrate,
  migrationStatusOf,
  namespaceObjects,
  ok,
  startApp,
  theseus,
  verifyAcks,
  withClusters,
} from "./migration-e2e-support.js";
import type { Clusters } from "./migration-e2e-support.js";

const test = anyTest as TestFn<{ clusters: Clusters }>;
const US = "migr-us";
withClusters(test, "migr-eu", US);

test.serial("a coordinator killed during pre-sync: the agents pre-sync on, and `theseus resume` carries the migration to its commit", async (t) => {
  t.timeout(8 * 60_000);
  const c = t.context.clusters;
  const app = await startApp(c, c.home, "rs");
  const id = "e2e-resume";
  const run = await theseus(c.home, ["migrate", ...mappingArgs(c, app), "--migration-id", id, "--auto-cutover", "--max-downtime", "1h", "-o", "json"], "coordinator.presync.after-round=crash");
  t.is(run.code, FAILPOINT_CRASH_EXIT_CODE, run.stderr.slice(-3000));
  // The number of the target's latest round (its record keeps only the last rounds, so not their count).
  const rounds = async (): Promise<number> => (await migrationStatusOf(c, id)).participants?.target?.status?.volumes?.[0]?.rounds?.at(-1)?.round ?? -1;
  const first = await rounds();
  await eventually("a round run by the target with no coordinator", async () => ((await rounds()) > first ? true : undefined), 180_000);
  const followed = app.follow(c.target, app.targetNamespace);
  const resumed = ok(await theseus(c.home, ["resume", id, "-o", "json"]), `theseus resume ${id}`);
  t.regex(resumed.stdout, /"outcome":\s*"committed"/);
  t.is((await migrationStatusOf(c, id)).phase, "committed");
  await followed;
  await sleep(2000);
  const summary = await app.stop();
  assertAllAcked(t, await verifyAcks(c.target, app.targetNamespace, app), summary);
});

test.serial("an agent restarted during pre-sync resumes its rounds from its persisted record, and the migration commits", async (t) => {
  t.timeout(8 * 60_000);
  const c = t.context.clusters;
  const app = await startApp(c, c.home, "ar");
  const { handle, events, drained } = await migrate(c, app, "e2e-agent-restart", { mode: "move", autoCutover: false });
  const roundsSeen = (): number[] => events.flatMap((e) => (e.type === "round" ? [e.round.round] : []));
  await eventually("the first round", async () => (roundsSeen().length > 0 ? true : undefined), 180_000);
  const statePath = join(c.home, "clusters", US, "state.json");
  const pid = (JSON.parse(await readFile(statePath, "utf8")) as { agent: { process: { pid: number } } }).agent.process.pid;
  process.kill(pid, "SIGKILL");
  const lastBefore = Math.max(...roundsSeen());
  ok(await theseus(c.home, ["local", "up", US, "--agent", "process"]), `theseus local up ${US} (restarts its agent)`);
  await eventually("a round after the agent's restart", async () => (Math.max(...roundsSeen()) > lastBefore ? true : undefined), 180_000);
  const followed = app.follow(c.target, app.targetNamespace);
  await handle.cutover();
  const outcome = await handle.outcome;
  await drained;
  t.is(outcome.outcome, "committed", outcome.reason);
  await followed;
  await sleep(2000);
  const summary = await app.stop();
  assertAllAcked(t, await verifyAcks(c.target, app.targetNamespace, app), summary);
});

test.serial("a quiesced source whose coordinator died restores itself when its lease runs out; resume then reports the abort", async (t) => {
  t.timeout(8 * 60_000);
  const c = t.context.clusters;
  const app = await startApp(c, c.home, "ls");
  const before = { source: await appObjects(c.source, app.namespace), target: await namespaceObjects(c.target, app.targetNamespace) };
  const id = "e2e-lease";
  const run = await theseus(c.home, ["migrate", ...mappingArgs(c, app), "--migration-id", id, "--auto-cutover", "--max-downtime", "1h", "--lease", "5s", "-o", "json"], "coordinator.before-final-round=crash");
  t.is(run.code, FAILPOINT_CRASH_EXIT_CODE, run.stderr.slice(-3000));
  t.is(await deploymentReplicas(c, "source", app.namespace), 0, "the source was quiesced when the coordinator died");
  await eventually("the source to restore itself", async () => ((await deploymentReplicas(c, "source", app.namespace)) === 1 ? true : undefined), 120_000);
  await app.follow(c.source, app.namespace);
  await waitForAppUrl(c.source, app.namespace, { ready: true, timeoutMs: 120_000 });
  const resumed = await theseus(c.home, ["resume", id, "-o", "json"]);
  t.regex(resumed.stdout, /"outcome":\s*"aborted"/, resumed.stderr.slice(-2000));
  t.is(resumed.code, 1, "resume of a migration that ended aborted is not a success");
  t.is((await migrationStatusOf(c, id)).phase, "aborted");
  await assertUndone(t, c, app, before);
  const summary = await app.stop();
  assertAllAcked(t, await verifyAcks(c.source, app.namespace, app), summary);
});
