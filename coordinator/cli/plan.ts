// `theseus plan`, `theseus stage` and `theseus unstage`: parse, call coordinator/plan, print.
import { Option } from "commander";
import type { Command } from "commander";
import { stringify } from "yaml";
import { createAgentRegistry } from "../agents/index.js";
import {
  createPlan,
  newMigrationId,
  planErrors,
  planReport,
  resolvePlanInput,
  stagePlan,
  unstageMigration,
  validateMigrationId,
  validateNamespace,
} from "../plan/index.js";
import type { PlanInput, PlanResult } from "../plan/index.js";
import { EXIT, coordinatorTls, globalOptions, interruptSignal } from "./context.js";
import { formatPlan, formatProblem, formatStage, formatUnstage } from "./plan-text.js";

export interface AppFlags extends PlanInput {
  from: string;
  to: string;
  output: "text" | "json" | "yaml";
}

const collect = (value: string, all: string[]): string[] => [...all, value];

const AGENTS_HELP = `--from and --to take an agent name (theseus agents list; \`theseus local up NAME\` registers one) or HOST:PORT.`;

export function appOptions(command: Command): Command {
  return command
    .requiredOption("--from <agent>", "the source agent: a name from `theseus agents list`, or HOST:PORT")
    .requiredOption("--to <agent>", "the target agent: a name, or HOST:PORT")
    .requiredOption("-n, --namespace <ns>", "the application's namespace on the source")
    .option("--to-namespace <ns>", "the namespace on the target (default: the same)")
    .option("--storage-class <src=dst>", "map a StorageClass; repeatable", collect, [])
    .option("--image-registry <old=new>", "replace an image prefix in every container; repeatable", collect, [])
    .option("--replicas <kind/name=n>", "override a workload's replicas on the target; repeatable", collect, [])
    .option("--route-host <old=new>", "replace a Route/Ingress host suffix; repeatable", collect, [])
    .option("--rules <file>", "user rules (YAML, like Velero's resource modifiers; format: app-model/rules.ts)")
    .option("--selector <labels>", "only objects matching a label selector, e.g. app=shop,tier!=cache")
    .option("--helm-release <name>", "only the objects (and release secrets) of one Helm 3 release")
    .option("--rewrite-service-dns", "rewrite NAME.NS.svc names in ConfigMaps and env values to the target namespace")
    .option("--keep-node-ports", "keep Services' fixed nodePorts (dropped by default: they often collide on the target)")
    .addOption(new Option("--on-conflict <policy>", "an object that exists on the target: fail, or adopt it (never deleted later)").choices(["fail", "adopt"]).default("fail"))
    .addOption(new Option("-o, --output <format>", "output format").choices(["text", "json", "yaml"]).default("text"));
}

