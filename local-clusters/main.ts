// Stand-alone developer entry for the local cluster commands until they are wired into the theseus CLI:
//   node dist/local-clusters/main.js local up NAME
import { Command } from "commander";
import { TheseusError } from "../common/index.js";
import { registerLocalCommands } from "./cli.js";

const program = new Command("theseus").description("Theseus local clusters (developer entry)");
registerLocalCommands(program);
program.parseAsync(process.argv).catch((error: unknown) => {
  const e = TheseusError.from(error);
  console.error(`error: ${e.message}`);
  if (e.hint !== undefined) console.error(`hint: ${e.hint}`);
  process.exitCode = 1;
});
