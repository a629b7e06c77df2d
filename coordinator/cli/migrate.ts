// `theseus migrate`, and the commands on a migration by its id: status, cutover, abort, resume, list, set-bandwidth,
// finish. Parse, call coordinator/migration, print; the transaction itself lives there.
import { spawn } from "node:child_process";
import { openSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline/promises";
import { Option } from "commander";
import type { Command } from "commander";
import { toJson } from "@bufbuild/protobuf";
import { stringify } from "yaml";
import { TheseusError, formatBytes, formatDuration, parseRate } from "../../common/index.js";
import { RoundStatsSchema, SyncProgressSchema } from "../../proto/gen/theseus/v1/agent_pb.js";
import type { TlsMaterial } from "../../rpc/index.js";
import { createAgentRegistry } from "../agents/index.js";
import {
  createMigration,
  finishMigration,
  followMigration,
  journalPath,
  listMigrations,
  migrationStatus,
  requestMigration,
  resumeMigration,
  setMigrationRate,
  startMigration,
} from "../migration/index.js";
import type { MigrateOptions, MigrationEvent, MigrationHandle, MigrationOutcome, MigrationStatusReport } from "../migration/index.js";
import { resolvePlanInput, validateMigrationId } from "../plan/index.js";
import { EXIT, coordinatorTls, globalOptions } from "./context.js";
import { createMigrationDisplay } from "./migration-display.js";
import { appOptions } from "./plan.js";
import type { AppFlags } from "./plan.js";

type Output = "text" | "json" | "yaml";

interface MigrateFlags extends AppFlags {
  mode: "move" | "copy";
  bandwidth: string;
  autoCutover?: boolean;
  maxDowntime: string;
  cutoverAt?: string;
  lease: string;
  readyTimeout: string;
  detach?: boolean;
  migrationId?: string;
}

const outputOption = (): Option => new Option("-o, --output <format>", "output format").choices(["text", "json", "yaml"]).default("text");

function theseusHome(): string {
  return process.env["THESEUS_HOME"] ?? join(homedir(), ".theseus");
}

export function register(program: Command): void {
  appOptions(program.command("migrate").description("move an application to another cluster, live: stage, pre-sync while it runs, cut over, commit or abort"))
    .addOption(new Option("--mode <mode>", "move retires the source after the cutover; copy leaves it running beside the clone").choices(["move", "copy"]).default("move"))
    .option("--bandwidth <rate>", "pre-sync bandwidth limit, e.g. 50MiB/s or 200Mbit/s (0 = unlimited)", "0")
    .option("--auto-cutover", "cut over on its own as soon as the predicted downtime fits --max-downtime")
    .option("--max-downtime <duration>", "the downtime --auto-cutover accepts, e.g. 3s or 1500ms", "3s")
    .option("--cutover-at <time>", "cut over at this time (ISO 8601, e.g. 2026-12-02T02:00:00Z), whatever the prediction")
    .option("--lease <duration>", "how long a quiesced source waits for this coordinator before it restores itself", "30s")
    .option("--ready-timeout <duration>", "how long the target may take to become ready after the commit; then it rolls back to the source if the target took no write", "5m")
    .option("--detach", "print the id and drive the migration in the background (follow with `theseus status ID -w`)")
    .option("--migration-id <id>", "the migration's id (default: a new one, printed first)")
    .addHelpText(
      "after",
      `
Prints the migration id first, plans and stages the target (workloads at zero replicas), starts pre-sync in the agents
(rounds run on their own, throttled, while the app keeps running) and follows it: a bar per volume, the rounds, the
predicted downtime. Without --auto-cutover or --cutover-at it waits for \`theseus cutover ID\`. The cutover prepares
both agents, quiesces the source, runs the final round, compares both digests and commits: the source first (the
commit point), then the target, which is activated and waited for. Anything failing before the commit point aborts:
the target's staging is removed and the source unquiesced. A target not ready within --ready-timeout is rolled back
to the source when it took no write (its workloads stopped, its volumes unchanged since the final round: it says
so); otherwise nothing is undone and the error says what happened. A move keeps the source scaled to zero until
\`theseus finish ID\` removes it; a copy unquiesces the source and the target runs as a clone. Every decision is journaled (THESEUS_HOME/migrations/ID)
before it is acted on; after a crash \`theseus resume ID\` carries on. Ctrl-C asks whether to abort or to detach.

Exit codes: 0 committed (or detached with --detach); 1 the migration ended aborted (the reason is printed: the plan
failed, a vote was no, pre-sync cannot converge, ...), or a step failed after the commit point; 2 bad usage or input;
3 an agent unreachable or refusing us; 4 integrity or protocol error; 130 cancelled.

Examples:
  theseus migrate --from eu --to us -n shop --auto-cutover --max-downtime 3s
  theseus migrate --from eu --to us -n shop --to-namespace shop-us --storage-class local-path=fast --bandwidth 50MiB/s
  theseus migrate --from eu --to us -n shop --mode copy --cutover-at 2026-12-02T02:00:00Z --detach`,
    )
    .action(async (flags: MigrateFlags, command: Command) => {
      const options = await migrateOptions(flags, command);
      if (flags.detach === true) {
        const spec = await createMigration(options);
        const pid = spawnDriver(spec.id, command);
        print(flags.output, { migrationId: spec.id, driverPid: pid }, () =>
          `migration ${spec.id}\ndriving it in the background (process ${pid}, log ${journalPath(options.home, spec.id).replace(/journal\.jsonl$/, "driver.log")})\nfollow it with: theseus status ${spec.id} -w\n`,
        );
        return;
      }
      const detach = new AbortController();
      const handle = await startMigration({ ...options, signal: detach.signal });
      await follow(handle, flags.output, detach);
    });

  program
    .command("resume")
    .description("drive a journaled migration again (after the coordinator crashed or detached): carry on, abort, or roll forward")
    .argument("<id>", "the migration id")
    .addOption(outputOption())
    .addHelpText(
      "after",
      `
Reads the journal: before the cutover it reattaches to pre-sync (the agents kept it running); a cutover interrupted
before its decision is aborted (the source unquiesced); one interrupted after it is rolled forward to the commit.

Exit codes: 0 the migration committed; 1 it ended aborted (the reason is printed) or cannot go on; 2 unknown id;
3 an agent unreachable; 130 cancelled (detached: the agents carry on).`,
    )
    .action(async (id: string, flags: { output: Output }, command: Command) => {
      const detach = new AbortController();
      const handle = await resumeMigration(validateMigrationId(id), { tls: await tls(command), home: theseusHome(), signal: detach.signal });
      await follow(handle, flags.output, detach);
    });

  program
    .command("status")
    .description("a migration's phase, timeline, rounds and participants; -w follows it live")
    .argument("<id>", "the migration id")
    .option("-w, --watch", "follow it until it ends (Ctrl-C stops following, never the migration)")
    .addOption(outputOption())
    .action(async (id: string, flags: { watch?: boolean; output: Output }, command: Command) => {
      const material = await tls(command);
      const home = theseusHome();
      if (flags.watch === true) {
        const stop = new AbortController();
        process.once("SIGINT", () => stop.abort());
        await showEvents(followMigration(validateMigrationId(id), { home, tls: material, signal: stop.signal }), flags.output);
      }
      const report = await migrationStatus(validateMigrationId(id), { home, tls: material });
      print(flags.output, report, () => formatStatus(report));
    });

  program
    .command("cutover")
    .description("cut a pre-syncing migration over now, whatever the prediction says")
    .argument("<id>", "the migration id")
    .addOption(outputOption())
    .addHelpText("after", "\nExit codes: 0 the migration committed; 1 it ended aborted (the reason is printed); 2 unknown id or nothing to cut over.")
    .action(async (id: string, flags: { output: Output }, command: Command) => {
      await request(validateMigrationId(id), { request: "cutover" }, flags.output, command);
    });

  program
    .command("abort")
    .description("abort a migration before its commit point: the target's staging removed, the source as it was")
    .argument("<id>", "the migration id")
    .option("--reason <text>", "why (journaled, and shown by status)", "aborted by the user")
    .addOption(outputOption())
    .addHelpText(
      "after",
      `
An abort that did what was asked is not an error of the command: it exits 0 when the migration ends aborted (also
when it was aborted already). Exit codes: 0 aborted; 1 it could not be aborted (past its commit decision: it only goes
forward) or the abort could not finish (run it again once the agents are reachable); 2 unknown id; 3 an agent
unreachable; 130 cancelled.`,
    )
    .action(async (id: string, flags: { reason: string; output: Output }, command: Command) => {
      await request(validateMigrationId(id), { request: "abort", reason: flags.reason }, flags.output, command);
    });

  program
    .command("list")
    .description("the migrations journaled under THESEUS_HOME, oldest first")
    .addOption(outputOption())
    .action(async (flags: { output: Output }) => {
      const all = await listMigrations(theseusHome());
      print(flags.output, all, () =>
        all.length === 0
          ? "no migrations (start one with `theseus migrate`)\n"
          : all
              .map((m) => `${m.id}  ${m.phase.padEnd(17)} ${m.from} -> ${m.to}  -n ${m.namespace}  ${m.mode}  ${new Date(m.createdAtMs).toISOString()}${m.driverPid === undefined ? "" : `  (driven by ${m.driverPid})`}${m.reason === undefined ? "" : `\n    ${m.reason}`}\n`)
              .join(""),
      );
    });

  program
    .command("set-bandwidth")
    .description("change a migration's pre-sync bandwidth limit while it runs")
    .argument("<id>", "the migration id")
    .argument("<rate>", "e.g. 50MiB/s, 200Mbit/s, or 0 for unlimited")
    .addOption(outputOption())
    .action(async (id: string, rate: string, flags: { output: Output }, command: Command) => {
      const bytesPerSecond = parseRate(rate);
      await setMigrationRate(validateMigrationId(id), bytesPerSecond, { home: theseusHome(), tls: await tls(command) });
      print(flags.output, { migrationId: id, bandwidthBytesPerSecond: bytesPerSecond }, () => `migration ${id}: bandwidth ${bytesPerSecond === 0 ? "unlimited" : `${formatBytes(bytesPerSecond)}/s`}\n`);
    });

  program
    .command("finish")
    .description("retire a committed move's source (its objects and claims removed) and close the migration on both agents")
    .argument("<id>", "the migration id")
    .addOption(outputOption())
    .action(async (id: string, flags: { output: Output }, command: Command) => {
      const view = await finishMigration(validateMigrationId(id), { home: theseusHome(), tls: await tls(command) });
      print(flags.output, { migrationId: id, phase: view.state.phase }, () => `migration ${id}: ${view.state.phase}\n`);
    });
}

async function tls(command: Command): Promise<TlsMaterial> {
  return coordinatorTls(globalOptions(command));
}

async function migrateOptions(flags: MigrateFlags, command: Command): Promise<Omit<MigrateOptions, "signal">> {
  // Flags first: a typo should not wait for the network.
  await resolvePlanInput(flags);
  const bandwidthBytesPerSecond = parseRate(flags.bandwidth);
  const maxDowntimeMs = parseDuration(flags.maxDowntime, "--max-downtime");
  const leaseMs = parseDuration(flags.lease, "--lease");
  const readyTimeoutMs = parseDuration(flags.readyTimeout, "--ready-timeout");
  const cutoverAtMs = flags.cutoverAt === undefined ? undefined : parseTime(flags.cutoverAt);
  const registry = createAgentRegistry();
  const { from: fromName, to: toName, mode, autoCutover, output: _output, bandwidth: _b, maxDowntime: _m, cutoverAt: _c, lease: _l, readyTimeout: _r, detach: _d, migrationId, ...plan } = flags;
  return {
    from: await registry.resolve(fromName),
    to: await registry.resolve(toName),
    plan,
    mode,
    bandwidthBytesPerSecond,
    autoCutover: autoCutover === true,
    maxDowntimeMs,
    ...(cutoverAtMs === undefined ? {} : { cutoverAtMs }),
    leaseMs,
    readyTimeoutMs,
    ...(migrationId === undefined ? {} : { migrationId }),
    tls: await tls(command),
    home: theseusHome(),
  };
}

/** "3s", "1500ms", "2m", "1h", or a bare number of milliseconds. */
export function parseDuration(text: string, flag: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(text);
  if (match === null) throw new TheseusError("invalid_argument", `${flag} "${text}" is not a duration`, { hint: "write a number with ms, s, m or h: 1500ms, 3s, 2m" });
  const factor = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(match[2] ?? "ms") as "ms" | "s" | "m" | "h"];
  return Math.round(Number(match[1]) * factor);
}

