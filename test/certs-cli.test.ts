// `theseus certs` through the real CLI binary: identities land in the SANs, keys are private, nothing is overwritten.
import test from "ava";
import { execFile } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const CLI = fileURLToPath(new URL("../coordinator/main.js", import.meta.url));

function theseus(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : 1, stdout, stderr });
    });
  });
}

test("init, issue agent and coordinator: SANs carry role and name, EKUs fit the role, keys are 0600", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "theseus-pki-"));
  try {
    t.is((await theseus(["--pki-dir", dir, "certs", "init"])).code, 0);
    const agent = await theseus(["--pki-dir", dir, "certs", "issue", "agent", "--cluster", "eu-1", "--dns", "agent.example", "--ip", "127.0.0.1"]);
    t.is(agent.code, 0, agent.stderr);
    t.is((await theseus(["--pki-dir", dir, "certs", "issue", "coordinator", "--name", "alice"])).code, 0);

    const ca = new X509Certificate(await readFile(join(dir, "ca.crt")));
    const agentCert = new X509Certificate(await readFile(join(dir, "agent-eu-1.crt")));
    const coordinatorCert = new X509Certificate(await readFile(join(dir, "coordinator-alice.crt")));
    t.true(ca.ca);
    t.true(agentCert.verify(ca.publicKey));
    t.true(coordinatorCert.verify(ca.publicKey));
    t.regex(agentCert.subjectAltName ?? "", /URI:spiffe:\/\/theseus\/agent\/eu-1/);
    t.regex(agentCert.subjectAltName ?? "", /DNS:agent\.example/);
    t.regex(agentCert.subjectAltName ?? "", /IP Address:127\.0\.0\.1/);
    t.regex(coordinatorCert.subjectAltName ?? "", /URI:spiffe:\/\/theseus\/coordinator\/alice/);
    t.deepEqual(agentCert.keyUsage?.sort(), ["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"]);
    t.deepEqual(coordinatorCert.keyUsage, ["1.3.6.1.5.5.7.3.2"]);
    for (const key of ["ca.key", "agent-eu-1.key", "coordinator-alice.key"]) t.is((await stat(join(dir, key))).mode & 0o777, 0o600, key);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("a second init refuses to replace the CA, exits 2 and says how to force it", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "theseus-pki-"));
  try {
    t.is((await theseus(["--pki-dir", dir, "certs", "init"])).code, 0);
    const before = await readFile(join(dir, "ca.key"), "utf8");
    const again = await theseus(["--pki-dir", dir, "certs", "init"]);
    t.is(again.code, 2);
    t.regex(again.stderr, /already exists/);
    t.regex(again.stderr, /--force/);
    t.is(await readFile(join(dir, "ca.key"), "utf8"), before, "the CA key is untouched");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("bad input is refused with exit 2 and a hint: invalid name, no CA yet, missing option", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "theseus-pki-"));
  try {
    const noCa = await theseus(["--pki-dir", dir, "certs", "issue", "agent", "--cluster", "eu-1"]);
    t.is(noCa.code, 2);
    t.regex(noCa.stderr, /theseus certs init/);
    await theseus(["--pki-dir", dir, "certs", "init"]);
    const badName = await theseus(["--pki-dir", dir, "certs", "issue", "agent", "--cluster", "EU_1"]);
    t.is(badName.code, 2);
    t.regex(badName.stderr, /lowercase letters/);
    const missing = await theseus(["--pki-dir", dir, "certs", "issue", "agent"]);
    t.is(missing.code, 2);
    t.regex(missing.stderr, /--cluster/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
