// `theseus copy`: the source agent streams one volume directly to the target agent.
import type { Command } from "commander";
import { formatBytes, formatDuration, parseRate } from "../../common/index.js";
import { createAgentRegistry } from "../agents/index.js";
import { copyVolume, skippedNotice } from "../copy/index.js";
import { coordinatorTls, globalOptions, interruptSignal, progressLine } from "./context.js";

interface CopyFlags {
  from: string;
  to: string;
  volume: string;
  targetVolume?: string;
  sourceAddressForTarget?: string;
  bandwidth?: string;
  json?: boolean;
}

export function register(program: Command): void {
  program
    .command("copy")
    .description("copy one volume from a source agent to a target agent, directly between them")
    .requiredOption("--from <agent>", "the source agent: a name from `theseus agents list`, or HOST:PORT")
    .requiredOption("--to <agent>", "the target agent: a name, or HOST:PORT")
    .requiredOption("--volume <name>", "the volume to copy")
    .option("--target-volume <name>", "the volume to write on the target (default: the same name)")
    .option("--source-address-for-target <host:port>", "how the target reaches the source, if not as --from")
    .option("--bandwidth <rate>", "limit the source's sending rate, e.g. 50MiB/s or 200Mbit/s (default: unlimited)")
    .option("--json", "print the result as one JSON object")
    .addHelpText(
      "after",
      `
The coordinator opens a session on the source for the target agent's identity; the target then pulls the volume
over mTLS gRPC as one sync round (verified, zstd-compressed when the link is slow); a later copy into the same
volume sends only what changed. Nothing passes through the coordinator. Ctrl-C cancels the copy.

Examples:
  theseus copy --from 10.0.0.5:7443 --to 10.1.0.7:7443 --volume data
  theseus copy --from eu --to us --volume data        # agents registered with theseus agents add`,
    )
    .action(async (flags: CopyFlags, command: Command) => {
      // Flags first: a typo should not wait for certificates to load.
      const bandwidth = flags.bandwidth === undefined ? {} : { bandwidthBytesPerSecond: parseRate(flags.bandwidth) };
      const registry = createAgentRegistry();
      const [from, to] = [(await registry.resolve(flags.from)).address, (await registry.resolve(flags.to)).address];
      const tls = await coordinatorTls(globalOptions(command));
      const progress = progressLine();
      const started = Date.now();
      const result = await copyVolume({
        from,
        to,
        volume: flags.volume,
        ...(flags.targetVolume === undefined ? {} : { targetVolume: flags.targetVolume }),
        ...(flags.sourceAddressForTarget === undefined ? {} : { sourceAddressForTarget: flags.sourceAddressForTarget }),
        ...bandwidth,
        tls,
        signal: interruptSignal(),
        onProgress: (p) => progress.update(`copying: ${p.entries} entries, ${formatBytes(Number(p.bytes))} (${formatBytes(Number(p.wireBytes))} on the wire), ${formatDuration(Date.now() - started)}`),
      });
      progress.done();
      const s = result.stats;
      if (flags.json === true) {
        process.stdout.write(
          `${JSON.stringify({ migrationId: result.migrationId, source: result.sourceCluster, target: result.targetCluster, entries: Number(s.entriesChanged), bytes: Number(s.bytesChanged), wireBytes: Number(s.wireBytes), durationMs: Number(s.durationMs), specialFilesSkipped: Number(s.specialFilesSkipped), firstSpecialFile: s.firstSpecialFile })}\n`,
        );
        return;
      }
      process.stdout.write(
        `copied volume "${flags.volume}" from ${result.sourceCluster} to ${result.targetCluster}: ${s.entriesChanged} entries, ${formatBytes(Number(s.bytesChanged))} ` +
          `in ${formatDuration(Number(s.durationMs))}, ${formatBytes(Number(s.wireBytes))} on the wire\n`,
      );
      const skipped = skippedNotice(s);
      if (skipped !== undefined) process.stdout.write(`${skipped}\n`);
    });
}
