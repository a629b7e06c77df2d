// The certificate directory (default ~/.theseus/pki): ca.crt, ca.key and one <role>-<name>.crt/.key pair per identity.
// Keys are written 0600 and never overwritten silently: losing a CA key strands every agent installed with it.
import { mkdir, readFile, readdir, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { TheseusError, systemErrorCode } from "../../common/index.js";
import type { PeerIdentity, TlsMaterial } from "../../rpc/index.js";
import { createCertificateAuthority, issueCertificate } from "./x509.js";
import type { CaOptions, CertificateAuthority, IssueOptions } from "./x509.js";

export function defaultPkiDir(): string {
  return process.env["THESEUS_PKI_DIR"] ?? join(process.env["THESEUS_HOME"] ?? join(homedir(), ".theseus"), "pki");
}

export interface PkiPaths {
  readonly caCert: string;
  readonly caKey: string;
}

export function caPaths(dir: string): PkiPaths {
  return { caCert: join(dir, "ca.crt"), caKey: join(dir, "ca.key") };
}

export function leafPaths(dir: string, identity: PeerIdentity): { cert: string; key: string } {
  const base = join(dir, `${identity.role}-${identity.name}`);
  return { cert: `${base}.crt`, key: `${base}.key` };
}

export async function initCertificateAuthority(dir: string, options: CaOptions & { force?: boolean } = {}): Promise<PkiPaths> {
  const paths = caPaths(dir);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const ca = await createCertificateAuthority(options);
  await writeNew(paths.caKey, ca.keyPem, 0o600, options.force === true, "a CA key");
  await writeFile(paths.caCert, ca.certPem, { mode: 0o644 });
  return paths;
}

export async function loadCertificateAuthority(dir: string): Promise<CertificateAuthority> {
  const paths = caPaths(dir);
  return {
    certPem: await readPem(paths.caCert, "the CA certificate", `run \`theseus certs init --dir ${dir}\` first`),
    keyPem: await readPem(paths.caKey, "the CA key", `run \`theseus certs init --dir ${dir}\` first`),
  };
}

export async function issueToDirectory(dir: string, identity: PeerIdentity, options: IssueOptions & { force?: boolean } = {}): Promise<{ cert: string; key: string }> {
  const ca = await loadCertificateAuthority(dir);
  const issued = await issueCertificate(ca, identity, options);
  const paths = leafPaths(dir, identity);
  await writeNew(paths.key, issued.keyPem, 0o600, options.force === true, "a key");
  await writeFile(paths.cert, issued.certPem, { mode: 0o644 });
  return paths;
}

/** Loads the TLS material of one identity from a PKI directory (the CA certificate plus the leaf pair). */
export async function loadTlsMaterial(dir: string, identity: PeerIdentity): Promise<TlsMaterial> {
  const paths = leafPaths(dir, identity);
  const hint = `issue it with \`theseus certs issue ${identity.role} ${identity.role === "agent" ? "--cluster" : "--name"} ${identity.name} --dir ${dir}\``;
  return {
    caPem: await readPem(caPaths(dir).caCert, "the CA certificate", `run \`theseus certs init --dir ${dir}\` first`),
    certPem: await readPem(paths.cert, `the certificate of ${identity.role} ${identity.name}`, hint),
    keyPem: await readPem(paths.key, `the key of ${identity.role} ${identity.name}`, hint),
  };
}

/** The coordinator names whose certificates are in the directory, so that a lone one can be the default. */
export async function listCoordinatorNames(dir: string): Promise<string[]> {
  const entries = await readdir(dir).catch(() => [] as string[]);
  return entries.filter((f) => /^coordinator-.+\.crt$/.test(f)).map((f) => f.slice("coordinator-".length, -".crt".length)).sort();
}

async function readPem(path: string, what: string, hint: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (error) {
    if (systemErrorCode(error) === "ENOENT") throw new TheseusError("not_found", `${what} is missing: ${path}`, { hint, cause: error });
    throw TheseusError.from(error);
  }
}

async function writeNew(path: string, content: string, mode: number, force: boolean, what: string): Promise<void> {
  try {
    await writeFile(path, content, { mode, flag: force ? "w" : "wx" });
  } catch (error) {
    if (systemErrorCode(error) === "EEXIST") {
      throw new TheseusError("already_exists", `${what} already exists at ${path}`, {
        hint: "refusing to overwrite it; pass --force if you really mean to replace it",
        cause: error,
      });
    }
    throw TheseusError.from(error);
  }
}

export interface LocalInstallationOptions {
  readonly installation: string;
  readonly agentClusters: readonly string[];
  readonly coordinator: string;
  /** Validity of the CA; leaves get one day less (at least one). */
  readonly validityDays?: number;
}

/**
 * A whole installation in one directory, for local runs (the demo, sync-dirs, tests): a CA, one certificate per agent
 * cluster and one coordinator certificate. Returns the coordinator's TLS material; the agents read theirs from `dir`.
 */
export async function createLocalInstallation(dir: string, options: LocalInstallationOptions): Promise<TlsMaterial> {
  const caDays = options.validityDays ?? 3650;
  const leafDays = Math.max(1, Math.min(365, caDays - 1));
  await initCertificateAuthority(dir, { installation: options.installation, validityDays: caDays });
  for (const name of options.agentClusters) await issueToDirectory(dir, { role: "agent", name }, { validityDays: leafDays });
  const coordinator = { role: "coordinator", name: options.coordinator } as const;
  await issueToDirectory(dir, coordinator, { validityDays: leafDays });
  return loadTlsMaterial(dir, coordinator);
}
