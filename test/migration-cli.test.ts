// The coordinator's commands through the real CLI binary, with a private THESEUS_HOME, on two local clusters (real
// API servers, each with its agent): a migration started with --detach and aborted during pre-sync leaves the source
// as it was and the target as before staging; `theseus migrate --auto-cutover` moves the app and its volume (every
// file arrives, the source is scaled to zero, the target runs it), prints the id first and the outcome last, and
// journals every phase; list, status and finish read that journal.
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdir, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import anyTest from "ava";
import type { TestFn } from "ava";
import type { KubeObject } from "../app-model/index.js";
import { createKubeObjects, createKubeRest, loadKubeConfig } from "../kube/index.js";
import type { KubeObjects } from "../kube/index.js";
import { downCluster, getCluster } from "../local-clusters/index.js";
import { eventually, privateTheseusHome } from "./local-clusters-support.js";

interface Context {
  home: string;
  source: KubeObjects;
  target: KubeObjects;
  sourceDir: string;
}
const test = anyTest as TestFn<Context>;

const CLI = fileURLToPath(new URL("../coordinator/main.js", import.meta.url));
const EU = "mcli-eu";
const US = "mcli-us";
const NS = "shop";
const APP = "keeper";
const CLAIM = "keeper-data";
const MAPPING = ["--from", EU, "--to", US, "-n", NS, "--storage-class", "local-path=local-path-immediate"];

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

function theseus(home: string, ...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...process.env, THESEUS_HOME: home }, maxBuffer: 64 * 1024 * 1024, timeout: 8 * 60_000 }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : 1, stdout, stderr });
    });
  });
}

function ok(run: Run, what: string): Run {
  if (run.code !== 0) throw new Error(`${what} exited ${run.code}:\n${run.stderr}\n${run.stdout.slice(-6000)}`);
  return run;
}

function appObjects(): KubeObject[] {
  const labels = { app: APP };
  return [
    { apiVersion: "v1", kind: "Namespace", metadata: { name: NS } },
    {
      apiVersion: "v1",
      kind: "PersistentVolumeClaim",
      metadata: { name: CLAIM, namespace: NS, labels },
      spec: { accessModes: ["ReadWriteOnce"], storageClassName: "local-path", resources: { requests: { storage: "64Mi" } } },
    },
    {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name: APP, namespace: NS, labels },
      spec: {
        replicas: 1,
        strategy: { type: "Recreate" },
        selector: { matchLabels: labels },
        template: {
          metadata: { labels },
          spec: {
            terminationGracePeriodSeconds: 5,
            containers: [
              {
                name: "app",
                image: "theseus.local/test-sleeper:dev",
                env: [{ name: "OUT_FILE", value: "/data/started.log" }, { name: "PORT", value: "0" }],
                volumeMounts: [{ name: "data", mountPath: "/data" }],
              },
            ],
            volumes: [{ name: "data", persistentVolumeClaim: { claimName: CLAIM } }],
          },
        },
      },
    },
  ];
}

async function kube(name: string): Promise<KubeObjects> {
  const cluster = await getCluster(name);
  if (cluster === undefined) throw new Error(`cluster ${name} vanished`);
  return createKubeObjects(createKubeRest(loadKubeConfig(cluster.kubeconfigPath)));
}

async function claimDir(objects: KubeObjects, namespace: string): Promise<string | undefined> {
  const claim = await objects.get({ apiVersion: "v1", kind: "PersistentVolumeClaim", namespace, name: CLAIM });
  const volumeName = (claim?.["spec"] as { volumeName?: string } | undefined)?.volumeName;
  if (volumeName === undefined || volumeName === "") return undefined;
  const pv = await objects.get({ apiVersion: "v1", kind: "PersistentVolume", namespace: "", name: volumeName });
  return (pv?.["spec"] as { hostPath?: { path?: string } } | undefined)?.hostPath?.path;
}

async function deployment(objects: KubeObjects, namespace: string): Promise<{ replicas: number; ready: number } | undefined> {
  const d = await objects.get({ apiVersion: "apps/v1", kind: "Deployment", namespace, name: APP });
  if (d === undefined) return undefined;
  const spec = d["spec"] as { replicas?: number };
  const status = d["status"] as { readyReplicas?: number } | undefined;
  return { replicas: spec.replicas ?? 1, ready: status?.readyReplicas ?? 0 };
}

/** Every file under dir by relative path, with a digest; the app's own start log (written again by the target's pod) apart. */
async function tree(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const path = join(entry.parentPath, entry.name).slice(dir.length + 1);
    if (path.startsWith(".theseus") || path === "started.log") continue;
    out[path] = createHash("sha256").update(await readFile(join(dir, path))).digest("hex");
  }
  return out;
}

test.before(async (t) => {
  t.timeout(10 * 60_000);
  const home = privateTheseusHome();
  t.context.home = home;
  ok(await theseus(home, "local", "up", EU, "--agent", "process"), `theseus local up ${EU}`);
  ok(await theseus(home, "local", "up", US, "--agent", "process"), `theseus local up ${US}`);
  t.context.source = await kube(EU);
  t.context.target = await kube(US);
  const source = t.context.source;
  await source.create(appObjects()[0] as KubeObject);
  await eventually("the default service account's token", async () => {
    const sa = await source.get({ apiVersion: "v1", kind: "ServiceAccount", namespace: NS, name: "default" });
    return Array.isArray(sa?.["secrets"]) && sa["secrets"].length > 0 ? true : undefined;
  });
  for (const o of appObjects().slice(1)) await source.create(o);
  t.context.sourceDir = await eventually("the app's claim bound to a directory", () => claimDir(source, NS), 180_000);
  await eventually("the app ready on the source", async () => ((await deployment(source, NS))?.ready === 1 ? true : undefined), 180_000);
  // Data for the rounds to carry: files of several sizes, one large enough for block-level rounds.
  await mkdir(join(t.context.sourceDir, "records"), { recursive: true });
  for (let i = 0; i < 20; i++) await writeFile(join(t.context.sourceDir, "records", `r${i}.bin`), randomBytes(64 * 1024));
  await writeFile(join(t.context.sourceDir, "pages.db"), randomBytes(4 * 1024 * 1024));
});

