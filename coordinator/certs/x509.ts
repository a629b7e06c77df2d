// Certificates for the installation: one CA, and leaf certificates whose URI SAN carries the identity (role and name).
// ECDSA P-256 keys, made with Node's WebCrypto and the @peculiar/x509 library (no hand-rolled ASN.1, no openssl).
// @peculiar/x509 resolves its algorithm providers through tsyringe, which needs the Reflect metadata polyfill first.
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { webcrypto, randomBytes } from "node:crypto";
import { isIP } from "node:net";
import { TheseusError } from "../../common/index.js";
import { identityUri } from "../../rpc/index.js";
import type { PeerIdentity } from "../../rpc/index.js";

// Node's WebCrypto is a complete provider; the library's DOM-typed parameter is satisfied structurally at run time.
x509.cryptoProvider.set(webcrypto as never);

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

const KEY_ALGORITHM = { name: "ECDSA", namedCurve: "P-256" } as const;
const SIGNING_ALGORITHM = { name: "ECDSA", hash: "SHA-256" } as const;
const DAY_MS = 24 * 60 * 60 * 1000;

export interface CertificateAuthority {
  readonly certPem: string;
  readonly keyPem: string;
}

export interface IssuedCertificate {
  readonly identity: PeerIdentity;
  readonly certPem: string;
  readonly keyPem: string;
  readonly notAfter: Date;
}

export interface CaOptions {
  /** Shown in the CA's subject, to tell installations apart. */
  readonly installation?: string;
  readonly validityDays?: number;
}

export interface IssueOptions {
  /** Extra DNS names (for tools that do verify host names, e.g. an ingress). */
  readonly dnsNames?: readonly string[];
  readonly ipAddresses?: readonly string[];
  readonly validityDays?: number;
}

export async function createCertificateAuthority(options: CaOptions = {}): Promise<CertificateAuthority> {
  const keys = await generateKeys();
  const notBefore = backdated();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialNumber(),
    name: `CN=Theseus CA ${options.installation ?? "installation"}, O=Theseus`,
    notBefore,
    notAfter: new Date(notBefore.getTime() + (options.validityDays ?? 3650) * DAY_MS),
    keys,
    signingAlgorithm: SIGNING_ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: cert.toString("pem"), keyPem: await exportKey(keys.privateKey) };
}

export async function issueCertificate(ca: CertificateAuthority, identity: PeerIdentity, options: IssueOptions = {}): Promise<IssuedCertificate> {
  const caCert = parseCertificate(ca.certPem, "the CA certificate");
  const caKey = await importKey(ca.keyPem);
  const keys = await generateKeys();
  const notBefore = backdated();
  const notAfter = new Date(notBefore.getTime() + (options.validityDays ?? 365) * DAY_MS);
  if (notAfter > caCert.notAfter) throw new TheseusError("invalid_argument", "the certificate would outlive its CA", { hint: "choose fewer --days" });
  const names: x509.JsonGeneralNames = [{ type: "url", value: identityUri(identity) }];
  for (const dns of options.dnsNames ?? []) names.push({ type: "dns", value: dns });
  for (const ip of options.ipAddresses ?? []) {
    if (isIP(ip) === 0) throw new TheseusError("invalid_argument", `"${ip}" is not an IP address`);
    names.push({ type: "ip", value: ip });
  }
  // Agents are servers to coordinators and clients to their peer agent; coordinators are only ever clients.
  const usages = identity.role === "agent" ? [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth] : [x509.ExtendedKeyUsage.clientAuth];
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serialNumber(),
    subject: `CN=${identity.role} ${identity.name}, O=Theseus`,
    issuer: caCert.subject,
    notBefore,
    notAfter,
    signingKey: caKey,
    publicKey: keys.publicKey,
    signingAlgorithm: SIGNING_ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension(usages, false),
      new x509.SubjectAlternativeNameExtension(names, false),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(caCert),
    ],
  });
  return { identity, certPem: cert.toString("pem"), keyPem: await exportKey(keys.privateKey), notAfter };
}

export function parseCertificate(pem: string, what: string): x509.X509Certificate {
  try {
    return new x509.X509Certificate(pem);
  } catch (error) {
    throw new TheseusError("invalid_argument", `${what} is not a PEM certificate`, { cause: error });
  }
}

async function generateKeys(): Promise<CryptoKeyPair> {
  return webcrypto.subtle.generateKey(KEY_ALGORITHM, true, ["sign", "verify"]);
}

async function exportKey(key: CryptoKey): Promise<string> {
  const der = await webcrypto.subtle.exportKey("pkcs8", key);
  return x509.PemConverter.encode(der, "PRIVATE KEY");
}

async function importKey(pem: string): Promise<CryptoKey> {
  try {
    const der = x509.PemConverter.decodeFirst(pem);
    return await webcrypto.subtle.importKey("pkcs8", der, KEY_ALGORITHM, false, ["sign"]);
  } catch (error) {
    throw new TheseusError("invalid_argument", "the CA key is not a PKCS#8 P-256 private key", { cause: error });
  }
}

/** Positive 128-bit serial numbers (RFC 5280 wants them unique and at most 20 octets). */
function serialNumber(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0] ?? 0) & 0x7f;
  return bytes.toString("hex");
}

/** Starts validity a little in the past so that clocks slightly behind ours accept a fresh certificate. */
function backdated(): Date {
  return new Date(Date.now() - 5 * 60 * 1000);
}
