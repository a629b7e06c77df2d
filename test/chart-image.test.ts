// The agent image's Dockerfile, checked without docker (no engine runs here, hadolint is not available): its stages,
// that the runtime stage is small, non-root and holds only dist/ and production node_modules, that what the build
// stage copies exists and is not excluded by .dockerignore, and that it agrees with the chart (ports, entrypoint).
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import test from "ava";
import { minimatch } from "minimatch";
import { parse as parseYaml } from "yaml";
import { repoRoot } from "../local-clusters/index.js";
import { CHART_DIR } from "./helpers/chart.js";

interface Instruction {
  readonly op: string;
  readonly args: string;
  readonly line: number;
}
interface Stage {
  readonly from: string;
  readonly name: string | undefined;
  readonly instructions: Instruction[];
}

/** Dockerfile instructions with continuation lines joined and comments dropped, grouped by stage. */
function parseDockerfile(text: string): Stage[] {
  const stages: Stage[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const start = i;
    let line = lines[i] ?? "";
    if (/^\s*(#|$)/.test(line)) continue;
    while (line.endsWith("\\") && i + 1 < lines.length) line = `${line.slice(0, -1)} ${lines[++i] ?? ""}`;
    const match = /^\s*([A-Za-z]+)\s+(.*)$/.exec(line);
    if (match === null) throw new Error(`Dockerfile line ${start + 1} is not an instruction: ${line}`);
    const op = (match[1] ?? "").toUpperCase();
    const args = (match[2] ?? "").trim();
    if (op === "FROM") {
      const [image = "", as, name] = args.split(/\s+/);
      stages.push({ from: image, name: as?.toUpperCase() === "AS" ? name : undefined, instructions: [] });
      continue;
    }
    const stage = stages.at(-1);
    if (stage === undefined) throw new Error(`Dockerfile line ${start + 1}: ${op} before the first FROM`);
    stage.instructions.push({ op, args, line: start + 1 });
  }
  return stages;
}

const dockerfile = parseDockerfile(readFileSync(join(repoRoot, "Dockerfile"), "utf8"));
const ignore = readFileSync(join(repoRoot, ".dockerignore"), "utf8")
  .split("\n")
  .map((l) => l.trim())
  .filter((l) => l !== "" && !l.startsWith("#"));
const ignored = (path: string): boolean => ignore.some((pattern) => minimatch(path, pattern, { dot: true }) || path.startsWith(`${pattern.replace(/\/$/, "")}/`));
const build = dockerfile[0];
const runtime = dockerfile.at(-1);
const ops = (stage: Stage | undefined, op: string): Instruction[] => stage?.instructions.filter((i) => i.op === op) ?? [];

test("two stages: a build stage, and a small distroless or slim runtime", (t) => {
  t.true(dockerfile.length >= 2);
  t.is(build?.name, "build");
  t.regex(runtime?.from ?? "", /^gcr\.io\/distroless\/nodejs20-debian12(:nonroot)?$|-slim$|-alpine$/);
  t.regex(build?.from ?? "", /^node:20\b/, "the build runs on the Node the project supports (engines: >=20.12)");
});

test("the runtime stage runs as a numeric non-root user, without a shell form entrypoint", (t) => {
  const users = ops(runtime, "USER");
  t.is(users.length, 1);
  const [uid = "", gid = ""] = (users[0]?.args ?? "").split(":");
  t.regex(uid, /^\d+$/, "numeric, so that runAsNonRoot can check it");
  t.not(Number(uid), 0);
  t.not(Number(gid), 0);
  const entrypoint = ops(runtime, "ENTRYPOINT");
  t.is(entrypoint.length, 1);
  const argv = JSON.parse(entrypoint[0]?.args ?? "null") as string[];
  t.true(Array.isArray(argv), "exec form: SIGTERM reaches node, not a shell");
  t.is(argv.at(-1), "/app/dist/agent/main.js");
  t.true(existsSync(join(repoRoot, "dist", "agent", "main.js")), "the entrypoint is what the build produces");
  t.is(ops(runtime, "RUN").length, 0, "nothing runs in the runtime stage (distroless has no shell)");
});

test("the runtime stage holds only dist/, production node_modules and package.json, all from the build stage", (t) => {
  const copies = ops(runtime, "COPY");
  t.true(copies.length > 0);
  const sources: string[] = [];
  for (const copy of copies) {
    const match = /^--from=(\S+)\s+(\S+)\s+(\S+)$/.exec(copy.args);
    t.truthy(match, `COPY at line ${copy.line} copies from the build stage: ${copy.args}`);
    t.is(match?.[1], "build");
    sources.push(match?.[2] ?? "");
  }
  t.deepEqual(sources.sort(), ["/src/dist", "/src/node_modules", "/src/package.json"]);
  t.is(ops(runtime, "ADD").length, 0);
  // node_modules is pruned to production dependencies after the compile, in the same stage it is copied from.
  const runs = ops(build, "RUN").map((r) => r.args);
  const compile = runs.findIndex((r) => r.includes("tsc -p tsconfig.json"));
  const prune = runs.findIndex((r) => /npm prune --omit=dev|npm ci --omit=dev/.test(r));
  t.true(compile >= 0 && prune >= compile, runs.join("\n"));
  t.true(runs.some((r) => /^npm ci\b/.test(r)), "the lockfile decides the versions");
});

test("what the build stage copies exists, is not excluded by .dockerignore, and covers what the agent imports", (t) => {
  const copied: string[] = [];
  for (const copy of ops(build, "COPY")) {
    const parts = copy.args.split(/\s+/);
    for (const source of parts.slice(0, -1)) {
      t.true(existsSync(join(repoRoot, source)), `${source} (line ${copy.line}) exists`);
      t.false(ignored(source), `${source} is not in .dockerignore`);
      copied.push(source);
    }
  }
  for (const needed of ["package.json", "package-lock.json", "tsconfig.json", "agent", "common", "rpc", "kube", "app-model", "proto/gen"]) t.true(copied.includes(needed), needed);
  // The context stays small: no dependencies, build output, VCS or tests go into it.
  for (const path of ["node_modules", "dist", ".git", "test"]) t.true(ignored(path), `${path} is ignored`);
});

test("the image exposes the ports the chart's values use", (t) => {
  const values = parseYaml(readFileSync(join(CHART_DIR, "values.yaml"), "utf8")) as { agent: { port: number; healthPort: number }; image: { repository: string } };
  const exposed = ops(runtime, "EXPOSE").flatMap((e) => e.args.split(/\s+/)).map(Number);
  t.true(exposed.includes(values.agent.port));
  t.true(exposed.includes(values.agent.healthPort));
});
