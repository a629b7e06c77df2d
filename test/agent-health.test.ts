// The agent's plain HTTP port and its TLS rotation, on real agent processes: probes answer without a client
// certificate, /metrics counts a real round between two agents and a real failure by its code, and a certificate
// rotated the way Kubernetes updates a mounted Secret (an atomic swap of the ..data symlink) is served to the next
// connection without a restart, while broken material is refused and counted, and the old one kept.
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { once } from "node:events";
import { mkdir, mkdtemp, rename, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { connect } from "node:tls";
import anyTest from "ava";
import type { TestFn } from "ava";
import { TheseusError } from "../common/index.js";
import { compareTrees, copyVolume, createLocalInstallation, generateTree, issueCertificate, loadCertificateAuthority, loadTlsMaterial } from "../coordinator/index.js";
import type { TlsMaterial } from "../rpc/index.js";

interface RunningAgent {
  readonly address: string;
  readonly health: string;
  readonly child: ChildProcess;
}
interface Context {
  work: string;
  pki: string;
  tls: TlsMaterial;
  source: RunningAgent;
  target: RunningAgent;
}
const test = anyTest.serial as TestFn<Context>;
const AGENT_MAIN = new URL("../agent/main.js", import.meta.url).pathname;

/** A Secret volume as the kubelet lays it out: files are symlinks through ..data to a timestamped directory. */
async function writeSecretVolume(dir: string, version: string, files: Record<string, string>): Promise<void> {
  await mkdir(join(dir, version), { recursive: true });
  for (const [name, content] of Object.entries(files)) await writeFile(join(dir, version, name), content, { mode: 0o600 });
  await symlink(version, join(dir, "..data_tmp"));
  await rename(join(dir, "..data_tmp"), join(dir, "..data"));
  for (const name of Object.keys(files)) await symlink(join("..data", name), join(dir, name)).catch(() => undefined);
}

async function startAgent(work: string, cluster: string, tlsArgs: string[], volume: string): Promise<RunningAgent> {
  const args = [AGENT_MAIN, "--cluster", cluster, ...tlsArgs, "--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0", "--state-dir", join(work, `state-${cluster}`), "--volume", `data=${volume}`, "--log-level", "error"];
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "inherit"] });
  const [line] = (await once(createInterface({ input: child.stdout as NodeJS.ReadableStream }), "line")) as [string];
  const ready = JSON.parse(line) as { listening: string; health?: string };
  if (ready.health === undefined) throw new Error(`the agent printed no health address: ${line}`);
  return { address: ready.listening, health: ready.health, child };
}

async function get(agent: RunningAgent, path: string): Promise<{ status: number; body: string; type: string }> {
  const response = await fetch(`http://${agent.health}${path}`);
  return { status: response.status, body: await response.text(), type: response.headers.get("content-type") ?? "" };
}

/** A series as name{labels sorted}, so that the order prom-client writes labels in does not matter. */
function normalise(series: string): string {
  const match = /^([^{ ]+)(?:\{(.*)\})?$/.exec(series.trim());
  const labels = (match?.[2] ?? "").split(/,(?=[a-z_]+=")/).filter((l) => l !== "").sort();
  return `${match?.[1] ?? series}{${labels.join(",")}}`;
}

/** The value of one series in Prometheus text, or undefined. */
async function metric(agent: RunningAgent, series: string): Promise<number | undefined> {
  const { body } = await get(agent, "/metrics");
  const want = normalise(series);
  for (const line of body.split("\n")) {
    if (line.startsWith("#") || line === "") continue;
    const space = line.lastIndexOf(" ");
    if (normalise(line.slice(0, space)) === want) return Number(line.slice(space + 1));
  }
  return undefined;
}

async function eventually(what: string, probe: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** The serial of the certificate the agent's gRPC port presents to a new connection. */
function servedSerial(address: string, tls: TlsMaterial): Promise<string> {
  const [host = "", port = ""] = address.split(":");
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port: Number(port), ca: tls.caPem, cert: tls.certPem, key: tls.keyPem, ALPNProtocols: ["h2"], checkServerIdentity: () => undefined });
    socket.once("secureConnect", () => {
      resolve(socket.getPeerCertificate().serialNumber);
      socket.destroy();
    });
    socket.once("error", reject);
  });
}

test.before(async (t) => {
  const work = await mkdtemp(join(tmpdir(), "theseus-health-"));
  const pki = join(work, "pki");
  const tls = await createLocalInstallation(pki, { installation: "health", agentClusters: ["eu-1", "us-2"], coordinator: "test" });
  const source = join(work, "src");
  await generateTree(source, { totalBytes: 2 * 1024 * 1024, seed: 3 });
  await mkdir(join(work, "dst"));
  // The source agent reads its material from a Secret-like volume, which the rotation test swaps.
  const eu1 = await loadTlsMaterial(pki, { role: "agent", name: "eu-1" });
  const secret = join(work, "secret");
  await writeSecretVolume(secret, "..v1", { "ca.crt": eu1.caPem, "tls.crt": eu1.certPem, "tls.key": eu1.keyPem });
  const secretArgs = ["--tls-ca", join(secret, "ca.crt"), "--tls-cert", join(secret, "tls.crt"), "--tls-key", join(secret, "tls.key")];
  t.context = {
    work,
    pki,
    tls,
    source: await startAgent(work, "eu-1", secretArgs, source),
    target: await startAgent(work, "us-2", ["--pki-dir", pki], join(work, "dst")),
  };
});

