// The "done when", on two local clusters through the real CLI: the composite app with data on one cluster,
// `theseus export --quiesce` (the app stopped and started again), `helm lint`/`helm template` clean on the chart,
// plain `helm install` of the chart alone bringing the app up with empty volumes (the data never in the release),
// `theseus import` into the other cluster under another namespace and storage class serving with every volume's data
// verified, and tampered archives (truncated, a path out of the volume, a link out, a digest that differs) refused
// with nothing left on the target and nothing written outside the volumes.
import { execFile, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { mkdir, readFile, readdir, readlink, rm, stat, symlink, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import anyTest from "ava";
import type { TestFn } from "ava";
import { pack as tarPack } from "tar-stream";
import type { Header } from "tar-stream";
import { parseAllDocuments } from "yaml";
import { compress } from "zstd-napi";
import type { KubeObject } from "../app-model/index.js";
import type { ExportResult, ImportResult, Manifest } from "../coordinator/export/index.js";
import { createKubeObjects, createKubeRest, loadKubeConfig } from "../kube/index.js";
import type { KubeObjects } from "../kube/index.js";
import { downCluster, getCluster } from "../local-clusters/index.js";
import { COMPOSITE_CLAIMS, applyCompositeApp } from "./fixtures/composite-app.js";
import { eventually, privateTheseusHome } from "./local-clusters-support.js";

interface Context {
  home: string;
  work: string;
  source: KubeObjects;
  target: KubeObjects;
  targetKubeconfig: string;
  archive: string;
  /** What the test wrote into each source volume, by claim. */
  seeded: Map<string, { blobSha256: string }>;
}
const test = anyTest as TestFn<Context>;

const CLI = fileURLToPath(new URL("../coordinator/main.js", import.meta.url));
const HELM = fileURLToPath(new URL("../../node_modules/.bin/helm", import.meta.url));
const EU = "fc-eu";
const US = "fc-us";
const NS = "shop";
const TARGET_NS = "shop-us";

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

function run(file: string, args: readonly string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(file, args, { env: { ...process.env, ...env }, maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : 1, stdout, stderr });
    });
  });
}
const theseus = (t: { context: Context }, ...args: string[]): Promise<Run> => run(process.execPath, [CLI, ...args], { THESEUS_HOME: t.context.home });
const helm = (t: { context: Context }, ...args: string[]): Promise<Run> => run(HELM, ["--kubeconfig", t.context.targetKubeconfig, ...args], { HELM_CACHE_HOME: join(t.context.work, "helm-cache"), HELM_CONFIG_HOME: join(t.context.work, "helm-config"), HELM_DATA_HOME: join(t.context.work, "helm-data") });

function ok(result: Run, what: string): Run {
  if (result.code !== 0) throw new Error(`${what} exited ${result.code}:\n${result.stderr}\n${result.stdout.slice(0, 4000)}`);
  return result;
}

/** The directory of a bound claim's local-path volume. */
async function claimDir(objects: KubeObjects, namespace: string, claim: string): Promise<string> {
  return eventually(`claim ${namespace}/${claim} bound with its directory`, async () => {
    const pvc = await objects.get({ apiVersion: "v1", kind: "PersistentVolumeClaim", namespace, name: claim });
    const volumeName = (pvc?.["spec"] as { volumeName?: string } | undefined)?.volumeName;
    if (volumeName === undefined || volumeName === "") return undefined;
    const pv = await objects.get({ apiVersion: "v1", kind: "PersistentVolume", namespace: "", name: volumeName });
    const spec = pv?.["spec"] as { local?: { path?: string }; hostPath?: { path?: string } } | undefined;
    return spec?.local?.path ?? spec?.hostPath?.path;
  }, 120_000);
}

async function readyPodIp(objects: KubeObjects, namespace: string, app: string): Promise<string> {
  const pods = await objects.resourceFor("v1", "Pod");
  return eventually(`a ready ${app} pod in ${namespace}`, async () => {
    const ready = (await objects.list(pods, { namespace, labelSelector: `app=${app}` })).find((p) => {
      const status = p["status"] as { conditions?: { type: string; status: string }[] } | undefined;
      return status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") === true;
    });
    return (ready?.["status"] as { podIP?: string } | undefined)?.podIP;
  }, 180_000);
}

