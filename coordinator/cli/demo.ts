// `theseus demo`: the whole story between two local agents.
import type { Command } from "commander";
import { parseBytes } from "../../common/index.js";
import { runVolumeDemo } from "../demo/index.js";
import { interruptSignal } from "./context.js";

export function register(program: Command): void {
  program
    .command("demo")
    .description("run the whole story locally: two agents, a generated volume copied between them and verified")
    .option("--size <bytes>", "how much data to generate", "64MiB")
    .option("--keep", "keep the working directory (certificates, volumes, agent logs) for a look afterwards")
    .action(async (flags: { size: string; keep?: boolean }) => {
      await runVolumeDemo({
        totalBytes: parseBytes(flags.size, "--size"),
        keep: flags.keep === true,
        signal: interruptSignal(),
        say: (line) => process.stdout.write(`${line}\n`),
      });
    });
}