function parseTime(text: string): number {
  const ms = Date.parse(text);
  if (Number.isNaN(ms)) throw new TheseusError("invalid_argument", `--cutover-at "${text}" is not a time`, { hint: "write it in ISO 8601 with its zone, e.g. 2026-12-02T02:00:00Z" });
  return ms;
}

/** `--detach`: the same CLI, resuming the migration in a process of its own, its output in a log beside the journal. */
function spawnDriver(id: string, command: Command): number {
  const global = command.optsWithGlobals<{ pkiDir?: string; as?: string }>();
  const log = openSync(journalPath(theseusHome(), id).replace(/journal\.jsonl$/, "driver.log"), "a", 0o600);
  const script = process.argv[1];
  if (script === undefined) throw new TheseusError("internal", "cannot tell which script runs the CLI", { hint: "run it as `theseus` or `node dist/coordinator/main.js`" });
  const child = spawn(
    process.execPath,
    [script, ...(global.pkiDir === undefined ? [] : ["--pki-dir", global.pkiDir]), ...(global.as === undefined ? [] : ["--as", global.as]), "resume", id],
    { detached: true, stdio: ["ignore", log, log], env: process.env },
  );
  child.unref();
  if (child.pid === undefined) throw new TheseusError("internal", `could not start the background driver of migration ${id}`, { hint: `run \`theseus resume ${id}\` yourself` });
  return child.pid;
}