test.after.always(async (t) => {
  for (const agent of [t.context.source, t.context.target]) {
    if (agent === undefined || agent.child.exitCode !== null) continue;
    const exited = once(agent.child, "exit");
    agent.child.kill("SIGTERM");
    await exited;
  }
  await rm(t.context.work, { recursive: true, force: true });
});

test("probes answer on the plain HTTP port without a certificate; the gRPC port still demands one", async (t) => {
  const { source } = t.context;
  t.deepEqual(await get(source, "/healthz"), { status: 200, body: "ok\n", type: "text/plain; charset=utf-8" });
  t.is((await get(source, "/readyz")).status, 200);
  t.is((await get(source, "/nope")).status, 404);
  const metrics = await get(source, "/metrics");
  t.regex(metrics.type, /^text\/plain; version=0\.0\.4/);
  t.regex(metrics.body, /^theseus_agent_process_resident_memory_bytes\{cluster="eu-1"\} \d+/m);
  t.is(await metric(source, 'theseus_tls_loads_total{result="ok",cluster="eu-1"}'), 1);
  // Without a client certificate the TLS 1.3 handshake completes, and the server then refuses the connection.
  const [host = "", port = ""] = source.address.split(":");
  const refused = await new Promise<boolean>((resolve) => {
    const socket = connect({ host, port: Number(port), ca: t.context.tls.caPem, ALPNProtocols: ["h2"], checkServerIdentity: () => undefined });
    socket.once("error", () => resolve(true));
    socket.once("close", () => resolve(true));
    socket.once("data", () => resolve(false));
  });
  t.true(refused);
});

test("/metrics counts a round with its bytes on the agent that pulled it, and a failed call by its code", async (t) => {
  const { source, target, tls, work } = t.context;
  const result = await copyVolume({ from: source.address, to: target.address, volume: "data", tls });
  t.deepEqual(await compareTrees(join(work, "src"), join(work, "dst")), []);
  const call = (name: string): string => `${name}{trigger="call",cluster="us-2"}`;
  t.is(await metric(target, call("theseus_sync_rounds_total")), 1);
  t.is(await metric(target, call("theseus_sync_bytes_changed_total")), Number(result.stats.bytesChanged));
  t.is(await metric(target, call("theseus_sync_wire_bytes_total")), Number(result.stats.wireBytes));
  t.is(await metric(target, call("theseus_sync_bytes_read_total")), Number(result.stats.bytesRead));
  t.true(((await metric(target, call("theseus_sync_throughput_bytes_per_second"))) ?? 0) > 0);
  t.is(await metric(target, call("theseus_sync_round_duration_seconds_count")), 1);
  t.is(await metric(target, 'theseus_rpc_duration_seconds_count{service="AgentService",method="syncVolume",code="ok",cluster="us-2"}'), 1);
  t.is(await metric(source, 'theseus_rpc_duration_seconds_count{service="TransferService",method="sync",code="ok",cluster="eu-1"}'), 1);

  const error = await t.throwsAsync(copyVolume({ from: source.address, to: target.address, volume: "missing", tls }), { instanceOf: TheseusError });
  t.is(error?.code, "not_found");
  t.is(await metric(source, 'theseus_failures_total{where="AgentService.openSession",code="not_found",cluster="eu-1"}'), 1);
  t.is(await metric(source, 'theseus_rpc_duration_seconds_count{service="AgentService",method="openSession",code="not_found",cluster="eu-1"}'), 1);
});

test("a rotated Secret is served to new connections without a restart; broken material is refused and the old kept", async (t) => {
  const { source, target, tls, pki, work } = t.context;
  const before = await servedSerial(source.address, tls);
  const ca = await loadCertificateAuthority(pki);
  const next = await issueCertificate(ca, { role: "agent", name: "eu-1" }, { validityDays: 30 });
  const nextSerial = new X509Certificate(next.certPem).serialNumber;
  t.not(nextSerial, before);
  await writeSecretVolume(join(work, "secret"), "..v2", { "ca.crt": ca.certPem, "tls.crt": next.certPem, "tls.key": next.keyPem });
  await eventually("the reload", async () => (await metric(source, 'theseus_tls_loads_total{result="ok",cluster="eu-1"}')) === 2);
  t.is((await servedSerial(source.address, tls)).toUpperCase(), nextSerial.toUpperCase());
  // The peer still reaches the rotated source: same CA, same identity.
  await t.notThrowsAsync(copyVolume({ from: source.address, to: target.address, volume: "data", tls }));

  // A key that belongs to another certificate: refused, counted, and the rotated material stays in use.
  const other = await issueCertificate(ca, { role: "agent", name: "eu-1" }, { validityDays: 30 });
  await writeSecretVolume(join(work, "secret"), "..v3", { "ca.crt": ca.certPem, "tls.crt": next.certPem, "tls.key": other.keyPem });
  await eventually("the refusal", async () => (await metric(source, 'theseus_tls_loads_total{result="failed",cluster="eu-1"}')) === 1);
  t.is((await servedSerial(source.address, tls)).toUpperCase(), nextSerial.toUpperCase());
  t.is((await get(source, "/readyz")).status, 200);
  t.is(source.child.exitCode, null);
});
