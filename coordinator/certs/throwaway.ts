// An in-memory installation for tests, demos and `sync-dirs`: a fresh CA and certificates, never written to disk.
import type { PeerIdentity, TlsMaterial } from "../../rpc/index.js";
import { createCertificateAuthority, issueCertificate } from "./x509.js";
import type { CertificateAuthority } from "./x509.js";

export interface ThrowawayPki {
  readonly ca: CertificateAuthority;
  /** TLS material for an identity, issued on first use and cached. */
  material(identity: PeerIdentity): Promise<TlsMaterial>;
}

export async function createThrowawayPki(): Promise<ThrowawayPki> {
  const ca = await createCertificateAuthority({ installation: "throwaway", validityDays: 2 });
  const issued = new Map<string, Promise<TlsMaterial>>();
  return {
    ca,
    material(identity) {
      const key = `${identity.role}/${identity.name}`;
      let material = issued.get(key);
      if (material === undefined) {
        material = issueCertificate(ca, identity, { validityDays: 1 }).then((c) => ({ caPem: ca.certPem, certPem: c.certPem, keyPem: c.keyPem }));
        issued.set(key, material);
      }
      return material;
    },
  };
}