async function request(
  id: string,
  what: { readonly request: "cutover" } | { readonly request: "abort"; readonly reason: string },
  output: Output,
  command: Command,
): Promise<void> {
  const detach = new AbortController();
  const home = theseusHome();
  const material = await tls(command);
  // What the command asked for is what success means: an abort succeeds when the migration ends aborted.
  const wanted = what.request === "abort" ? "aborted" : "committed";
  const answer = await requestMigration(id, what, { tls: material, home, signal: detach.signal });
  if ("alreadyAborted" in answer) {
    print(output, { migrationId: id, phase: "aborted", reason: answer.alreadyAborted }, () => `migration ${id} was aborted already: ${answer.alreadyAborted}\n`);
    return;
  }
  if ("handle" in answer) {
    await follow(answer.handle, output, detach, wanted);
    return;
  }
  if (output === "text") process.stdout.write(`asked process ${answer.driverPid}, which drives migration ${id}, to ${what.request}; following it (Ctrl-C stops following)\n`);
  const stop = new AbortController();
  process.once("SIGINT", () => stop.abort());
  await showEvents(followMigration(id, { home, tls: material, signal: stop.signal }), output);
  const report = await migrationStatus(id, { home, tls: material });
  if (output !== "text") print(output, report, () => "");
  else process.stdout.write(formatStatus(report));
  if (stop.signal.aborted) return; // stopped following: the driver carries on, nothing is known yet
  process.exitCode = exitForPhase(report.phase, wanted);
}

