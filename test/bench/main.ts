// `npm run bench`: Theseus against the data path the peer tools deploy, side by side in one run (see README.md).
import { existsSync } from "node:fs";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { describeError, formatBytes, parseRate, sleep, TheseusError } from "../../common/index.js";
import { CONTENDER_IDS, createContenders, DEFAULT_THESEUS_CLI, PHASES } from "./contenders.js";
import type { Contender, ContenderId, RoundResult, WireMeter } from "./contenders.js";
import { DATASET_NAMES, DEFAULT_SEED, ensureDataset } from "./datasets.js";
import type { Dataset, DatasetName } from "./datasets.js";
import { check, GNU_TIME, run } from "./exec.js";
import { mutateTree } from "./mutate.js";
import type { MutationReport } from "./mutate.js";
import { createLink, NETNS_ENV, runInNamespace } from "./netns.js";
import type { Link } from "./netns.js";
import { checkTargets, formatLoad, formatReport, summarize } from "./report.js";
import type { Sample } from "./report.js";

const USAGE = `usage: npm run bench -- [options]

  --dataset NAME      mixed, smallfiles, bigfile, final (1 GiB database + 20k small files: the cutover's round);
                      repeat or comma-separate (default: all four)
  --contender NAME    ${CONTENDER_IDS.join(", ")}; repeat or comma-separate (default: all)
  --runs N            rounds of each phase per contender; medians are quoted (default 3, --quick 1)
  --quick             1/10 sizes, 1 run, no settling: a smoke check in under two minutes
  --scale X           dataset size factor (default 1, --quick 0.1)
  --seed N            dataset and mutation seed (default ${DEFAULT_SEED})
  --settle SECONDS    pause after deleting trees, before a timed round (default 30, --quick 0)
  --shaped-dataset D  dataset for the shaped-link case (default mixed, or the first one chosen)
  --link-rate RATE    shaped link rate (default 200Mbit/s)
  --no-shaped         skip the shaped-link case
  --no-verify         do not compare each target with the source after the rounds (untimed; on by default)
  --no-netns          do not isolate in a network namespace (wire bytes then come from the tools themselves)
  --dir DIR           cache and work directory (default \$THESEUS_BENCH_DIR or /tmp/theseus-bench)
  --theseus-cli FILE  the Theseus CLI (default dist/coordinator/main.js)
  --json FILE         also write every sample, the medians and the target verdicts to FILE
  --report FILE       print the report of a run saved with --json again (runs nothing)
`;

/** Debian packages the benchmark needs (the lead's CI must install them too). */
const PACKAGES: ReadonlyArray<{ binary: string; pkg: string }> = [
  { binary: "rsync", pkg: "rsync" },
  { binary: "stunnel", pkg: "stunnel4" },
  { binary: "openssl", pkg: "openssl" },
  { binary: "ip", pkg: "iproute2" },
  { binary: "tc", pkg: "iproute2" },
  { binary: GNU_TIME, pkg: "time" },
];

interface Options {
  readonly datasets: DatasetName[];
  readonly contenders: ContenderId[];
  readonly runs: number;
  readonly quick: boolean;
  readonly scale: number;
  readonly seed: number;
  readonly settleMs: number;
  readonly shapedDataset: DatasetName | undefined;
  readonly linkRateBitsPerSecond: number;
  readonly netns: boolean;
  readonly verify: boolean;
  readonly dir: string;
  readonly theseusCli: string;
  readonly json: string | undefined;
  readonly report: string | undefined;
}

function parseOptions(argv: readonly string[]): Options {
  try {
    return readOptions(argv);
  } catch (error) {
    if (error instanceof TheseusError) throw error;
    throw new TheseusError("invalid_argument", error instanceof Error ? error.message : String(error), {
      hint: "npm run bench -- --help lists the options",
    });
  }
}

