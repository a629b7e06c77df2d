// The agents registry: add/list/remove through the library and the real CLI binary, validation errors that name the
// file, the line and the key, and writes that are atomic and serialised (no temp or lock files left, no lost update).
import { execFile } from "node:child_process";
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import test from "ava";
import { TheseusError } from "../common/index.js";
import { createAgentRegistry } from "../coordinator/agents/index.js";

const CLI = fileURLToPath(new URL("../coordinator/main.js", import.meta.url));
const run = promisify(execFile);

async function tempHome(): Promise<string> {
  return mkdtemp(join(tmpdir(), "theseus-agents-test-"));
}

async function cli(home: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [CLI, ...args], { env: { ...process.env, THESEUS_HOME: home } });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

test("add, list, resolve and remove agents; the cluster defaults to the name", async (t) => {
  const home = await tempHome();
  t.teardown(() => rm(home, { recursive: true, force: true }));
  const registry = createAgentRegistry({ configPath: join(home, "config.yaml") });
  t.deepEqual(await registry.list(), []);
  await registry.add({ name: "eu", address: "127.0.0.1:7443" });
  await registry.add({ name: "us", address: "agent.us.example.com:443", cluster: "us-2" });
  t.deepEqual(await registry.list(), [
    { name: "eu", address: "127.0.0.1:7443", cluster: "eu", local: false },
    { name: "us", address: "agent.us.example.com:443", cluster: "us-2", local: false },
  ]);
  t.deepEqual(await registry.resolve("us"), { name: "us", address: "agent.us.example.com:443", cluster: "us-2" });
  t.deepEqual(await registry.resolve("10.0.0.9:7443"), { name: "10.0.0.9:7443", address: "10.0.0.9:7443" });

  const duplicate = await t.throwsAsync(registry.add({ name: "eu", address: "10.0.0.1:1" }), { instanceOf: TheseusError });
  t.is(duplicate?.code, "already_exists");
  t.regex(duplicate?.hint ?? "", /--replace/);
  await registry.add({ name: "eu", address: "10.0.0.1:1", local: true }, { replace: true });
  t.deepEqual(await registry.get("eu"), { name: "eu", address: "10.0.0.1:1", cluster: "eu", local: true });

  t.deepEqual(await registry.remove("eu"), { name: "eu", address: "10.0.0.1:1", cluster: "eu", local: true });
  t.is(await registry.remove("eu"), undefined);
  const unknown = await t.throwsAsync(registry.resolve("eu"), { instanceOf: TheseusError });
  t.is(unknown?.code, "not_found");
  t.regex(unknown?.message ?? "", /known: us/);
  t.regex(unknown?.hint ?? "", /theseus agents add eu/);
  t.regex(unknown?.hint ?? "", /theseus local up eu/);
});

test("bad names and addresses are refused before anything is written", async (t) => {
  const home = await tempHome();
  t.teardown(() => rm(home, { recursive: true, force: true }));
  const path = join(home, "config.yaml");
  const registry = createAgentRegistry({ configPath: path });
  for (const input of [
    { name: "EU", address: "127.0.0.1:1" },
    { name: "eu", address: "127.0.0.1" },
    { name: "eu", address: "127.0.0.1:70000" },
    { name: "eu", address: "127.0.0.1:1", cluster: "Not_A_Name" },
  ]) {
    const error = await t.throwsAsync(registry.add(input), { instanceOf: TheseusError });
    t.is(error?.code, "invalid_argument", JSON.stringify(input));
  }
  await t.throwsAsync(stat(path), { code: "ENOENT" });
});