/** 0 when the migration ended as the command asked (committed for migrate, resume and cutover; aborted for abort). */
function exitForPhase(phase: string, wanted: "committed" | "aborted"): number {
  const ended = phase === "finished" ? "committed" : phase;
  return ended === wanted ? EXIT.ok : EXIT.failed;
}

/** Shows a driver's events until its outcome; Ctrl-C asks to abort or detach (without a terminal: detaches). */
async function follow(handle: MigrationHandle, output: Output, detach: AbortController, wanted: "committed" | "aborted" = "committed"): Promise<void> {
  if (output === "text") process.stdout.write(`migration ${handle.id}\n`);
  else process.stdout.write(`${JSON.stringify({ migrationId: handle.id })}\n`);
  const display = output === "text" ? createMigrationDisplay(process.stdout) : undefined;
  const onInterrupt = (): void => {
    process.once("SIGINT", () => process.exit(EXIT.cancelled));
    void decideOnInterrupt(handle, detach, (text) => (display === undefined ? process.stderr.write(`${text}\n`) : display.say(text)));
  };
  process.once("SIGINT", onInterrupt);
  try {
    const showing = (async () => {
      for await (const event of handle.events) {
        if (display !== undefined) display.show(event);
        else process.stdout.write(`${JSON.stringify(eventJson(event))}\n`);
      }
    })();
    let outcome: MigrationOutcome;
    try {
      outcome = await handle.outcome;
    } finally {
      await showing;
      display?.stop();
    }
    if (output === "text") process.stdout.write(formatOutcome(outcome));
    else process.stdout.write(`${JSON.stringify({ outcome: outcomeJson(outcome) })}\n`);
    process.exitCode = exitForPhase(outcome.outcome, wanted);
  } finally {
    process.removeListener("SIGINT", onInterrupt);
  }
}

