// The demo's two local clusters, each with its agent installed as a user installs it (the Helm chart, the agent a pod
// behind a NodePort): the control plane built first when this machine has never built it (the one slow step of a
// fresh machine, so it is announced with its cost), then `local up`'s code for each.
import { spawn } from "node:child_process";
import { join } from "node:path";
import type { Logger } from "../../common/index.js";
import { TheseusError, formatDuration } from "../../common/index.js";
import { controlPlaneBinaries, downCluster, kubernetesBinDir, repoRoot, upCluster } from "../../local-clusters/index.js";
import type { LocalCluster } from "../../local-clusters/index.js";
import { loadTlsMaterial } from "../certs/index.js";

const SETUP_SCRIPT = "scripts/install-system-deps.sh";

/**
 * Builds the local clusters' control plane unless it is there. The script's output goes to stderr, so that `--json`
 * keeps stdout to its one object.
 */
export async function ensureControlPlane(say: (line: string) => void, signal?: AbortSignal): Promise<void> {
  try {
    controlPlaneBinaries();
    return;
  } catch (error) {
    if (!(error instanceof TheseusError && error.code === "failed_precondition")) throw error;
  }
  say(`the local clusters' Kubernetes control plane is not built on this machine yet: building it once with ${SETUP_SCRIPT} (about 1 minute of apt and 5-9 minutes of compiling on 2 cores; cached in ${kubernetesBinDir()})`);
  const startedMs = Date.now();
  const child = spawn(join(repoRoot, SETUP_SCRIPT), [], { cwd: repoRoot, stdio: ["ignore", process.stderr, process.stderr], ...(signal === undefined ? {} : { signal }) });
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once("error", reject);
    child.once("exit", resolve);
  });
  if (code !== 0) {
    throw new TheseusError("failed_precondition", `${SETUP_SCRIPT} failed with exit code ${String(code)}`, { hint: `read its output above, fix what it says, then run ${SETUP_SCRIPT} again` });
  }
  controlPlaneBinaries();
  say(`built the control plane in ${formatDuration(Date.now() - startedMs)}; later runs reuse it`);
}

/**
 * How the demo's agents reach the app's claims: through mover pods, the path of network storage in real clusters
 * (the local clusters' PVs could be read directly; the demo shows the general path).
 */
export const DEMO_VOLUME_ACCESS = "mover";

/** `theseus local up NAME` for each name, one after the other (two first starts at once only slow each other down). */
export async function upDemoClusters(names: readonly string[], pkiDir: string, logger: Logger, signal?: AbortSignal): Promise<LocalCluster[]> {
  const clusters: LocalCluster[] = [];
  for (const name of names) {
    const tls = await loadTlsMaterial(pkiDir, { role: "agent", name });
    clusters.push(await upCluster(name, { agent: { mode: "chart", tls, volumeAccess: DEMO_VOLUME_ACCESS }, logger, ...(signal === undefined ? {} : { signal }) }));
  }
  return clusters;
}

/** Stops every process of the clusters and removes their state; never throws (it runs on the way out of a failure). */
export async function downDemoClusters(names: readonly string[], logger: Logger): Promise<void> {
  for (const name of names) {
    await downCluster(name).catch((error: unknown) => logger.warn({ cluster: name, err: error }, "could not take the demo cluster down"));
  }
}