test("a hand-edited mistake is reported with the file, the line and the key, and blocks writes", async (t) => {
  const home = await tempHome();
  t.teardown(() => rm(home, { recursive: true, force: true }));
  const path = join(home, "config.yaml");
  const registry = createAgentRegistry({ configPath: path });
  const cases: { text: string; message: RegExp }[] = [
    { text: "agents:\n  eu:\n    address: 127.0.0.1:7443\n    clustr: eu\n", message: /config\.yaml:4: agents\.eu\.clustr: unknown key/ },
    { text: "# mine\nagents:\n  eu:\n    address: nowhere\n", message: /config\.yaml:4: agents\.eu\.address: .*not HOST:PORT/ },
    { text: "agents:\n  eu:\n    cluster: eu\n", message: /config\.yaml:2: agents\.eu\.address: missing/ },
    { text: "agents:\n  eu:\n    address: 127.0.0.1:1\n    local: yes please\n", message: /config\.yaml:4: agents\.eu\.local: must be true or false/ },
    { text: "agents:\n  Bad_Name:\n    address: 127.0.0.1:1\n", message: /config\.yaml:2: agents\.Bad_Name: / },
    { text: "agent:\n  eu: {}\n", message: /config\.yaml:1: agent: unknown key/ },
    { text: "agents: [eu]\n", message: /config\.yaml:1: agents: must map agent names/ },
    { text: "agents:\n  eu: {address: [\n", message: /config\.yaml:\d+: not valid YAML/ },
  ];
  for (const { text, message } of cases) {
    await writeFile(path, text);
    const error = await t.throwsAsync(registry.list(), { instanceOf: TheseusError });
    t.is(error?.code, "invalid_argument");
    t.regex(error?.message ?? "", message);
    t.true(error?.message.startsWith(path), error?.message);
    t.truthy(error?.hint);
    await t.throwsAsync(registry.add({ name: "us", address: "127.0.0.1:2" }), { message });
    t.is(await readFile(path, "utf8"), text, "a failed add leaves the file as it was");
  }
});

test("writes are atomic and serialised: concurrent adds all land, comments survive, nothing is left behind", async (t) => {
  const home = await tempHome();
  t.teardown(() => rm(home, { recursive: true, force: true }));
  const path = join(home, "config.yaml");
  await writeFile(path, "# my agents\nagents:\n  keep:\n    address: 10.0.0.1:7443 # the old one\n    cluster: keep\n");
  const registry = createAgentRegistry({ configPath: path });
  const names = Array.from({ length: 12 }, (_, i) => `a${i}`);
  await Promise.all(names.map((name, i) => createAgentRegistry({ configPath: path }).add({ name, address: `127.0.0.1:${7000 + i}` })));
  t.deepEqual((await registry.list()).map((a) => a.name).sort(), ["keep", ...names].sort());
  const text = await readFile(path, "utf8");
  t.regex(text, /^# my agents/);
  t.regex(text, /# the old one/);
  t.deepEqual(await readdir(home), ["config.yaml"]);
  t.is((await stat(path)).mode & 0o777, 0o600);
});

test("the CLI: agents add, list -o json, remove, and errors that say what to do", async (t) => {
  const home = await tempHome();
  t.teardown(() => rm(home, { recursive: true, force: true }));
  t.is((await cli(home, "agents", "add", "eu", "127.0.0.1:7443")).code, 0);
  t.is((await cli(home, "agents", "add", "us", "127.0.0.1:7444", "--cluster", "us-2")).code, 0);
  const listed = await cli(home, "agents", "list", "-o", "json");
  t.deepEqual(JSON.parse(listed.stdout), [
    { name: "eu", address: "127.0.0.1:7443", cluster: "eu", local: false },
    { name: "us", address: "127.0.0.1:7444", cluster: "us-2", local: false },
  ]);
  t.regex((await cli(home, "agents", "list")).stdout, /^NAME +ADDRESS +CLUSTER/);
  t.is((await cli(home, "agents", "remove", "eu")).code, 0);
  const again = await cli(home, "agents", "remove", "eu");
  t.is(again.code, 2);
  t.regex(again.stderr, /no agent named "eu"/);
  const bad = await cli(home, "agents", "add", "x", "nowhere");
  t.is(bad.code, 2);
  t.regex(bad.stderr, /not HOST:PORT/);
  t.regex((await cli(home, "agents", "--help")).stdout, /Examples:/);
});

test("a command naming an agent that is down says which one and how to bring it back (exit 3)", async (t) => {
  const home = await tempHome();
  t.teardown(() => rm(home, { recursive: true, force: true }));
  t.is((await cli(home, "certs", "init")).code, 0);
  t.is((await cli(home, "certs", "issue", "coordinator", "--name", "me")).code, 0);
  // Port 1 on loopback: nothing listens there.
  t.is((await cli(home, "agents", "add", "eu", "127.0.0.1:1")).code, 0);
  const down = await cli(home, "plan", "--from", "eu", "--to", "127.0.0.1:2", "-n", "shop");
  t.is(down.code, 3, down.stderr);
  t.regex(down.stderr, /the source agent "eu" \(127\.0\.0\.1:1\)/);
  t.regex(down.stderr, /theseus local up eu/);
});
