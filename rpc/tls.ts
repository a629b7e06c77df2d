// mTLS credentials for grpc-js, TLS 1.3 only. grpc-js's createSsl() offers no minimum version for servers, so the server
// side is a small ServerCredentials subclass whose constructor options reach http2.createSecureServer unchanged.
import { ServerCredentials, credentials } from "@grpc/grpc-js";
import type { ChannelCredentials } from "@grpc/grpc-js";
import { createSecureContext } from "node:tls";
import type { PeerCertificate } from "node:tls";
import { TheseusError } from "../common/index.js";
import { describeIdentity, identityOfCertificate } from "./identity.js";
import type { PeerIdentity, Role } from "./identity.js";

/** PEM material: the installation CA that signs every peer, and this process's own certificate and key. */
export interface TlsMaterial {
  readonly caPem: string;
  readonly certPem: string;
  readonly keyPem: string;
}

class Tls13ServerCredentials extends ServerCredentials {
  constructor(material: TlsMaterial) {
    super(
      // requestCert + rejectUnauthorized: a client without a certificate signed by our CA never completes the handshake.
      { requestCert: true, rejectUnauthorized: true, minVersion: "TLSv1.3" },
      { ca: material.caPem, cert: material.certPem, key: material.keyPem, minVersion: "TLSv1.3" },
    );
  }

  override _equals(other: ServerCredentials): boolean {
    return other === this;
  }

  /** New material for the listening servers (grpc-js calls setSecureContext on each); connections open keep theirs. */
  update(material: TlsMaterial): void {
    this.updateSecureContextOptions({ ca: material.caPem, cert: material.certPem, key: material.keyPem, minVersion: "TLSv1.3" });
  }
}

export type ReloadableServerCredentials = ServerCredentials & { update(material: TlsMaterial): void };

export function serverCredentials(material: TlsMaterial): ReloadableServerCredentials {
  return new Tls13ServerCredentials(material);
}

/** What a client expects of the server it dials: a role, and optionally a name (the peer agent's cluster). */
export interface ExpectedPeer {
  readonly role: Role;
  readonly name?: string;
}

/**
 * Client credentials that verify the server by the identity in its certificate instead of by host name: agents are
 * reached through load balancers, node ports and tunnels whose addresses say nothing about who answers.
 */
export function channelCredentials(material: TlsMaterial, expected: ExpectedPeer): ChannelCredentials {
  const context = createSecureContext({
    ca: material.caPem,
    cert: material.certPem,
    key: material.keyPem,
    minVersion: "TLSv1.3",
  });
  return credentials.createFromSecureContext(context, {
    checkServerIdentity: (_host: string, cert: PeerCertificate) => checkPeer(identityOfCertificate(cert), expected),
  });
}

function checkPeer(identity: PeerIdentity | undefined, expected: ExpectedPeer): Error | undefined {
  if (identity === undefined) {
    return new TheseusError("unauthenticated", "the server's certificate carries no Theseus identity");
  }
  if (identity.role !== expected.role || (expected.name !== undefined && identity.name !== expected.name)) {
    const want = expected.name === undefined ? `an ${expected.role}` : describeIdentity(expected as PeerIdentity);
    return new TheseusError("unauthenticated", `expected ${want} but the server is ${describeIdentity(identity)}`, {
      hint: "check the address: it reaches a different agent or cluster than the one named",
    });
  }
  return undefined;
}
