// One driver per migration: a pid file beside the journal. Two coordinators driving one migration would each act on
// decisions the other never journaled; a dead driver's file is stale and taken over (resume after a crash).
import { open, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { TheseusError, systemErrorCode } from "../../common/index.js";
import { migrationsDir } from "./journal.js";

export interface DriverLock {
  release(): Promise<void>;
}

function lockPath(home: string, id: string): string {
  return join(migrationsDir(home), id, "driver.pid");
}

/** The pid of the live process driving the migration, if any. */
export async function liveDriver(home: string, id: string): Promise<number | undefined> {
  let text: string;
  try {
    text = await readFile(lockPath(home, id), "utf8");
  } catch (error) {
    if (systemErrorCode(error) === "ENOENT") return undefined;
    throw TheseusError.from(error);
  }
  const pid = Number(text.trim());
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  try {
    process.kill(pid, 0);
    return pid;
  } catch (error) {
    // EPERM: alive, but someone else's.
    return systemErrorCode(error) === "EPERM" ? pid : undefined;
  }
}

export async function acquireDriverLock(home: string, id: string): Promise<DriverLock> {
  const path = lockPath(home, id);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const handle = await open(path, "wx", 0o600);
      await handle.writeFile(`${process.pid}\n`);
      await handle.close();
      return { release: () => rm(path, { force: true }) };
    } catch (error) {
      if (systemErrorCode(error) !== "EEXIST") throw TheseusError.from(error);
      const pid = await liveDriver(home, id);
      if (pid !== undefined && pid !== process.pid) {
        throw new TheseusError("failed_precondition", `migration ${id} is being driven by process ${pid}`, {
          hint: `follow it with \`theseus status ${id} -w\`; \`theseus cutover|abort ${id}\` ask that process`,
        });
      }
      await rm(path, { force: true });
    }
  }
  throw new TheseusError("internal", `cannot take the driver lock of migration ${id}`, { hint: "another process races for it; retry" });
}