export function register(program: Command): void {
  appOptions(
    program
      .command("plan")
      .description("show what would move from one cluster to another: objects, changes, volumes, and every failed check"),
  )
    .addHelpText(
      "after",
      `
Discovers the application on the source agent, asks the target agent what its cluster has (kinds and versions,
storage classes, quotas, existing objects), and prints the plan. Nothing is written anywhere. Exits 1 when a check
fails (an error in "problems"), so scripts can stop there. ${AGENTS_HELP}

Examples:
  theseus local up eu && theseus local up us
  theseus plan --from eu --to us -n shop
  theseus plan --from eu --to us -n shop --to-namespace shop-us --storage-class local-path=local-path-immediate
  theseus plan --from eu --to us -n shop --selector app=shop -o json | jq '.objects[] | select(.action != "create")'
  theseus plan --from 10.0.0.5:7443 --to 10.1.0.7:7443 -n shop --image-registry quay.io/shop=registry.us.example/shop`,
    )
    .action(async (flags: AppFlags, command: Command) => {
      const { plan } = await planFromFlags(flags, command);
      print(flags.output, planReport(plan), () => formatPlan(plan));
      if (planErrors(plan).length > 0) process.exitCode = EXIT.failed;
    });

  appOptions(
    program
      .command("stage")
      .description("create the planned objects on the target (workloads at zero replicas), bind its claims; refuses a plan with errors"),
  )
    .option("--migration-id <id>", "the migration's id (default: a new one, printed)")
    .addHelpText(
      "after",
      `
Plans as \`theseus plan\` does, refuses when the plan has errors, then asks the target agent to create every object
that moves, in dependency order, labelled with the migration id: workloads at zero replicas (activation restores
them), CronJobs suspended; claims bound and readable by the agent. Re-running with the same id changes nothing.
Undo it with \`theseus unstage\` and the printed id. ${AGENTS_HELP}

Examples:
  theseus stage --from eu --to us -n shop --to-namespace shop-us --storage-class local-path=local-path-immediate
  theseus stage --from eu --to us -n shop --migration-id shop-1 -o json`,
    )
    .action(async (flags: AppFlags & { migrationId?: string }, command: Command) => {
      // The plan must know the id: what an earlier run of this migration staged is ours to keep, not a conflict.
      const migrationId = flags.migrationId ?? newMigrationId();
      const { plan, to, tls, signal, options } = await planFromFlags({ ...flags, migrationId }, command);
      const errors = planErrors(plan);
      if (errors.length > 0 && flags.output === "text") process.stderr.write(`${errors.flatMap(formatProblem).join("\n")}\n`);
      const result = await stagePlan({ to, plan, migrationId, onConflict: options.onConflict, tls, signal });
      print(flags.output, result, () =>
        `${formatStage(result, to.name, plan.target.namespace)}\nUndo with: theseus unstage --to ${flags.to} -n ${plan.target.namespace} --migration-id ${migrationId}\n`,
      );
    });

  program
    .command("unstage")
    .description("remove exactly what `theseus stage` created for a migration on the target (adopted objects stay)")
    .requiredOption("--to <agent>", "the target agent: a name, or HOST:PORT")
    .requiredOption("-n, --namespace <ns>", "the namespace staged on the target (stage's --to-namespace, or -n)")
    .requiredOption("--migration-id <id>", "the id `theseus stage` printed")
    .addOption(new Option("-o, --output <format>", "output format").choices(["text", "json", "yaml"]).default("text"))
    .addHelpText(
      "after",
      `
Deletes every object labelled with the migration that staging created (and the namespace, if staging created it),
strips the label from adopted ones, and waits until the deletions are done. Nothing that was there before is touched.

Example:
  theseus unstage --to us -n shop-us --migration-id 0b5c7c1e-5d8f-4a51-9a43-6c1f0f3a3e21`,
    )
    .action(async (flags: { to: string; namespace: string; migrationId: string; output: "text" | "json" | "yaml" }, command: Command) => {
      const namespace = validateNamespace(flags.namespace, "-n/--namespace");
      const migrationId = validateMigrationId(flags.migrationId);
      const to = await createAgentRegistry().resolve(flags.to);
      const tls = await coordinatorTls(globalOptions(command));
      const removed = await unstageMigration({ to, namespace, migrationId, tls, signal: interruptSignal() });
      print(flags.output, { migrationId, removed }, () => formatUnstage(removed, migrationId, to.name, namespace));
    });
}

async function planFromFlags(flags: AppFlags, command: Command) {
  // Flags first: a typo should not wait for the network.
  const { app, options } = await resolvePlanInput(flags);
  const registry = createAgentRegistry();
  const from = await registry.resolve(flags.from);
  const to = await registry.resolve(flags.to);
  const tls = await coordinatorTls(globalOptions(command));
  const signal = interruptSignal();
  const result: PlanResult = await createPlan({ from, to, app, options, tls, signal });
  return { ...result, from, to, tls, signal, options };
}

function print(format: "text" | "json" | "yaml", document: unknown, text: () => string): void {
  if (format === "json") process.stdout.write(`${JSON.stringify(document, null, 2)}\n`);
  else if (format === "yaml") process.stdout.write(stringify(document));
  else process.stdout.write(text());
}
