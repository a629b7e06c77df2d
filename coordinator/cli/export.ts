// `theseus export`: parse, call coordinator/export, print progress and the result.
import { resolve } from "node:path";
import type { Command } from "commander";
import { TheseusError, formatBytes } from "../../common/index.js";
import { createAgentRegistry } from "../agents/index.js";
import { exportApp } from "../export/index.js";
import type { ExportResult } from "../export/index.js";
import { resolvePlanInput } from "../plan/index.js";
import { coordinatorTls, globalOptions, interruptSignal, progressLine } from "./context.js";

interface ExportFlags {
  from: string;
  namespace?: string;
  selector?: string;
  helmRelease?: string;
  output: string;
  data: boolean;
  quiesce?: boolean;
  json?: boolean;
}

export function register(program: Command): void {
  program
    .command("export")
    .description("write a fat chart: the app as a Helm chart plus its volume data, a self-contained snapshot to import anywhere")
    .requiredOption("--from <agent>", "the source agent: a name from `theseus agents list`, or HOST:PORT")
    .requiredOption("-n, --namespace <ns>", "the application's namespace")
    .option("--selector <labels>", "only objects matching a label selector, e.g. app=shop")
    .option("--helm-release <name>", "only the objects (and release secrets) of one Helm 3 release")
    .requiredOption("-o, --output <file.tgz>", "the archive to write")
    .option("--no-data", "the chart alone: no volume data (the claims start empty wherever it is installed)")
    .option("--quiesce", "stop the app while its volumes are read, for a consistent snapshot, and start it again after")
    .option("--json", "print the result as JSON")
    .addHelpText(
      "after",
      `
The archive holds a Helm chart directory (templates with values for the namespace, storage classes, image
registries, replicas, Route/Ingress hosts and resource scaling; \`helm lint\` and \`helm install\` work on it) and,
inside it, data/ (kept out of Helm by .helmignore): a manifest, the objects, and one zstd tar per claim with its
digest. Without --quiesce the app keeps writing while it is read: the snapshot is crash-consistent at best.

Examples:
  theseus export --from eu -n shop -o shop.tgz --quiesce
  theseus export --from eu -n shop --helm-release web -o web.tgz --no-data
  then: theseus import shop.tgz --to us --to-namespace shop-copy`,
    )
    .action(async (flags: ExportFlags, command: Command) => {
      const { app } = await resolvePlanInput({ namespace: flags.namespace, selector: flags.selector, helmRelease: flags.helmRelease });
      if (!flags.output.endsWith(".tgz")) throw new TheseusError("invalid_argument", `-o ${flags.output}: a fat chart is a .tgz file`, { hint: `for example -o ${app.namespace}.tgz` });
      const from = await createAgentRegistry().resolve(flags.from);
      const tls = await coordinatorTls(globalOptions(command));
      const withData = flags.data;
      if (withData && flags.quiesce !== true) process.stderr.write("note: the app keeps running while its volumes are read: the snapshot is crash-consistent at best (--quiesce stops it meanwhile)\n");
      const line = progressLine();
      const result: ExportResult = await exportApp({
        from,
        app,
        out: resolve(flags.output),
        withData,
        quiesce: flags.quiesce === true,
        tls,
        signal: interruptSignal(),
        onEvent: (event) => {
          if (event.type === "quiesced") process.stderr.write(`app stopped for the snapshot (${event.changed} workloads)\n`);
          else if (event.type === "volume") line.update(`${event.claim}: ${formatBytes(event.bytes)}${event.totalBytes > 0 ? ` of ~${formatBytes(event.totalBytes)}` : ""}`);
          else if (event.type === "volume-done") {
            line.done();
            process.stderr.write(`${event.claim}: ${formatBytes(event.bytes)} of files, ${formatBytes(event.fileBytes)} compressed\n`);
          } else if (event.type === "unquiesced") process.stderr.write("app started again\n");
        },
      });
      line.done();
      if (flags.json === true) {
        process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
        return;
      }
      for (const warning of result.warnings) process.stderr.write(`warning: ${warning}\n`);
      const volumes = result.claims.filter((c) => c.data !== undefined);
      process.stdout.write(
        `Wrote ${result.out}: chart ${result.chart} (${result.objects} objects), ${volumes.length} volume${volumes.length === 1 ? "" : "s"} of data${withData ? (result.quiesced ? " (consistent: the app was stopped)" : " (crash-consistent at best)") : " (none: --no-data)"}.\n` +
          `Install: theseus import ${flags.output} --to CLUSTER [--to-namespace NS]   or, without data: tar xzf ${flags.output} && helm install R ./${result.chart}\n`,
      );
    });
}