const sha256 = (data: Buffer): string => createHash("sha256").update(data).digest("hex");

test.before(async (t) => {
  t.timeout(12 * 60_000);
  t.context.home = privateTheseusHome();
  t.context.work = mkdtempSync(join(tmpdir(), "theseus-fatchart-"));
  t.context.archive = join(t.context.work, "shop.tgz");
  ok(await theseus(t, "local", "up", EU, "--agent", "process", "--openshift"), `theseus local up ${EU}`);
  ok(await theseus(t, "local", "up", US, "--agent", "process", "--openshift"), `theseus local up ${US}`);
  const eu = await getCluster(EU);
  const us = await getCluster(US);
  if (eu === undefined || us === undefined) throw new Error("a cluster vanished");
  t.context.source = createKubeObjects(createKubeRest(loadKubeConfig(eu.kubeconfigPath)));
  t.context.target = createKubeObjects(createKubeRest(loadKubeConfig(us.kubeconfigPath)));
  t.context.targetKubeconfig = us.kubeconfigPath;
  await applyCompositeApp(eu.kubeconfigPath, NS, { storageClass: "local-path" });
  // Data of our own in every volume beside the app's: a nested file, a symbolic link, 1.5 MiB of random bytes (more
  // than a Helm release may hold, so that a chart that carried it could not install).
  t.context.seeded = new Map();
  for (const claim of COMPOSITE_CLAIMS) {
    const dir = await claimDir(t.context.source, NS, claim);
    const blob = randomBytes(1536 * 1024);
    await mkdir(join(dir, "seed/deep"), { recursive: true });
    await writeFile(join(dir, "seed/deep/notes.txt"), `notes of ${claim}\n`);
    await writeFile(join(dir, "seed/blob.bin"), blob);
    await symlink("deep/notes.txt", join(dir, "seed/link"));
    t.context.seeded.set(claim, { blobSha256: sha256(blob) });
  }
  await readyPodIp(t.context.source, NS, "web");
});

test.after.always(async (t) => {
  if (t.context.home === undefined) return;
  for (const name of [EU, US]) await downCluster(name).catch(() => undefined);
  await rm(t.context.home, { recursive: true, force: true });
  await rm(t.context.work, { recursive: true, force: true });
});

test.serial("export --quiesce writes the fat chart with every volume's data, and the app runs again", async (t) => {
  t.timeout(5 * 60_000);
  const result = JSON.parse(ok(await theseus(t, "export", "--from", EU, "-n", NS, "-o", t.context.archive, "--quiesce", "--json"), "theseus export").stdout) as ExportResult;
  t.true(result.quiesced);
  t.is(result.chart, NS);
  t.deepEqual(result.claims.map((c) => c.name).sort(), [...COMPOSITE_CLAIMS].sort());
  for (const claim of result.claims) {
    t.truthy(claim.data, `claim ${claim.name} has data`);
    t.regex(claim.data?.digest ?? "", /^[0-9a-f]{64}$/);
    t.true((claim.data?.bytes ?? 0) >= 1536 * 1024, `claim ${claim.name}: the seeded blob is in it`);
  }
  t.true((await stat(t.context.archive)).size > 2 * 1536 * 1024 * 0.9, "random data does not compress");
  // Unquiesced: the Deployment is back at one replica, serving.
  const web = await t.context.source.get({ apiVersion: "apps/v1", kind: "Deployment", namespace: NS, name: "web" });
  t.is((web?.["spec"] as { replicas?: number } | undefined)?.replicas, 1);
  t.is(web?.metadata.annotations?.["theseus.io/quiesced"], undefined);
  await readyPodIp(t.context.source, NS, "web");
});

