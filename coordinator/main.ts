#!/usr/bin/env node
// theseus: the coordinator CLI. Prints the message and the fix on failure, never a stack (THESEUS_DEBUG=1 shows it).
import { CommanderError } from "commander";
import { TheseusError, describeError } from "../common/index.js";
import { createProgram } from "./cli/program.js";
import { EXIT, exitCodeFor } from "./cli/context.js";

async function main(): Promise<void> {
  const program = createProgram();
  try {
    await program.parseAsync(process.argv);
  } catch (error) {
    if (error instanceof CommanderError) {
      // Commander has already printed its message (or the help, or the version).
      process.exit(error.exitCode === 0 ? EXIT.ok : EXIT.usage);
    }
    throw error;
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`${describeError(error)}\n`);
  if (process.env["THESEUS_DEBUG"] === "1" && error instanceof Error) process.stderr.write(`${error.stack ?? ""}\n`);
  process.exit(exitCodeFor(TheseusError.from(error).code));
});