function readOptions(argv: readonly string[]): Options {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      dataset: { type: "string", multiple: true },
      contender: { type: "string", multiple: true },
      runs: { type: "string" },
      quick: { type: "boolean" },
      scale: { type: "string" },
      seed: { type: "string" },
      settle: { type: "string" },
      "shaped-dataset": { type: "string" },
      "link-rate": { type: "string" },
      "no-shaped": { type: "boolean" },
      "no-netns": { type: "boolean" },
      "no-verify": { type: "boolean" },
      dir: { type: "string" },
      "theseus-cli": { type: "string" },
      json: { type: "string" },
      report: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help === true) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const list = <T extends string>(given: string[] | undefined, allowed: readonly T[], what: string): T[] => {
    if (given === undefined) return [...allowed];
    const names = given.flatMap((g) => g.split(",")).map((n) => n.trim()).filter(Boolean);
    for (const name of names) {
      if (!(allowed as readonly string[]).includes(name)) {
        throw new TheseusError("invalid_argument", `unknown ${what} "${name}"`, { hint: `choose from ${allowed.join(", ")}` });
      }
    }
    return names as T[];
  };
  const number = (text: string | undefined, fallback: number, what: string): number => {
    if (text === undefined) return fallback;
    const n = Number(text);
    if (!Number.isFinite(n) || n < 0) throw new TheseusError("invalid_argument", `${what} must be a non-negative number, not "${text}"`);
    return n;
  };
  const quick = values.quick === true;
  const datasets = list(values.dataset, DATASET_NAMES, "dataset");
  const shaped = values["shaped-dataset"];
  const shapedDataset = values["no-shaped"] === true ? undefined
    : shaped !== undefined ? list([shaped], DATASET_NAMES, "dataset")[0]
    : datasets.includes("mixed") ? "mixed" : datasets[0];
  return {
    datasets,
    contenders: list(values.contender, CONTENDER_IDS, "contender"),
    runs: Math.max(1, Math.round(number(values.runs, quick ? 1 : 3, "--runs"))),
    quick,
    scale: number(values.scale, quick ? 0.1 : 1, "--scale"),
    seed: Math.round(number(values.seed, DEFAULT_SEED, "--seed")),
    settleMs: number(values.settle, quick ? 0 : 30, "--settle") * 1000,
    shapedDataset,
    linkRateBitsPerSecond: parseRate(values["link-rate"] ?? "200Mbit/s") * 8,
    netns: values["no-netns"] !== true,
    verify: values["no-verify"] !== true,
    dir: path.resolve(values.dir ?? process.env["THESEUS_BENCH_DIR"] ?? "/tmp/theseus-bench"),
    theseusCli: path.resolve(values["theseus-cli"] ?? DEFAULT_THESEUS_CLI),
    json: values.json === undefined ? undefined : path.resolve(values.json),
    report: values.report === undefined ? undefined : path.resolve(values.report),
  };
}

const log = (line: string): void => {
  process.stderr.write(`${line}\n`);
};