test.after.always(async (t) => {
  if (t.context.home === undefined) return;
  for (const name of [EU, US]) await downCluster(name).catch(() => undefined);
  await rm(t.context.home, { recursive: true, force: true });
});

interface StatusJson {
  id: string;
  phase: string;
  reason?: string;
  timeline: { phase: string }[];
  rounds: unknown[];
  driverPid?: number;
}

test.serial("a detached migration aborted during pre-sync leaves the source as it was and the target as before staging", async (t) => {
  const { home } = t.context;
  const started = ok(await theseus(home, "migrate", ...MAPPING, "--to-namespace", "shop-a", "--detach", "--migration-id", "cli-abort", "-o", "json"), "migrate --detach");
  t.is((JSON.parse(started.stdout) as { migrationId: string }).migrationId, "cli-abort");
  const presyncing = await eventually(
    "pre-sync to run its rounds",
    async () => {
      const s = JSON.parse(ok(await theseus(home, "status", "cli-abort", "-o", "json"), "status").stdout) as StatusJson;
      if (s.phase === "aborted" || s.phase === "aborting") throw new Error(`aborted on its own: ${s.reason ?? ""}`);
      return s.phase === "presyncing" && s.rounds.length > 0 ? s : undefined;
    },
    180_000,
  );
  t.truthy(presyncing.driverPid, "the background driver holds the migration");
  t.truthy(await t.context.target.get({ apiVersion: "apps/v1", kind: "Deployment", namespace: "shop-a", name: APP }), "the target is staged");

  const aborted = await theseus(home, "abort", "cli-abort", "--reason", "testing the abort", "-o", "json");
  t.is(aborted.code, 0, aborted.stderr);
  const status = await eventually(
    "the abort to end",
    async () => {
      const s = JSON.parse(ok(await theseus(home, "status", "cli-abort", "-o", "json"), "status").stdout) as StatusJson;
      return s.phase === "aborted" ? s : undefined;
    },
    120_000,
  );
  t.is(status.reason, "testing the abort");
  t.deepEqual(await deployment(t.context.source, NS), { replicas: 1, ready: 1 }, "the source runs as before");
  await eventually("the target's staging to be gone", async () => ((await t.context.target.get({ apiVersion: "v1", kind: "Namespace", namespace: "", name: "shop-a" })) === undefined ? true : undefined), 120_000);
});

test.serial("migrate --auto-cutover moves the app and every file of its volume, printing the id first and the outcome last", async (t) => {
  const { home } = t.context;
  const run = ok(await theseus(home, "migrate", ...MAPPING, "--to-namespace", "shop-us", "--auto-cutover", "--max-downtime", "60s", "--migration-id", "cli-move", "-o", "json"), "migrate --auto-cutover");
  const lines = run.stdout.trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
  t.deepEqual(lines[0], { migrationId: "cli-move" }, "the id comes first");
  const outcome = (lines.at(-1) as { outcome?: { outcome: string; rounds: unknown[]; measuredDowntimeMs?: number; predictedDowntimeMs?: number; timeline: { phase: string }[] } }).outcome;
  t.is(outcome?.outcome, "committed", run.stdout.slice(-3000));
  t.true((outcome?.rounds.length ?? 0) >= 2, "pre-sync rounds and the final one");
  t.is(typeof outcome?.measuredDowntimeMs, "number");
  t.deepEqual(
    outcome?.timeline.map((p) => p.phase),
    ["planning", "staging", "beginning", "presyncing", "preparing", "quiescing", "final-round", "committing-source", "committing-target", "committed"],
  );
  t.true(lines.some((l) => l["type"] === "round"), "rounds are reported as they finish");

  const targetDir = await claimDir(t.context.target, "shop-us");
  t.truthy(targetDir);
  t.deepEqual(await tree(targetDir ?? ""), await tree(t.context.sourceDir), "every file arrived as it was");
  const sourceLog = await readFile(join(t.context.sourceDir, "started.log"), "utf8");
  t.true(sourceLog.includes("sigterm"), "the source's writer was stopped before the final round");
  t.true((await readFile(join(targetDir ?? "", "started.log"), "utf8")).startsWith(sourceLog), "the target has all the source wrote, then its own start");
  t.is((await deployment(t.context.source, NS))?.replicas, 0, "the source is scaled to zero (kept until finish)");
  await eventually("the app ready on the target", async () => ((await deployment(t.context.target, "shop-us"))?.ready === 1 ? true : undefined), 120_000);

  const status = JSON.parse(ok(await theseus(home, "status", "cli-move", "-o", "json"), "status").stdout) as StatusJson;
  t.is(status.phase, "committed");
  const list = JSON.parse(ok(await theseus(home, "list", "-o", "json"), "list").stdout) as { id: string; phase: string }[];
  t.deepEqual(list.map((m) => [m.id, m.phase]), [["cli-abort", "aborted"], ["cli-move", "committed"]]);
  const again = await theseus(home, "abort", "cli-move");
  t.not(again.code, 0, "a committed migration cannot be aborted");
  t.regex(again.stderr, /committed/);
  ok(await theseus(home, "finish", "cli-move"), "finish");
  t.is((JSON.parse(ok(await theseus(home, "status", "cli-move", "-o", "json"), "status").stdout) as StatusJson).phase, "finished");
});