async function decideOnInterrupt(handle: MigrationHandle, detach: AbortController, say: (text: string) => void): Promise<void> {
  const detachNow = (why: string): void => {
    say(`${why}: detaching. The agents carry on; resume with \`theseus resume ${handle.id}\` (Ctrl-C again exits at once)`);
    detach.abort(new TheseusError("cancelled", "detached by the user"));
  };
  if (process.stdin.isTTY !== true) {
    detachNow("interrupted without a terminal to ask on");
    return;
  }
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    const answer = (await rl.question(`\nAbort migration ${handle.id}, or detach and leave it running? [a]bort / [d]etach: `)).trim().toLowerCase();
    if (answer.startsWith("a")) {
      say("aborting…");
      await handle.abort("aborted by the user (Ctrl-C)").catch((error: unknown) => say(TheseusError.from(error).message));
    } else {
      detachNow("as asked");
    }
  } finally {
    rl.close();
  }
}

async function showEvents(events: AsyncIterable<MigrationEvent>, output: Output): Promise<void> {
  const display = output === "text" ? createMigrationDisplay(process.stdout) : undefined;
  try {
    for await (const event of events) {
      if (display !== undefined) display.show(event);
      else process.stdout.write(`${JSON.stringify(eventJson(event))}\n`);
    }
  } finally {
    display?.stop();
  }
}

/** Events and outcomes as plain JSON: protobuf messages in their canonical JSON form (64-bit numbers, base64 digests). */
function eventJson(event: MigrationEvent): unknown {
  switch (event.type) {
    case "round":
      return { ...event, round: toJson(RoundStatsSchema, event.round) };
    case "progress":
      return { ...event, progress: toJson(SyncProgressSchema, event.progress) };
    default:
      return event;
  }
}

function outcomeJson(outcome: MigrationOutcome): unknown {
  return { ...outcome, rounds: outcome.rounds.map((r) => ({ volume: r.volume, round: toJson(RoundStatsSchema, r.round) })) };
}

function formatOutcome(outcome: MigrationOutcome): string {
  const lines = [
    outcome.outcome === "committed" ? `migration ${outcome.id} committed: the application runs in the target` : `migration ${outcome.id} aborted: ${outcome.reason ?? ""}`,
    "timeline:",
    ...outcome.timeline.map((t) => `  ${t.phase.padEnd(18)} ${formatDuration(t.durationMs)}`),
    `rounds: ${outcome.rounds.length}`,
    ...(outcome.predictedDowntimeMs === undefined && outcome.measuredDowntimeMs === undefined
      ? []
      : [`downtime: predicted ${outcome.predictedDowntimeMs === undefined ? "-" : formatDuration(outcome.predictedDowntimeMs)}, measured ${outcome.measuredDowntimeMs === undefined ? "-" : formatDuration(outcome.measuredDowntimeMs)}`]),
  ];
  return `${lines.join("\n")}\n`;
}

function formatStatus(report: MigrationStatusReport): string {
  const participant = (name: string, p: MigrationStatusReport["participants"]["source"]): string =>
    "unreachable" in p ? `  ${name}: unreachable (${p.unreachable})` : `  ${name}: ${String((p.status as { phase?: string }).phase ?? "?")}`;
  const lines = [
    `migration ${report.id}: ${report.phase}${report.reason === undefined ? "" : ` (${report.reason})`}`,
    `  ${report.from} -> ${report.to}, -n ${report.namespace}, ${report.mode}, bandwidth ${report.bandwidthBytesPerSecond === 0 ? "unlimited" : `${formatBytes(report.bandwidthBytesPerSecond)}/s`}`,
    `  ${report.driverPid === undefined ? "no coordinator drives it now" : `driven by process ${report.driverPid}`}`,
    "timeline:",
    ...report.timeline.map((t) => `  ${t.phase.padEnd(18)} ${new Date(t.startedAtMs).toISOString()}  ${formatDuration(t.durationMs)}`),
    `rounds: ${report.rounds.length}`,
    ...(report.predictedDowntimeMs === undefined ? [] : [`predicted downtime: ${formatDuration(report.predictedDowntimeMs)}`]),
    ...(report.measuredDowntimeMs === undefined ? [] : [`measured downtime: ${formatDuration(report.measuredDowntimeMs)}`]),
    "participants:",
    participant("source", report.participants.source),
    participant("target", report.participants.target),
  ];
  return `${lines.join("\n")}\n`;
}

function print(format: Output, document: unknown, text: () => string): void {
  if (format === "json") process.stdout.write(`${JSON.stringify(document, null, 2)}\n`);
  else if (format === "yaml") process.stdout.write(stringify(document));
  else process.stdout.write(text());
}
