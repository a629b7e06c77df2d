// Files of killed rounds. A round writes its scratch files in the volume's state directory under names that carry its
// owner (`spool.`, `applied.`, `index.new.` + pid and process start time) and removes them when it ends; a kill -9
// leaves them there for good, and every killed round added more (issue 14, defect 7). They are swept at agent start
// (every volume's state directory) and at round start (that round's), when their owner is dead: its pid gone, or
// alive with another start time (the pid was reused). The start time makes a reused pid harmless, and an owner that
// is this very process (a round that failed before it could clean up) is dead too: one round per state directory and
// process is enforced before this runs. Half-written `*.tmp` files (written, then renamed into place) are swept as well.
import fs from "node:fs";
import path from "node:path";
import type { Logger } from "../../common/index.js";

const SCRATCH = /^(?:spool|applied|index\.new)\.(\d+)(?:-(\d+))?$/;

/** The suffix naming this process in scratch file names: pid and start time, so a reused pid is told apart. */
export function ownerTag(): string {
  const start = startTicks(process.pid);
  return start === undefined ? String(process.pid) : `${process.pid}-${start}`;
}

const OWN_TAG = ownerTag();

/** Removes the scratch files of dead owners in one volume's state directory (and its blocks/ and torn/). */
export function sweepLeftovers(stateDir: string, logger?: Logger): number {
  let removed = 0;
  const remove = (file: string): void => {
    try {
      fs.rmSync(file, { force: true });
      removed++;
    } catch (e) {
      logger?.warn({ file, err: (e as Error).message }, "could not remove a killed round's file");
    }
  };
  for (const name of namesOf(stateDir)) {
    const m = SCRATCH.exec(name);
    if (m !== null) {
      if (!ownerAlive(Number(m[1]), m[2] === undefined ? undefined : Number(m[2]))) remove(path.join(stateDir, name));
    } else if (name.endsWith(".tmp")) remove(path.join(stateDir, name));
  }
  for (const sub of ["blocks", "torn"]) {
    for (const name of namesOf(path.join(stateDir, sub))) if (name.endsWith(".tmp")) remove(path.join(stateDir, sub, name));
  }
  if (removed > 0) logger?.info({ stateDir, removed }, "removed files of killed rounds");
  return removed;
}

/** At agent start: every volume's state directory of both roles under the agent's state directory. */
export function sweepAllLeftovers(agentStateDir: string, logger?: Logger): number {
  let removed = 0;
  for (const role of ["source", "target"]) {
    const dir = path.join(agentStateDir, "sync", role);
    for (const volume of namesOf(dir)) removed += sweepLeftovers(path.join(dir, volume), logger);
  }
  return removed;
}

function namesOf(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

function ownerAlive(pid: number, start: number | undefined): boolean {
  // This process: its one round on this state directory is the caller, so anything of ours here is a leftover.
  if (`${pid}${start === undefined ? "" : `-${start}`}` === OWN_TAG || pid === process.pid) return false;
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM"; // alive, another user's
  }
  if (start === undefined) return true; // an old name without a start time: trust the pid
  return startTicks(pid) === start;
}

/** Field 22 of /proc/PID/stat: the process's start time in clock ticks since boot (undefined off Linux). */
function startTicks(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) may contain spaces and parentheses: fields are counted after the last ")".
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const v = Number(fields[19]);
    return Number.isSafeInteger(v) ? v : undefined;
  } catch {
    return undefined;
  }
}
