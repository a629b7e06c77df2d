// Partitions and a full disk, on the same bench as the crash matrix: the coordinator reaches both agents, and the
// target reaches the source, through cuttable proxies (./proxy.ts says why proxies and not network namespaces); a
// case cuts one link when the migration reaches a moment, heals it later, and the four invariants are checked as for
// a crash.
import { execFile } from "node:child_process";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { sleep } from "../../common/index.js";
import { journalPath } from "../../coordinator/migration/index.js";
import { demoVolumeDir, seedVolume } from "../../coordinator/demo/index.js";
import { LEASE_MS, LIVENESS_BOUND_MS, agentsWith, awaitEnd, checkInvariants, cleanupCase, startCaseApp, status, theseus } from "./bench.js";
import type { Bench, CaseApp, CaseResult, Run } from "./bench.js";
import type { Outcome } from "./cases.js";
import { startProxy } from "./proxy.js";
import type { CuttableProxy, LinkState } from "./proxy.js";

const run = promisify(execFile);

export interface Links {
  /** In front of the source agent: the coordinator's and the target agent's connections. */
  readonly source: CuttableProxy;
  /** In front of the target agent: the coordinator's. */
  readonly target: CuttableProxy;
  coordinatorPid: number | undefined;
  close(): Promise<void>;
}

/** Puts proxies in front of both agents and re-registers them at the proxies' addresses. */
export async function startLinks(bench: Bench): Promise<Links> {
  const links: { coordinatorPid: number | undefined } = { coordinatorPid: undefined };
  const pids = (): Record<string, number | undefined> => ({ coordinator: links.coordinatorPid, target: bench.agents.target.pid() });
  const source = await startProxy(bench.agents.source.port, pids);
  const target = await startProxy(bench.agents.target.port, pids);
  for (const [c, proxy] of [
    [bench.source, source],
    [bench.target, target],
  ] as const) {
    const name = c.cluster.name;
    const r = await theseus(bench.home, ["agents", "add", name, proxy.address, "--cluster", name, "--replace"]);
    if (r.code !== 0) throw new Error(`agents add ${name}: ${r.stderr}`);
  }
  return Object.assign(links, {
    source,
    target,
    async close() {
      await source.close();
      await target.close();
    },
  });
}

export interface Disruption {
  readonly name: string;
  readonly expect: Outcome | undefined;
  /** Extra flags for `theseus migrate`. */
  readonly flags: readonly string[];
  /** Before the migration starts (seed data, mount a disk). */
  prepare?(bench: Bench, app: CaseApp): Promise<void>;
  /** Runs beside the migration: waits for its moment, cuts, heals. Resolves once healed. */
  disrupt(bench: Bench, links: Links, app: CaseApp, id: string): Promise<string>;
  /** Extra check on the end (e.g. the abort's reason names the cause). */
  check?(result: { outcome: string; reason: string }): string | undefined;
  /** After the case (unmount). */
  after?(bench: Bench): Promise<void>;
}

