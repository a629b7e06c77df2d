// `theseus import`: parse, call coordinator/export, print progress and the result.
import { resolve } from "node:path";
import type { Command } from "commander";
import { TheseusError, formatBytes } from "../../common/index.js";
import { createAgentRegistry } from "../agents/index.js";
import { importApp, undoImport } from "../export/index.js";
import { validateNamespace } from "../plan/index.js";
import { coordinatorTls, globalOptions, interruptSignal, progressLine } from "./context.js";

interface ImportFlags {
  to: string;
  toNamespace?: string;
  set: string[];
  storageClass: string[];
  undo?: boolean;
  json?: boolean;
}

const collect = (value: string, all: string[]): string[] => [...all, value];

export function register(program: Command): void {
  program
    .command("import")
    .description("bring a fat chart up in a cluster: check, stage, restore and verify every volume, then start the app")
    .argument("<file.tgz>", "an archive written by `theseus export`")
    .requiredOption("--to <agent>", "the target agent: a name from `theseus agents list`, or HOST:PORT")
    .option("--to-namespace <ns>", "the namespace on the target (default: the exported one)")
    .option("--set <key=value>", "a chart value (see its values.yaml), e.g. replicas.Deployment/web=2; repeatable", collect, [])
    .option("--storage-class <src=dst>", "map a StorageClass; repeatable", collect, [])
    .option("--undo", "remove what an interrupted or finished import of this archive staged (same --to and --to-namespace)")
    .option("--json", "print the result as JSON")
    .addHelpText(
      "after",
      `
Checks the whole archive first (a truncated or altered file is refused before anything is written), plans against
the target (kinds, storage classes, quotas, conflicts), stages the objects with the workloads at zero, restores each
volume through the target agent (strict extraction, then the volume's digest verified), and only then starts the
workloads. A refused volume undoes the import. Interrupted (Ctrl-C, an agent gone)? Run the same command again to
resume, or add --undo.

Examples:
  theseus import shop.tgz --to us --to-namespace shop-copy --storage-class local-path=fast-ssd
  theseus import shop.tgz --to us --set replicas.Deployment/web=3 --set resourceScale=0.5`,
    )
    .action(async (file: string, flags: ImportFlags, command: Command) => {
      const toNamespace = flags.toNamespace === undefined ? undefined : validateNamespace(flags.toNamespace, "--to-namespace");
      const storageClasses = new Map<string, string>();
      for (const pair of flags.storageClass) {
        const [from = "", to = "", ...rest] = pair.split("=");
        if (from === "" || to === "" || rest.length > 0) throw new TheseusError("invalid_argument", `--storage-class "${pair}" is not SRC=DST`, { hint: "for example --storage-class local-path=fast-ssd" });
        storageClasses.set(from, to);
      }
      const to = await createAgentRegistry().resolve(flags.to);
      const tls = await coordinatorTls(globalOptions(command));
      const signal = interruptSignal();
      const archive = resolve(file);
      if (flags.undo === true) {
        const undone = await undoImport({ archive, to, toNamespace, sets: flags.set, storageClasses, tls, signal });
        process.stdout.write(flags.json === true ? `${JSON.stringify(undone, null, 2)}\n` : `Undid import ${undone.id}: removed ${undone.removed} objects from ${undone.namespace} on ${to.name}.\n`);
        return;
      }
      const line = progressLine();
      const result = await importApp({
        archive,
        to,
        toNamespace,
        sets: flags.set,
        storageClasses,
        tls,
        signal,
        onEvent: (event) => {
          if (event.type === "checked") process.stderr.write(`archive checked: ${event.claims} volumes, ${formatBytes(event.bytes)} of files\n`);
          else if (event.type === "resuming") process.stderr.write(`resuming an interrupted import (it had ${event.phase === "planned" ? "started" : event.phase})\n`);
          else if (event.type === "staged") process.stderr.write(`staged ${event.objects} objects (workloads at zero)\n`);
          else if (event.type === "volume") line.update(`${event.claim}: ${formatBytes(event.bytes)} of ${formatBytes(event.totalBytes)}`);
          else if (event.type === "volume-done") {
            line.done();
            process.stderr.write(`${event.claim}: restored and verified (${event.entries} entries, ${formatBytes(event.bytes)})\n`);
          } else process.stderr.write(`started ${event.workloads} workloads\n`);
        },
      });
      line.done();
      if (flags.json === true) {
        process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
        return;
      }
      for (const warning of result.warnings) process.stderr.write(`warning: ${warning}\n`);
      process.stdout.write(`Imported into ${result.namespace} on ${to.name} (import ${result.id}): ${result.objects} objects, ${result.restored.length} volumes restored and verified.\n`);
    });
}
