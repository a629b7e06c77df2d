// `theseus agents add|list|remove`: named agents, so that --from and --to take a name instead of HOST:PORT.
import { Option } from "commander";
import type { Command } from "commander";
import { TheseusError } from "../../common/index.js";
import { createAgentRegistry } from "../agents/index.js";

export function register(program: Command): void {
  const agents = program
    .command("agents")
    .description("name the agents you migrate between, the way kubectl names contexts")
    .addHelpText(
      "after",
      `
Agents are kept in THESEUS_HOME/config.yaml (default ~/.theseus/config.yaml). \`theseus local up NAME\` registers its
cluster's agent by itself; other commands then take the name: --from eu --to us.

Examples:
  theseus agents add eu 10.0.0.5:7443
  theseus agents add us agent.us.example.com:443 --cluster us-2
  theseus agents list
  theseus agents remove eu`,
    );

  agents
    .command("add")
    .description("register an agent under a name")
    .argument("<name>", "the name to use in --from/--to")
    .argument("<address>", "HOST:PORT of the agent, as this machine reaches it")
    .option("--cluster <cluster>", "the cluster name the agent's certificate carries (default: NAME)")
    .option("--replace", "overwrite an agent of that name")
    .addHelpText("after", "\nExamples:\n  theseus agents add eu 10.0.0.5:7443\n  theseus agents add us 127.0.0.1:7444 --cluster us-2 --replace")
    .action(async (name: string, address: string, flags: { cluster?: string; replace?: boolean }) => {
      const registry = createAgentRegistry();
      const entry = await registry.add({ name, address, ...(flags.cluster === undefined ? {} : { cluster: flags.cluster }) }, { replace: flags.replace === true });
      process.stdout.write(`agent "${entry.name}" is ${entry.address} (cluster ${entry.cluster}), saved in ${registry.path}\n`);
    });

  agents
    .command("list")
    .description("list the registered agents")
    .addOption(new Option("-o, --output <format>", "output format").choices(["text", "json"]).default("text"))
    .addHelpText("after", "\nExamples:\n  theseus agents list\n  theseus agents list -o json | jq -r '.[].address'")
    .action(async (flags: { output: "text" | "json" }) => {
      const entries = await createAgentRegistry().list();
      if (flags.output === "json") {
        process.stdout.write(`${JSON.stringify(entries, null, 2)}\n`);
        return;
      }
      if (entries.length === 0) {
        process.stdout.write("no agents; add one with `theseus agents add NAME HOST:PORT` or start a local cluster with `theseus local up NAME`\n");
        return;
      }
      const rows = [["NAME", "ADDRESS", "CLUSTER", "ADDED BY"], ...entries.map((e) => [e.name, e.address, e.cluster, e.local ? "theseus local up" : "theseus agents add"])];
      const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length))) ?? [];
      for (const row of rows) process.stdout.write(`${row.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join("  ").trimEnd()}\n`);
    });

  agents
    .command("remove")
    .description("forget a registered agent (the agent itself keeps running)")
    .argument("<name>", "the agent's name")
    .addHelpText("after", "\nExample:\n  theseus agents remove eu")
    .action(async (name: string) => {
      const registry = createAgentRegistry();
      const removed = await registry.remove(name);
      if (removed === undefined) {
        throw new TheseusError("not_found", `no agent named "${name}" in ${registry.path}`, { hint: "see the registered ones with `theseus agents list`" });
      }
      process.stdout.write(`agent "${name}" removed from ${registry.path}\n`);
    });
}
