// Per-cluster PKI: a CA, the API server's serving certificate, an admin client certificate (system:masters), and the
// service-account signing key; ECDSA P-256 keys in PKCS#8 PEM. Made with the openssl CLI (Debian's `openssl`): the
// X.509 library in our dependencies needs a reflect-metadata polyfill we do not ship, and this runs once per cluster.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { TheseusError } from "../common/index.js";

const run = promisify(execFile);
const DAYS = "3650";

export interface PkiFiles {
  readonly dir: string;
  readonly caCert: string;
  readonly caKey: string;
  readonly serverCert: string;
  readonly serverKey: string;
  readonly adminCert: string;
  readonly adminKey: string;
  readonly serviceAccountKey: string;
  readonly serviceAccountPub: string;
}

export function pkiFiles(dir: string): PkiFiles {
  return {
    dir,
    caCert: join(dir, "ca.crt"),
    caKey: join(dir, "ca.key"),
    serverCert: join(dir, "apiserver.crt"),
    serverKey: join(dir, "apiserver.key"),
    adminCert: join(dir, "admin.crt"),
    adminKey: join(dir, "admin.key"),
    serviceAccountKey: join(dir, "sa.key"),
    serviceAccountPub: join(dir, "sa.pub"),
  };
}

async function openssl(args: string[]): Promise<void> {
  try {
    await run("openssl", args, { timeout: 30_000 });
  } catch (error) {
    const e = error as NodeJS.ErrnoException & { stderr?: string };
    throw new TheseusError("internal", `openssl ${args[0] ?? ""} failed: ${e.code === "ENOENT" ? "openssl is not installed" : (e.stderr ?? e.message).trim()}`, {
      cause: error,
      hint: e.code === "ENOENT" ? "apt-get install openssl" : undefined,
    });
  }
}

const genKey = (path: string): Promise<void> => openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path]);
const serial = (): string => `0x${randomBytes(16).toString("hex").replace(/^[89a-f]/, "1")}`;

async function signLeaf(files: PkiFiles, key: string, cert: string, subject: string, extensions: string): Promise<void> {
  await genKey(key);
  const csr = `${cert}.csr`;
  const ext = `${cert}.ext`;
  await writeFile(ext, extensions);
  await openssl(["req", "-new", "-key", key, "-subj", subject, "-out", csr]);
  await openssl(["x509", "-req", "-in", csr, "-CA", files.caCert, "-CAkey", files.caKey, "-set_serial", serial(), "-days", DAYS, "-sha256", "-extfile", ext, "-out", cert]);
}

/** Generates a fresh PKI for one cluster; each cluster has its own CA so that credentials are not interchangeable. */
export async function generatePki(clusterName: string, serviceIp: string, files: PkiFiles): Promise<void> {
  await genKey(files.caKey);
  await openssl([
    "req", "-x509", "-new", "-key", files.caKey, "-subj", `/CN=theseus-local-${clusterName}-ca`, "-days", DAYS, "-sha256",
    "-set_serial", serial(),
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    "-out", files.caCert,
  ]);
  const sans = [
    "DNS:localhost", "DNS:kubernetes", "DNS:kubernetes.default", "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local", "IP:127.0.0.1", `IP:${serviceIp}`,
  ].join(",");
  await signLeaf(files, files.serverKey, files.serverCert, "/CN=kube-apiserver",
    `basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=${sans}\n`);
  await signLeaf(files, files.adminKey, files.adminCert, "/O=system:masters/CN=theseus-admin",
    "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n");
  await genKey(files.serviceAccountKey);
  await openssl(["pkey", "-in", files.serviceAccountKey, "-pubout", "-out", files.serviceAccountPub]);
}