test.serial("helm lint and helm template are clean on the exported chart; data/ is left out by .helmignore", async (t) => {
  const dir = join(t.context.work, "unpacked");
  await mkdir(dir, { recursive: true });
  ok(await run("tar", ["-xzf", t.context.archive, "-C", dir]), "tar xzf");
  const chart = join(dir, NS);
  t.deepEqual((await readdir(join(chart, "data/claims"))).sort(), COMPOSITE_CLAIMS.map((c) => `${c}.tar.zst`).sort());
  t.regex(await readFile(join(chart, ".helmignore"), "utf8"), /^data\/$/m);
  const lint = ok(await helm(t, "lint", chart), "helm lint");
  t.regex(lint.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
  t.notRegex(lint.stdout, /\[(WARNING|ERROR)\]/);
  const rendered = ok(await helm(t, "template", "r", chart, "-n", "elsewhere", "--set", "replicas.Deployment/web=2", "--set", "storageClasses.local-path=fast"), "helm template");
  const objects = parseAllDocuments(rendered.stdout).map((d) => d.toJS() as KubeObject | null).filter((o): o is KubeObject => o !== null);
  t.true(objects.length >= 20, `${objects.length} objects rendered`);
  for (const o of objects.filter((x) => !["ClusterRole", "ClusterRoleBinding"].includes(x.kind))) t.is(o.metadata.namespace, "elsewhere", `${o.kind} ${o.metadata.name ?? ""}`);
  const deployment = objects.find((o) => o.kind === "Deployment" && o.metadata.name === "web");
  t.is((deployment?.["spec"] as { replicas?: number } | undefined)?.replicas, 2);
  const pvc = objects.find((o) => o.kind === "PersistentVolumeClaim" && o.metadata.name === "web-data");
  t.is((pvc?.["spec"] as { storageClassName?: string } | undefined)?.storageClassName, "fast");
  const config = objects.find((o) => o.kind === "ConfigMap" && o.metadata.name === "web-config");
  t.is((config?.["data"] as Record<string, string> | undefined)?.["db.url"], "http://db-headless.elsewhere.svc.cluster.local:8080", "service DNS names follow the namespace");
  for (const o of objects) t.falsy(o.metadata.uid ?? o.metadata.resourceVersion ?? o["status"], `${o.kind} ${o.metadata.name ?? ""} is sanitised`);
});

test.serial("plain helm install of the chart alone brings the app up with empty volumes; the release holds no data", async (t) => {
  t.timeout(6 * 60_000);
  const chart = join(t.context.work, "unpacked", NS);
  ok(await helm(t, "install", "plain", chart, "-n", "shop-helm", "--create-namespace"), "helm install");
  const ip = await readyPodIp(t.context.target, "shop-helm", "web");
  t.is((await fetch(`http://${ip}:8080/healthz`)).status, 200);
  const dir = await claimDir(t.context.target, "shop-helm", "web-data");
  await t.throwsAsync(stat(join(dir, "seed")), undefined, "the volume starts empty");
  const release = await t.context.target.get({ apiVersion: "v1", kind: "Secret", namespace: "shop-helm", name: "sh.helm.release.v1.plain.v1" });
  const size = Buffer.from((release?.["data"] as { release?: string } | undefined)?.release ?? "", "base64").length;
  t.true(size > 0 && size < 256 * 1024, `the release is ${size} bytes`);
  ok(await helm(t, "uninstall", "plain", "-n", "shop-helm"), "helm uninstall");
  // The next test imports the same cluster-scoped objects (ClusterRole, ClusterRoleBinding): gone with the release.
  await eventually("the release's ClusterRole to be gone", async () => ((await t.context.target.get({ apiVersion: "rbac.authorization.k8s.io/v1", kind: "ClusterRole", namespace: "", name: `composite-${NS}-nodes` })) === undefined ? true : undefined));
});

test.serial("import into another namespace and storage class: every volume restored and verified, the app serving with its data", async (t) => {
  t.timeout(6 * 60_000);
  const args = ["import", t.context.archive, "--to", US, "--to-namespace", TARGET_NS, "--storage-class", "local-path=local-path-immediate"];
  const result = JSON.parse(ok(await theseus(t, ...args, "--json"), "theseus import").stdout) as ImportResult;
  t.is(result.namespace, TARGET_NS);
  t.deepEqual([...result.restored].sort(), [...COMPOSITE_CLAIMS].sort());
  for (const claim of COMPOSITE_CLAIMS) {
    const pvc = await t.context.target.get({ apiVersion: "v1", kind: "PersistentVolumeClaim", namespace: TARGET_NS, name: claim });
    t.is((pvc?.["spec"] as { storageClassName?: string } | undefined)?.storageClassName, "local-path-immediate");
    const dir = await claimDir(t.context.target, TARGET_NS, claim);
    t.is(await readFile(join(dir, "seed/deep/notes.txt"), "utf8"), `notes of ${claim}\n`);
    t.is(sha256(await readFile(join(dir, "seed/blob.bin"))), t.context.seeded.get(claim)?.blobSha256 ?? "?");
    t.is(await readlink(join(dir, "seed/link")), "deep/notes.txt");
  }
  const ip = await readyPodIp(t.context.target, TARGET_NS, "web");
  t.is((await fetch(`http://${ip}:8080/healthz`)).status, 200);
  // A second run would empty the volumes of a running app: refused.
  const again = await theseus(t, ...args);
  t.is(again.code, 2, again.stderr);
  t.regex(again.stderr, /imported into shop-us on fc-us already/);
});

/** Unpacks the archive, lets `edit` change the chart directory, packs it again. */
async function tampered(t: { context: Context }, name: string, edit: (chart: string, manifest: Manifest) => Promise<Manifest>): Promise<string> {
  const dir = join(t.context.work, `tampered-${name}`);
  await mkdir(dir, { recursive: true });
  ok(await run("tar", ["-xzf", t.context.archive, "-C", dir]), "tar xzf");
  const chart = join(dir, NS);
  const manifest = JSON.parse(await readFile(join(chart, "data/manifest.json"), "utf8")) as Manifest;
  await writeFile(join(chart, "data/manifest.json"), JSON.stringify(await edit(chart, manifest)));
  const out = join(t.context.work, `${name}.tgz`);
  ok(await run("tar", ["-czf", out, "-C", dir, NS]), "tar czf");
  return out;
}

/** Replaces web-data's volume tar with hand-made entries, the manifest updated to match (all but the digest). */
function hostileClaim(entries: readonly (Partial<Header> & { name: string; body?: string })[]) {
  return async (chart: string, manifest: Manifest): Promise<Manifest> => {
    const pack = tarPack();
    const parts: Buffer[] = [];
    const collecting = (async () => {
      for await (const chunk of pack as AsyncIterable<Buffer>) parts.push(chunk);
    })();
    for (const { body, ...header } of entries) await new Promise<void>((resolve, reject) => pack.entry(header, body ?? "", (e) => (e ? reject(e) : resolve())));
    pack.finalize();
    await collecting;
    const file = compress(Buffer.concat(parts));
    await writeFile(join(chart, "data/claims/web-data.tar.zst"), file);
    return {
      ...manifest,
      claims: manifest.claims.map((c) => (c.name !== "web-data" || c.data === undefined ? c : { ...c, data: { ...c.data, sha256: sha256(file), fileBytes: file.length, tarBytes: Buffer.concat(parts).length } })),
    };
  };
}

async function namespaceGone(objects: KubeObjects, namespace: string): Promise<boolean> {
  return (await objects.get({ apiVersion: "v1", kind: "Namespace", namespace: "", name: namespace })) === undefined;
}

test.serial("tampered archives are refused: truncated, a path out of the volume, a link out, a digest that differs", async (t) => {
  t.timeout(8 * 60_000);
  // The import above staged cluster-scoped objects (ClusterRole, ClusterRoleBinding) the next imports would conflict with.
  ok(await theseus(t, "import", t.context.archive, "--to", US, "--to-namespace", TARGET_NS, "--storage-class", "local-path=local-path-immediate", "--undo"), "theseus import --undo");
  // Truncated: refused by the first pass, before anything is written anywhere.
  const truncated = join(t.context.work, "truncated.tgz");
  await writeFile(truncated, await readFile(t.context.archive));
  await truncate(truncated, Math.floor((await stat(truncated)).size / 2));
  const cut = await theseus(t, "import", truncated, "--to", US, "--to-namespace", "shop-cut");
  t.is(cut.code, 4, cut.stderr);
  t.regex(cut.stderr, /not a readable fat chart|refused/);
  t.true(await namespaceGone(t.context.target, "shop-cut"), "nothing was staged");

  // Consistent manifests over hostile volume data: refused by the target agent, the import undone.
  const cases: [string, Parameters<typeof hostileClaim>[0], RegExp][] = [
    ["escape", [{ name: "../escaped-by-fatchart", body: "x" }], /'\.\.' component/],
    ["link", [{ name: "out", type: "symlink", linkname: "/etc" }], /absolute path/],
  ];
  for (const [name, entries, message] of cases) {
    const archive = await tampered(t, name, hostileClaim(entries));
    const refused = await theseus(t, "import", archive, "--to", US, "--to-namespace", `shop-${name}`);
    t.is(refused.code, 4, refused.stderr);
    t.regex(refused.stderr, message);
    t.regex(refused.stderr, /the import was undone/);
    t.true(await namespaceGone(t.context.target, `shop-${name}`), `${name}: nothing of the import is left`);
  }
  const digest = await tampered(t, "digest", async (_chart, manifest) => ({
    ...manifest,
    claims: manifest.claims.map((c) => (c.name !== "data-db-0" || c.data === undefined ? c : { ...c, data: { ...c.data, digest: "f".repeat(64) } })),
  }));
  const mismatch = await theseus(t, "import", digest, "--to", US, "--to-namespace", "shop-digest");
  t.is(mismatch.code, 4, mismatch.stderr);
  t.regex(mismatch.stderr, /digest/);
  t.true(await namespaceGone(t.context.target, "shop-digest"));
  // Nothing landed beside the volumes: the provisioner's directory holds no escaped file.
  const us = await getCluster(US);
  const found = await run("find", [us?.dataDir ?? t.context.home, "-name", "escaped-by-fatchart"]);
  t.is(found.stdout.trim(), "");
});

test.serial("an import killed after its first volume resumes when run again: the rest restored, every volume verified, the app serving", async (t) => {
  t.timeout(8 * 60_000);
  const args = [CLI, "import", t.context.archive, "--to", US, "--to-namespace", "shop-resume", "--storage-class", "local-path=local-path-immediate"];
  // Killed as a crash would (SIGKILL, no cleanup) once it says a volume is restored: the journal holds that volume,
  // the others are pending or half-written.
  const first = spawn(process.execPath, args, { env: { ...process.env, THESEUS_HOME: t.context.home }, stdio: ["ignore", "ignore", "pipe"] });
  let said = "";
  const killed = await new Promise<NodeJS.Signals | null>((resolve) => {
    first.stderr.on("data", (chunk: Buffer) => {
      said += chunk.toString("utf8");
      if (/restored and verified/.test(said)) first.kill("SIGKILL");
    });
    first.on("exit", (_code, signal) => resolve(signal));
  });
  t.is(killed, "SIGKILL", `the import ended before it could be killed:\n${said}`);

  const again = ok(await theseus(t, ...args.slice(1), "--json"), "theseus import, run again");
  t.regex(again.stderr, /resuming an interrupted import/);
  const result = JSON.parse(again.stdout) as ImportResult;
  t.deepEqual([...result.restored].sort(), [...COMPOSITE_CLAIMS].sort());
  for (const claim of COMPOSITE_CLAIMS) {
    const dir = await claimDir(t.context.target, "shop-resume", claim);
    t.is(sha256(await readFile(join(dir, "seed/blob.bin"))), t.context.seeded.get(claim)?.blobSha256 ?? "?", `${claim} holds its data`);
  }
  const ip = await readyPodIp(t.context.target, "shop-resume", "web");
  t.is((await fetch(`http://${ip}:8080/healthz`)).status, 200);
});