async function until(what: string, timeoutMs: number, probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

const quiesced = (bench: Bench, app: CaseApp) => async (): Promise<boolean> => bench.writers.intervals().some((i) => i.cluster === bench.source.cluster.name && i.namespace === app.namespace && i.toMs !== undefined);

const journalHas = (bench: Bench, id: string, type: string) => async (): Promise<boolean> => (await readFile(journalPath(bench.home, id), "utf8")).includes(`"type":"${type}"`);

function cut(proxy: CuttableProxy, who: string, state: LinkState): string {
  proxy.set(who, state);
  return `${who} -> ${proxy.address}: ${state} at ${new Date().toISOString().slice(11, 23)}`;
}

export const DISRUPTIONS: readonly Disruption[] = [
  {
    name: "partition: target agent ↛ source agent in the middle of a pre-sync round",
    expect: "committed",
    flags: ["--auto-cutover", "--max-downtime", "120s", "--bandwidth", "4MiB/s"],
    async prepare(bench, app) {
      await seedVolume(await demoVolumeDir(bench.source, app.namespace), 24 * 1024 * 1024);
    },
    async disrupt(bench, links, _app, id) {
      // Round 0 of 24 MiB at 4 MiB/s runs ~6 s: cut once it has moved some bytes.
      await until("a pre-sync round moving bytes", 180_000, async () => {
        const s = await status(bench, id);
        const volumes = (s?.participants.target.status as { volumes?: { roundRunning?: boolean; progress?: { bytes?: string } }[] } | undefined)?.volumes ?? [];
        return volumes.some((v) => v.roundRunning === true && Number(v.progress?.bytes ?? 0) > 0);
      });
      const log = [cut(links.source, "target", "drop")];
      await sleep(12_000);
      log.push(cut(links.source, "target", "open"));
      return log.join("; ");
    },
  },
  {
    name: "partition: target agent ↛ source agent in the final round",
    expect: undefined,
    flags: ["--auto-cutover", "--max-downtime", "120s"],
    async disrupt(bench, links, app) {
      await until("the source quiesced", 180_000, quiesced(bench, app));
      const log = [cut(links.source, "target", "drop")];
      await sleep(12_000);
      log.push(cut(links.source, "target", "open"));
      return log.join("; ");
    },
  },
  {
    name: "partition: coordinator ↛ source agent after prepare (the lease restores the source)",
    expect: "aborted",
    flags: ["--auto-cutover", "--max-downtime", "120s"],
    async disrupt(bench, links, app) {
      await until("the source quiesced", 180_000, quiesced(bench, app));
      const log = [cut(links.source, "coordinator", "drop")];
      await sleep(LEASE_MS + 8_000);
      log.push(cut(links.source, "coordinator", "open"));
      return log.join("; ");
    },
    check: ({ reason }) => (/lease/i.test(reason) ? undefined : `the abort's reason does not name the lease: ${reason}`),
  },
  {
    name: "partition: coordinator ↛ target agent after the commit point (resume finishes)",
    expect: "committed",
    flags: ["--auto-cutover", "--max-downtime", "120s"],
    async disrupt(bench, links, _app, id) {
      // Cut at the decision, so that no Commit reaches the target before the source's acknowledgement.
      await until("the commit decision", 180_000, journalHas(bench, id, "commit-decided"));
      const log = [cut(links.target, "coordinator", "refuse")];
      // The coordinator retries the target's Commit, gives up and says to resume; heal once it has.
      await until("the coordinator to give up on the target", 300_000, async () => links.coordinatorPid === undefined);
      log.push(cut(links.target, "coordinator", "open"));
      return log.join("; ");
    },
  },
];

/** A full target disk in the final round: the target's PV directory on a small tmpfs, filled by the final round. */
export function fullDisk(): Disruption {
  let mounted: string | undefined;
  return {
    name: "full disk: the target's volume (a 64 MiB tmpfs) fills up in the final round",
    expect: "aborted",
    flags: ["--bandwidth", "4MiB/s"],
    async prepare(bench) {
      mounted = bench.target.cluster.pvDir;
      await mkdir(mounted, { recursive: true });
      await run("mount", ["-t", "tmpfs", "-o", "size=64m", "theseus-inv-full", mounted]);
    },
    async disrupt(bench, _links, app, id) {
      await until("a first pre-sync round", 180_000, async () => (((await status(bench, id)) as { rounds?: unknown[] } | undefined)?.rounds?.length ?? 0) > 0);
      // 96 MiB more on the source, then the cutover at once: pre-sync (4 MiB/s) lands little of it before the final
      // round starts, so the target still has the free space its vote asks for, and the final round runs out.
      await seedVolume(join(await demoVolumeDir(bench.source, app.namespace), "late"), 96 * 1024 * 1024);
      const r = await theseus(bench.home, ["cutover", id]);
      return `96 MiB written to the source, cutover asked (exit ${String(r.code)})`;
    },
    check: ({ reason }) => (/ENOSPC|no space/i.test(reason) ? undefined : `the abort's reason does not name ENOSPC: ${reason}`),
    async after() {
      if (mounted !== undefined) await run("umount", ["-l", mounted]).catch(() => undefined);
      mounted = undefined;
    },
  };
}

export async function runDisruption(bench: Bench, links: Links, d: Disruption, index: number): Promise<CaseResult> {
  const id = `${bench.name}-${index}`;
  const namespace = `inv-${bench.name}-${index}`;
  const logPrefix = join(bench.dir, id);
  await agentsWith(bench, {});
  const app = await startCaseApp(bench, namespace);
  const notes: string[] = [];
  try {
    await d.prepare?.(bench, app);
    const startedMs = Date.now();
    const migrate: Promise<Run> = theseus(
      bench.home,
      ["migrate", "--from", bench.source.cluster.name, "--to", bench.target.cluster.name, "-n", namespace, "--to-namespace", app.targetNamespace, "--storage-class", "local-path=local-path-immediate", "--lease", `${LEASE_MS / 1000}s`, "--migration-id", id, "-o", "json", ...d.flags],
      { logPrefix: `${logPrefix}.migrate`, onSpawn: (pid) => (links.coordinatorPid = pid) },
    ).then((r) => {
      links.coordinatorPid = undefined;
      return r;
    });
    let disruption = "";
    let reached = true;
    try {
      disruption = await d.disrupt(bench, links, app, id);
    } catch (error) {
      reached = false;
      notes.push(`the disruption did not happen: ${String(error)}`);
    }
    const healedMs = Date.now();
    notes.push(disruption);
    const done = await migrate;
    if (done.code !== 0) {
      notes.push(`the coordinator exited ${String(done.code)}; resuming`);
      const resumed = await theseus(bench.home, ["resume", id, "-o", "json"], { logPrefix: `${logPrefix}.resume`, onSpawn: (pid) => (links.coordinatorPid = pid) });
      links.coordinatorPid = undefined;
      notes.push(`resume exited ${String(resumed.code)}`);
    }
    const { status: st, endedAtMs } = await awaitEnd(bench, id, healedMs);
    const checked = await checkInvariants(bench, app, st);
    const extra = d.check?.({ outcome: checked.outcome, reason: st?.reason ?? "" });
    const resolutionMs = endedAtMs === undefined ? undefined : endedAtMs - healedMs;
    return {
      failpoint: d.name,
      owner: d.name.startsWith("full disk") ? "disk" : "partition",
      recovery: "heal",
      migrationId: id,
      reached,
      outcome: checked.outcome,
      expected: d.expect,
      singleWriter: checked.singleWriter,
      noDataLoss: checked.noDataLoss,
      atomicity: extra === undefined ? checked.atomicity : { held: false, detail: `${checked.atomicity.detail}; ${extra}` },
      liveness:
        resolutionMs === undefined
          ? { held: false, detail: `not ended within ${LIVENESS_BOUND_MS / 1000} s of the heal (phase ${st?.phase ?? "?"})` }
          : { held: true, detail: `ended ${(resolutionMs / 1000).toFixed(1)} s after the heal (${((endedAtMs ?? 0) - startedMs) / 1000} s in all)` },
      resolutionMs,
      reason: st?.reason ?? "",
      notes: [...notes, ...checked.notes, `proxy connections: ${JSON.stringify({ source: links.source.stats, target: links.target.stats })}`],
    };
  } finally {
    await app.stopLoad().catch(() => undefined);
    await cleanupCase(bench, app);
    await d.after?.(bench);
    await writeFile(`${logPrefix}.notes`, notes.join("\n")).catch(() => undefined);
  }
}
