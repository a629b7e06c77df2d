// The `theseus` command line: one file per command, each exporting register(program).
import { Command } from "commander";
import { VERSION } from "../../common/index.js";
import { registerLocalCommands } from "../../local-clusters/index.js";
import { register as registerAgents } from "./agents.js";
import { register as registerCerts } from "./certs.js";
import { register as registerCopy } from "./copy.js";
import { register as registerDemo } from "./demo.js";
import { register as registerExport } from "./export.js";
import { register as registerImport } from "./import.js";
import { localCommandHooks } from "./local.js";
import { register as registerMigrate } from "./migrate.js";
import { register as registerPlan } from "./plan.js";
import { register as registerSyncDirs } from "./sync-dirs.js";

export function createProgram(): Command {
  const program = new Command("theseus")
    .description("Transactional live migration of stateful applications between Kubernetes clusters.")
    .version(VERSION)
    .option("--pki-dir <dir>", "where the CA and certificates live (env THESEUS_PKI_DIR; default ~/.theseus/pki)")
    .option("--as <name>", "the coordinator identity to act as (default: the only coordinator certificate)")
    .showHelpAfterError("(run with --help for usage)")
    // Usage errors surface as CommanderError (caught in main.ts, exit 2) in every subcommand registered below.
    .exitOverride()
    .addHelpText(
      "after",
      `
Getting started:
  theseus demo                                   the whole story on this machine
  theseus certs init && theseus certs issue coordinator --name me
  theseus copy --from HOST:PORT --to HOST:PORT --volume data
  theseus local up eu && theseus local up us && theseus plan --from eu --to us -n shop
  theseus migrate --from eu --to us -n shop --auto-cutover   then: theseus status ID -w, cutover ID, abort ID

Exit codes: 0 done, 1 failed, 2 bad usage or input, 3 an agent unreachable or refusing us, 4 integrity or protocol
error, 130 cancelled. A migration that ends aborted is a failure of migrate, resume and cutover (1), and what abort
asked for (0); see each command's --help.`,
    );
  registerCerts(program);
  registerAgents(program);
  registerPlan(program);
  registerMigrate(program);
  registerExport(program);
  registerImport(program);
  registerCopy(program);
  registerDemo(program);
  registerSyncDirs(program);
  registerLocalCommands(program, localCommandHooks());
  return program;
}