async function ensurePackages(): Promise<void> {
  const missing = [...new Set(PACKAGES.filter((p) => !onPath(p.binary)).map((p) => p.pkg))];
  if (missing.length === 0) return;
  log(`installing ${missing.join(" ")} (apt-get)`);
  const installed = await run("apt-get", ["install", "-y", ...missing], { env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" } });
  if (installed.code !== 0) {
    throw new TheseusError("failed_precondition", `the benchmark needs ${missing.join(", ")}`, {
      hint: `install them: apt-get install -y ${missing.join(" ")}`,
    });
  }
}

function onPath(binary: string): boolean {
  if (binary.startsWith("/")) return existsSync(binary);
  return (process.env["PATH"] ?? "").split(":").some((dir) => existsSync(path.join(dir, binary)));
}

/** The benchmark proper, run inside the private namespace (or without one, with `--no-netns` or where none can be made). */
async function bench(options: Options, isolated: boolean): Promise<number> {
  const workRoot = path.join(options.dir, "work");
  await mkdir(workRoot, { recursive: true });
  const { contenders, skipped } = await createContenders(options.contenders, {
    workDir: workRoot, theseusCli: options.theseusCli, isolated,
  });
  for (const s of skipped) log(`${s.id}: ${s.reason}`);
  const link = isolated ? await createLink() : undefined;
  const wire: WireMeter = link === undefined ? () => Promise.resolve(undefined) : () => link.bytes();
  if (!isolated) log("not isolated: wire bytes are what each tool reports (rsync --stats, Theseus wireBytes)");

  const samples: Sample[] = [];
  const failures: string[] = [];
  const failedPairs = new Set<string>();
  const mutations: Array<{ dataset: DatasetName; run: number; report: MutationReport }> = [];
  const datasets: Dataset[] = [];
  for (const name of options.datasets) {
    const failed = new Set<ContenderId>();
    const dataset = await ensureDataset(path.join(options.dir), name, options.scale, options.seed, log);
    datasets.push(dataset);
    const dir = path.join(workRoot, name);
    await rm(dir, { recursive: true, force: true });
    const src = path.join(dir, "src");
    await mkdir(src, { recursive: true });
    // The source is a copy: the mutation changes it in place, as an application would, and the cache stays pristine.
    check("copying the dataset", await run("cp", ["-a", `${dataset.tree}/.`, src]));
    log(`${name}: ${dataset.files} files, ${formatBytes(dataset.bytes)}; ${options.runs} run(s) of ${contenders.map((c) => c.id).join(", ")}`);

    for (let r = 1; r <= options.runs; r++) {
      await settle(options, `before ${name} run ${r}`);
      // Rotating the order spreads cache and position effects over the contenders instead of always favouring one.
      const order = contenders.map((_, i) => contenders[(i + r - 1) % contenders.length] as Contender);
      const runDir = path.join(dir, `run-${r}`);
      let mutation: MutationReport | undefined;
      for (const phase of PHASES) {
        if (phase === "incremental" || phase === "lost-cache") {
          // The lost-cache round gets a mutation of its own (another seed), so that it has something to find.
          mutation = await mutateTree(src, dataset, phase === "incremental" ? r : LOST_CACHE_MUTATION + r);
          mutations.push({ dataset: name, run: r, report: mutation });
          log(`${name} run ${r}: mutation changed ${formatBytes(mutation.bytesChanged)}`);
        }
        for (const contender of order.filter((c) => c.phases.includes(phase) && !failed.has(c.id))) {
          const loadAverage = os.loadavg()[0] ?? 0;
          const heldBack = await link?.overlimits();
          let result: RoundResult;
          try {
            result = await round(contender, src, runDir, link, wire, phase === "lost-cache");
          } catch (error) {
            // One broken contender (an engine under development) must not cost the others' figures.
            failures.push(`${name} run ${r} ${phase} ${contender.id}: ${describeError(error)}`);
            failed.add(contender.id);
            log(`${name} run ${r} ${phase.padEnd(11)} ${contender.id.padEnd(14)} FAILED: ${describeError(error)}`);
            continue;
          }
          if (link !== undefined && (await link.overlimits()) !== heldBack) {
            log(`WARNING: the wire counter held packets back during an unshaped round (${contender.id}): its timing is skewed`);
          }
          samples.push({ dataset: name, case: phase, contender: contender.id, run: r, loadAverage,
            bytesChanged: phase === "incremental" || phase === "lost-cache" ? mutation?.bytesChanged : phase === "no-change" ? 0 : undefined, result });
          log(`${name} run ${r} ${phase.padEnd(11)} ${contender.id.padEnd(14)} ${describe(result)}`);
        }
      }
      for (const contender of contenders) await contender.release?.();
      if (options.verify) {
        // Untimed: a fast round is worth nothing unless the target equals the source, content and metadata.
        for (const contender of order.filter((c) => c.phases.includes("no-change") && !failed.has(c.id))) {
          const difference = await compareTrees(src, path.join(runDir, contender.id));
          if (difference !== undefined) {
            failures.push(`${name} run ${r} ${contender.id}: the target differs from the source after the rounds:\n${difference}`);
            failed.add(contender.id);
          }
        }
        log(`${name} run ${r}: targets compared with the source`);
      }
      await rm(runDir, { recursive: true, force: true });
    }

    for (const id of failed) failedPairs.add(`${name}/${id}`);
    if (options.shapedDataset === name) {
      samples.push(...await shapedCase(options, link, contenders.filter((c) => !failed.has(c.id)), src, dir, wire, failures));
      for (const contender of contenders) await contender.release?.();
    }
    await rm(dir, { recursive: true, force: true });
  }

  const summaries = summarize(samples);
  const checks = checkTargets(summaries, options.linkRateBitsPerSecond, failedPairs, options.scale);
  const labels = new Map(contenders.map((c) => [c.id, c.label] as const));
  process.stdout.write(`${formatReport(summaries, checks, labels)}\n\n${formatLoad(samples, os.cpus().length)}\n`);
  if (options.quick) process.stdout.write("\n(--quick: 1/10 sizes and one run; a smoke check, not the figures to quote)\n");
  for (const s of skipped) process.stdout.write(`\n${s.id}: ${s.reason}\n`);
  for (const f of failures) process.stdout.write(`\nFAILED ${f}\n`);

  if (options.json !== undefined) {
    await writeFile(options.json, JSON.stringify({
      startedAt: startedAt.toISOString(),
      machine: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, kernel: os.release(), memoryBytes: os.totalmem() },
      options, isolated, skipped,
      datasets: datasets.map((d) => ({ name: d.layout.name, scale: d.layout.scale, seed: d.seed, files: d.files, bytes: d.bytes })),
      mutations, samples, summaries, targets: checks, failures, failedPairs: [...failedPairs],
    }, null, 2) + "\n");
    log(`results written to ${options.json}`);
  }
  return failures.length === 0 ? 0 : 1;
}

/** Describes how `dst` differs from `src` (rsync's itemised dry run with full checksums), or undefined if it does not. */
async function compareTrees(src: string, dst: string): Promise<string | undefined> {
  const compared = check("comparing trees", await run("rsync", [
    "--dry-run", "--checksum", "--archive", "--hard-links", "--numeric-ids", "--delete", "--itemize-changes", `${src}/`, `${dst}/`,
  ]));
  const lines = compared.stdout.split("\n").filter((l) => l.trim() !== "");
  if (lines.length === 0) return undefined;
  return `${lines.length} entries differ (rsync --itemize-changes), first: ${lines.slice(0, 5).join("; ")}`;
}

/** Mutation rounds of the lost-cache phase are numbered from here, apart from the incremental phase's. */
const LOST_CACHE_MUTATION = 1000;

async function round(contender: Contender, src: string, runDir: string, link: Link | undefined, wire: WireMeter, loseSourceState = false): Promise<RoundResult> {
  await link?.select(contender.wire);
  const dst = path.join(runDir, contender.id);
  const workDir = path.join(runDir, `${contender.id}.work`);
  await mkdir(workDir, { recursive: true });
  const input = { src, dst, workDir, stateDir: path.join(runDir, `${contender.id}.state`) };
  if (loseSourceState) await contender.loseSourceState?.(input);
  // Untimed: write back what the previous round left dirty, so that no contender pays for another's writeback.
  check("sync", await run("sync", []));
  return contender.round(input, wire);
}

async function shapedCase(
  options: Options,
  link: Link | undefined,
  contenders: readonly Contender[],
  src: string,
  dir: string,
  wire: WireMeter,
  failures: string[],
): Promise<Sample[]> {
  const name = options.shapedDataset as DatasetName;
  if (link === undefined) {
    log("shaped link: skipped, it needs the benchmark's own network namespace (see the reason above)");
    return [];
  }
  const shaped = contenders.filter((c) => c.id === "theseus" || c.id === "rsync-tls-zstd");
  if (shaped.length === 0) return [];
  const samples: Sample[] = [];
  for (let r = 1; r <= options.runs; r++) {
    await settle(options, `before shaped run ${r}`);
    const runDir = path.join(dir, `shaped-${r}`);
    await link.shape(options.linkRateBitsPerSecond);
    try {
      for (const contender of r % 2 === 1 ? shaped : [...shaped].reverse()) {
        const loadAverage = os.loadavg()[0] ?? 0;
        let result: RoundResult;
        try {
          result = await round(contender, src, runDir, link, wire);
        } catch (error) {
          failures.push(`${name} shaped run ${r} ${contender.id}: ${describeError(error)}`);
          continue;
        }
        samples.push({ dataset: name, case: "shaped", contender: contender.id, run: r, loadAverage, bytesChanged: undefined, result });
        log(`${name} run ${r} shaped      ${contender.id.padEnd(14)} ${describe(result)}`);
      }
    } finally {
      await link.shape(undefined);
    }
    await rm(runDir, { recursive: true, force: true });
  }
  return samples;
}

/** Creating many files soon after deleting many is several times slower here (issue 4's hygiene facts): wait first. */
async function settle(options: Options, why: string): Promise<void> {
  if (options.settleMs <= 0) return;
  check("sync", await run("sync", []));
  log(`settling ${options.settleMs / 1000} s ${why}`);
  await sleep(options.settleMs);
}

function describe(result: RoundResult): string {
  const wireBytes = result.wireBytes ?? result.toolWireBytes;
  return `${(result.wallMs / 1000).toFixed(2)} s, wire ${wireBytes === undefined ? "-" : formatBytes(wireBytes)}`;
}

const startedAt = new Date();

/** Reprints a saved run with this version's report (new columns, corrected targets) without running anything. */
async function reprint(file: string): Promise<number> {
  const saved = JSON.parse(await readFile(file, "utf8")) as {
    options: { linkRateBitsPerSecond: number; scale?: number };
    samples: Sample[];
    failures?: string[];
    failedPairs?: string[];
  };
  const summaries = summarize(saved.samples);
  const checks = checkTargets(summaries, saved.options.linkRateBitsPerSecond, new Set(saved.failedPairs ?? []), saved.options.scale ?? 1);
  const labels = new Map(CONTENDER_IDS.map((id) => [id, id] as const));
  process.stdout.write(`${formatReport(summaries, checks, labels)}\n\n${formatLoad(saved.samples, os.cpus().length)}\n`);
  for (const f of saved.failures ?? []) process.stdout.write(`\nFAILED ${f}\n`);
  return 0;
}

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  const options = parseOptions(argv);
  if (options.report !== undefined) return reprint(options.report);
  const inside = process.env[NETNS_ENV] !== undefined;
  if (inside) return bench(options, true);
  await ensurePackages();
  if (options.netns) {
    const outcome = await runInNamespace(process.argv.slice(1));
    if ("code" in outcome) return outcome.code;
    log(`no private network namespace (${outcome.unavailable}); running without one`);
  }
  return bench(options, false);
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`bench: ${describeError(error)}\n`);
    process.exit(1);
  },
);
