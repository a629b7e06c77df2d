// The agent's TLS material, reloaded when its files change, so that a rotated Secret (by `theseus certs secret
// --apply` or cert-manager) is used without a restart. Kubernetes updates a mounted Secret by swapping a symlink
// (..data), which file watchers miss or report twice, so the files are polled: three small reads every few seconds.
// New material is checked before use (the key matches the certificate, CA and certificate parse, the certificate is
// in its validity period); a broken rotation keeps the old material and is logged and counted, never half-applied.
import { X509Certificate, createPrivateKey } from "node:crypto";
import { readFile } from "node:fs/promises";
import { TheseusError } from "../../common/index.js";
import type { Logger } from "../../common/index.js";
import type { TlsMaterial } from "../../rpc/index.js";

export interface TlsPaths {
  readonly caPath: string;
  readonly certPath: string;
  readonly keyPath: string;
}

export interface TlsState {
  readonly material: TlsMaterial;
  /** The certificate's notAfter, ms since the epoch. */
  readonly notAfterMs: number;
  readonly notBeforeMs: number;
}

export interface TlsReloader {
  /**
   * The material in use, always the latest good one. Its fields are getters: code that keeps the object (the agent's
   * dialers, for the peer) reads the rotated material the next time it dials.
   */
  readonly material: TlsMaterial;
  current(): TlsState;
  /** Reads the files now; resolves true when new material was taken. */
  check(): Promise<boolean>;
  close(): void;
}

export interface TlsReloaderOptions {
  readonly paths: TlsPaths;
  readonly intervalMs: number;
  readonly logger: Logger;
  /** Called with each new good material (the RPC server swaps its secure context). */
  readonly onChange: (material: TlsMaterial) => void;
  readonly onLoad?: (result: "ok" | "failed", notAfterMs?: number) => void;
}

/** Parses and checks PEM material; throws a TheseusError naming what is wrong. */
export function validateTls(material: TlsMaterial, nowMs = Date.now()): TlsState {
  let cert: X509Certificate;
  try {
    new X509Certificate(material.caPem);
    cert = new X509Certificate(material.certPem);
  } catch (cause) {
    throw new TheseusError("invalid_argument", "the TLS certificate or CA is not a PEM certificate", { cause });
  }
  let matches: boolean;
  try {
    matches = cert.checkPrivateKey(createPrivateKey(material.keyPem));
  } catch (cause) {
    throw new TheseusError("invalid_argument", "the TLS key is not a PEM private key", { cause });
  }
  if (!matches) throw new TheseusError("invalid_argument", "the TLS key does not belong to the certificate", { hint: "issue the certificate and key together: theseus certs issue agent --cluster NAME" });
  const notBeforeMs = Date.parse(cert.validFrom);
  const notAfterMs = Date.parse(cert.validTo);
  if (nowMs > notAfterMs) throw new TheseusError("failed_precondition", `the agent certificate expired at ${cert.validTo}`, { hint: "issue a new one: theseus certs secret --cluster NAME --apply" });
  return { material, notAfterMs, notBeforeMs };
}

async function readMaterial(paths: TlsPaths): Promise<TlsMaterial> {
  const read = async (path: string, what: string): Promise<string> => {
    try {
      return await readFile(path, "utf8");
    } catch (error) {
      throw new TheseusError("invalid_argument", `cannot read the agent's ${what} at ${path}`, {
        cause: error,
        hint: "create it with `theseus certs init` and `theseus certs issue agent --cluster NAME` (in a pod: `theseus certs secret --cluster NAME --apply`)",
      });
    }
  };
  return { caPem: await read(paths.caPath, "CA certificate"), certPem: await read(paths.certPath, "certificate"), keyPem: await read(paths.keyPath, "key") };
}

const same = (a: TlsMaterial, b: TlsMaterial): boolean => a.caPem === b.caPem && a.certPem === b.certPem && a.keyPem === b.keyPem;

/** Loads the material once (failing as the agent's start-up should), then polls for changes. */
export async function createTlsReloader(options: TlsReloaderOptions): Promise<TlsReloader> {
  const logger = options.logger.child({ component: "tls" });
  let state: TlsState;
  try {
    state = validateTls(await readMaterial(options.paths));
  } catch (error) {
    options.onLoad?.("failed");
    throw error;
  }
  options.onLoad?.("ok", state.notAfterMs);
  let lastBad: TlsMaterial | undefined;
  let checking: Promise<boolean> | undefined;

  const check = async (): Promise<boolean> => {
    let next: TlsMaterial;
    try {
      next = await readMaterial(options.paths);
    } catch (error) {
      // Mid-swap, a file can be missing for an instant; the next poll sees the complete set.
      logger.debug({ err: error }, "TLS files not readable now");
      return false;
    }
    if (same(next, state.material) || (lastBad !== undefined && same(next, lastBad))) return false;
    try {
      const validated = validateTls(next);
      options.onChange(validated.material);
      state = validated;
      lastBad = undefined;
      options.onLoad?.("ok", state.notAfterMs);
      logger.info({ notAfter: new Date(state.notAfterMs).toISOString() }, "TLS material reloaded");
      return true;
    } catch (error) {
      lastBad = next;
      options.onLoad?.("failed");
      logger.warn({ err: error }, "the changed TLS files are not usable; keeping the material in use");
      return false;
    }
  };
  const timer = setInterval(() => {
    checking ??= check().finally(() => (checking = undefined));
  }, options.intervalMs);
  timer.unref();

  const material: TlsMaterial = {
    get caPem() {
      return state.material.caPem;
    },
    get certPem() {
      return state.material.certPem;
    },
    get keyPem() {
      return state.material.keyPem;
    },
  };
  return {
    material,
    current: () => state,
    check: () => (checking ??= check().finally(() => (checking = undefined))),
    close: () => clearInterval(timer),
  };
}
