// What every command shares: global options, the coordinator's own TLS identity, progress output, and the exit codes.
import type { Command } from "commander";
import { TheseusError } from "../../common/index.js";
import type { ErrorCode } from "../../common/index.js";
import type { TlsMaterial } from "../../rpc/index.js";
import { defaultPkiDir, listCoordinatorNames, loadTlsMaterial } from "../certs/index.js";

export interface GlobalOptions {
  readonly pkiDir: string;
  /** The coordinator identity to act as; defaults to the only coordinator certificate in the PKI directory. */
  readonly as?: string;
}

export function globalOptions(command: Command): GlobalOptions {
  const opts = command.optsWithGlobals<{ pkiDir?: string; as?: string }>();
  return { pkiDir: opts.pkiDir ?? defaultPkiDir(), ...(opts.as === undefined ? {} : { as: opts.as }) };
}

export async function coordinatorTls(options: GlobalOptions): Promise<TlsMaterial> {
  let name = options.as;
  if (name === undefined) {
    const names = await listCoordinatorNames(options.pkiDir);
    const [only, ...others] = names;
    if (only === undefined || others.length > 0) {
      throw new TheseusError("invalid_argument", names.length === 0 ? `no coordinator certificate in ${options.pkiDir}` : `several coordinator certificates in ${options.pkiDir}: ${names.join(", ")}`, {
        hint: names.length === 0 ? "issue one with `theseus certs issue coordinator --name NAME`" : "choose one with --as NAME",
      });
    }
    name = only;
  }
  return loadTlsMaterial(options.pkiDir, { role: "coordinator", name });
}

/** Exit codes a script can branch on. */
export const EXIT = { ok: 0, failed: 1, usage: 2, unavailable: 3, integrity: 4, cancelled: 130 } as const;

export function exitCodeFor(code: ErrorCode): number {
  switch (code) {
    case "invalid_argument":
    case "not_found":
    case "already_exists":
      return EXIT.usage;
    case "unavailable":
    case "deadline_exceeded":
    case "unauthenticated":
    case "permission_denied":
      return EXIT.unavailable;
    case "data_loss":
    case "protocol":
      return EXIT.integrity;
    case "cancelled":
      return EXIT.cancelled;
    default:
      return EXIT.failed;
  }
}

/** A one-line progress display on stderr that rewrites itself on a terminal and stays quiet otherwise. */
export function progressLine(): { update(text: string): void; done(): void } {
  const tty = process.stderr.isTTY;
  let last = "";
  return {
    update(text) {
      if (!tty || text === last) return;
      last = text;
      process.stderr.write(`\r\x1b[2K${text}`);
    },
    done() {
      if (tty && last !== "") process.stderr.write("\r\x1b[2K");
    },
  };
}

/** An AbortSignal that fires on the first Ctrl-C (the second one exits at once). */
export function interruptSignal(): AbortSignal {
  const controller = new AbortController();
  process.once("SIGINT", () => {
    process.stderr.write("\ncancelling… (press Ctrl-C again to exit at once)\n");
    controller.abort(new TheseusError("cancelled", "cancelled by the user"));
    process.once("SIGINT", () => process.exit(EXIT.cancelled));
  });
  return controller.signal;
}
