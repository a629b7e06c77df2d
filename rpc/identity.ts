// Identities live in the certificate, not in the network address: every Theseus certificate carries one URI SAN
// `spiffe://theseus/<role>/<name>`. Servers authorise by role (a coordinator may drive an agent, an agent may pull from
// its peer), and clients check that the server they reached holds the role, and often the name, they expected.
import type { PeerCertificate } from "node:tls";
import { TheseusError } from "../common/index.js";

export type Role = "agent" | "coordinator";

export interface PeerIdentity {
  readonly role: Role;
  /** The agent's cluster name, or the coordinator's name. */
  readonly name: string;
}

const TRUST_DOMAIN = "theseus";
const NAME_PATTERN = /^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$/;

export function identityUri(identity: PeerIdentity): string {
  return `spiffe://${TRUST_DOMAIN}/${identity.role}/${identity.name}`;
}

/** Checks a cluster or coordinator name: DNS-label-like, so it fits in URIs, Kubernetes labels and file names. */
export function validateIdentityName(name: string, what: string): string {
  if (!NAME_PATTERN.test(name)) {
    throw new TheseusError("invalid_argument", `${what} "${name}" is not a valid name`, {
      hint: "use 1-63 lowercase letters, digits, '-' or '.', starting and ending with a letter or digit (e.g. eu-1)",
    });
  }
  return name;
}

export function parseIdentityUri(uri: string): PeerIdentity | undefined {
  const match = /^spiffe:\/\/([^/]+)\/(agent|coordinator)\/([^/]+)$/.exec(uri);
  if (match === null || match[1] !== TRUST_DOMAIN) return undefined;
  const name = match[3] ?? "";
  if (!NAME_PATTERN.test(name)) return undefined;
  return { role: match[2] as Role, name };
}

/**
 * Reads the identity from a peer certificate as Node's TLS layer presents it: `subjectaltname` is a string such as
 * "DNS:localhost, URI:spiffe://theseus/agent/eu-1". A certificate with no or several identity URIs has no identity:
 * ambiguity is refused rather than resolved.
 */
export function identityOfCertificate(cert: PeerCertificate | undefined): PeerIdentity | undefined {
  const san = cert?.subjectaltname;
  if (san === undefined || san === "") return undefined;
  const identities = san
    .split(/,\s*/)
    .filter((entry) => entry.startsWith("URI:"))
    .map((entry) => parseIdentityUri(entry.slice(4)))
    .filter((id): id is PeerIdentity => id !== undefined);
  return identities.length === 1 ? identities[0] : undefined;
}

export function describeIdentity(identity: PeerIdentity): string {
  return `${identity.role} "${identity.name}"`;
}
