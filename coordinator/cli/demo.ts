// `theseus demo`: the whole story on this machine; `--volume-only` is the data plane alone, between two agents.
import type { Command } from "commander";
import { TheseusError, parseBytes } from "../../common/index.js";
import { formatDemoReport, runDemo, runVolumeDemo } from "../demo/index.js";
import { EXIT, interruptSignal } from "./context.js";

interface DemoFlags {
  readonly volumeOnly?: boolean;
  readonly size?: string;
  readonly mode: string;
  readonly keep?: boolean;
  readonly json?: boolean;
}

export function register(program: Command): void {
  program
    .command("demo")
    .description("run the whole story locally: a live migration of a writing app between two local clusters, every acknowledged write verified")
    .option("--size <bytes>", "the app's volume (default 1GiB; half of it is filled with other files first); with --volume-only, the data generated (default 64MiB)")
    .option("--mode <mode>", "move (the source is retired) or copy (the source runs on)", "move")
    .option("--volume-only", "only copy a generated volume between two agents (no clusters), and verify it")
    .option("--keep", "keep the clusters running and the working directory (certificates, volumes, logs) for a look afterwards")
    .option("--json", "print the result as one JSON object on stdout (the story goes to stderr)")
    .addHelpText(
      "after",
      `
The first run on a machine builds the local clusters' control plane (about 1 minute of apt and 5-9 minutes of
compiling on 2 cores, once). The demo then takes a few minutes: two clusters come up, each with its agent installed
by the Helm chart (a pod; the app's claims are read and written through mover pods), the app writes about 5 MB/s,
the migration pre-syncs, cuts over on its own, and the verifier checks every acknowledged write on the target.

Examples:
  $ theseus demo
  $ theseus demo --size 256MiB --json | jq .downtimeMs
  $ theseus demo --volume-only`,
    )
    .action(async (flags: DemoFlags) => {
      const json = flags.json === true;
      const say = (line: string): void => void (json ? process.stderr : process.stdout).write(`${line}\n`);
      const signal = interruptSignal();
      if (flags.volumeOnly === true) {
        await runVolumeDemo({ totalBytes: parseBytes(flags.size ?? "64MiB", "--size"), keep: flags.keep === true, signal, say });
        return;
      }
      if (flags.mode !== "move" && flags.mode !== "copy") throw new TheseusError("invalid_argument", `--mode must be move or copy, not "${flags.mode}"`);
      const report = await runDemo({
        ...(flags.size === undefined ? {} : { sizeBytes: parseBytes(flags.size, "--size") }),
        mode: flags.mode,
        keep: flags.keep === true,
        signal,
        say,
      });
      process.stdout.write(json ? `${JSON.stringify(report, null, 2)}\n` : `\n${formatDemoReport(report)}\n`);
      if (!report.verified) process.exitCode = EXIT.failed;
    });
}
