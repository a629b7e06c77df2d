// Agent configuration: file, environment and flags merge in that order, and every mistake says what to fix.
import test from "ava";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readConfigFile, resolveAgentOptions, settingsFromEnv } from "../agent/index.js";
import type { AgentSettings } from "../agent/index.js";
import { TheseusError } from "../common/index.js";

test("flags override the environment, which overrides the file; volumes merge by name", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "theseus-config-"));
  try {
    const file = join(dir, "agent.yaml");
    await writeFile(file, "clusterName: from-file\nlisten: 0.0.0.0:9000\npkiDir: /pki\nvolumes:\n  data: /srv/data\n  logs: /srv/logs\n");
    const options = resolveAgentOptions(await readConfigFile(file), settingsFromEnv({ THESEUS_CLUSTER: "from-env", THESEUS_VOLUMES: "logs=/env/logs" }), { listen: "127.0.0.1:0" });
    t.is(options.clusterName, "from-env");
    t.is(options.listenHost, "127.0.0.1");
    t.is(options.listenPort, 0);
    t.deepEqual(Object.fromEntries(options.volumes), { data: "/srv/data", logs: "/env/logs" });
    t.deepEqual(options.tls, { caPath: "/pki/ca.crt", certPath: "/pki/agent-from-env.crt", keyPath: "/pki/agent-from-env.key" });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

const invalid: ReadonlyArray<[string, AgentSettings, RegExp]> = [
  ["missing cluster name", { pkiDir: "/pki" }, /--cluster/],
  ["bad cluster name", { clusterName: "EU_1", pkiDir: "/pki" }, /lowercase/],
  ["relative volume path", { clusterName: "eu-1", pkiDir: "/pki", volumes: { data: "srv/data" } }, /absolute/],
  ["no TLS material", { clusterName: "eu-1" }, /--pki-dir/],
  ["bad listen address", { clusterName: "eu-1", pkiDir: "/pki", listen: "7443" }, /HOST:PORT/],
  ["bad log level", { clusterName: "eu-1", pkiDir: "/pki", logLevel: "loud" }, /debug/],
  ["bad sync state placement", { clusterName: "eu-1", pkiDir: "/pki", syncState: "node" }, /volume or state-dir/],
];

for (const [name, settings, hint] of invalid) {
  test(`refused with a hint: ${name}`, (t) => {
    const error = t.throws(() => resolveAgentOptions(settings), { instanceOf: TheseusError });
    t.is(error?.code, "invalid_argument");
    t.regex(`${error?.message ?? ""} ${error?.hint ?? ""}`, hint);
  });
}

test("a config file with an unknown key is refused by name", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "theseus-config-"));
  try {
    const file = join(dir, "agent.yaml");
    await writeFile(file, "clusterName: eu-1\nvolumez:\n  data: /srv\n");
    const error = await t.throwsAsync(readConfigFile(file), { instanceOf: TheseusError });
    t.regex(error?.message ?? "", /unknown setting "volumez"/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("the agent's cluster: a kubeconfig from the file, THESEUS_KUBECONFIG or the flag (later wins), else in-cluster in a pod, else none", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "theseus-config-"));
  try {
    const file = join(dir, "agent.yaml");
    await writeFile(file, "clusterName: eu-1\npkiDir: /pki\nkubeconfig: /etc/theseus/file.kubeconfig\nnodeName: node-1\n");
    const fromFile = await readConfigFile(file);
    t.deepEqual(resolveAgentOptions(fromFile).cluster, { kind: "kubeconfig", path: "/etc/theseus/file.kubeconfig" });
    t.is(resolveAgentOptions(fromFile).nodeName, "node-1");
    const fromEnv = settingsFromEnv({ THESEUS_KUBECONFIG: "/env.kubeconfig", KUBERNETES_SERVICE_HOST: "10.0.0.1" });
    t.deepEqual(resolveAgentOptions(fromFile, fromEnv).cluster, { kind: "kubeconfig", path: "/env.kubeconfig" });
    t.deepEqual(resolveAgentOptions(fromFile, fromEnv, { kubeconfig: "/flag.kubeconfig" }).cluster, { kind: "kubeconfig", path: "/flag.kubeconfig" });
    const base = { clusterName: "eu-1", pkiDir: "/pki" };
    t.deepEqual(resolveAgentOptions(base, settingsFromEnv({ KUBERNETES_SERVICE_HOST: "10.0.0.1", KUBERNETES_SERVICE_PORT: "443" })).cluster, { kind: "in-cluster" });
    t.deepEqual(resolveAgentOptions(base, settingsFromEnv({})).cluster, { kind: "none" });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
