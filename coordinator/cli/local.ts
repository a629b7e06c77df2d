// The coordinator's part of `theseus local up|down`: the local clusters run an agent per cluster, but certificates and
// the agents registry are the coordinator's, so they come in through hooks (local-clusters never imports coordinator/).
import { access } from "node:fs/promises";
import { TheseusError } from "../../common/index.js";
import type { LocalCommandHooks } from "../../local-clusters/index.js";
import { createAgentRegistry } from "../agents/index.js";
import { caPaths, initCertificateAuthority, issueToDirectory, leafPaths, listCoordinatorNames, loadTlsMaterial } from "../certs/index.js";
import { globalOptions } from "./context.js";

/** The coordinator identity `local up` issues when the PKI directory has none (and no --as names one). */
const LOCAL_COORDINATOR = "local";

export function localCommandHooks(): LocalCommandHooks {
  return {
    async prepareAgent(name, command, how) {
      const { pkiDir, as } = globalOptions(command);
      if (!(await exists(caPaths(pkiDir).caCert))) await tolerateRace(initCertificateAuthority(pkiDir, { installation: "local" }));
      if (!(await exists(leafPaths(pkiDir, { role: "agent", name }).cert))) await tolerateRace(issueToDirectory(pkiDir, { role: "agent", name }));
      const coordinator = as ?? ((await listCoordinatorNames(pkiDir)).length === 0 ? LOCAL_COORDINATOR : undefined);
      if (coordinator !== undefined && !(await exists(leafPaths(pkiDir, { role: "coordinator", name: coordinator }).cert))) {
        await tolerateRace(issueToDirectory(pkiDir, { role: "coordinator", name: coordinator }));
      }
      if (how.mode === "process") return { mode: "process", pkiDir };
      // The chart mounts the material from a Secret, as `theseus certs secret --apply` writes it.
      return { mode: "chart", tls: await loadTlsMaterial(pkiDir, { role: "agent", name }), volumeAccess: how.volumeAccess };
    },
    async afterUp(cluster) {
      if (cluster.agentAddress === undefined) throw new TheseusError("internal", `local cluster ${cluster.name} came up without its agent`);
      const registry = createAgentRegistry();
      const before = await registry.get(cluster.name);
      await registry.add({ name: cluster.name, address: cluster.agentAddress, cluster: cluster.name, local: true }, { replace: true });
      const replaced = before !== undefined && !before.local && before.address !== cluster.agentAddress ? `, replacing the one at ${before.address}` : "";
      return `registered as agent "${cluster.name}"${replaced}`;
    },
    async afterDown(name) {
      // Only what `local up` registered: an agent the user added by hand under the same name stays.
      const registry = createAgentRegistry();
      if ((await registry.get(name))?.local === true) await registry.remove(name);
    },
  };
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

/** Two `local up` at once may both issue the same certificate; the loser finds it written and goes on. */
async function tolerateRace(work: Promise<unknown>): Promise<void> {
  try {
    await work;
  } catch (error) {
    if (!(error instanceof TheseusError && error.code === "already_exists")) throw error;
  }
}
