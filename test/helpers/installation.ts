// A throwaway installation for tests: certificates from a fresh CA and agents started in-process on 127.0.0.1:0.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startAgent } from "../../agent/index.js";
import type { Agent } from "../../agent/index.js";
import { resolveAgentOptions } from "../../agent/index.js";
import { createThrowawayPki } from "../../coordinator/index.js";
import type { ThrowawayPki } from "../../coordinator/index.js";

export interface TestInstallation {
  readonly pki: ThrowawayPki;
  readonly dir: string;
  startAgent(cluster: string, volumes: Record<string, string>): Promise<Agent>;
  cleanup(): Promise<void>;
}

export async function createTestInstallation(): Promise<TestInstallation> {
  const pki = await createThrowawayPki();
  const dir = await mkdtemp(join(tmpdir(), "theseus-test-"));
  const agents: Agent[] = [];
  return {
    pki,
    dir,
    async startAgent(cluster, volumes) {
      const options = resolveAgentOptions({
        clusterName: cluster,
        listen: "127.0.0.1:0",
        volumes,
        tlsCa: "unused",
        tlsCert: "unused",
        tlsKey: "unused",
        stateDir: join(dir, "state", cluster),
      });
      const agent = await startAgent(options, { tls: await pki.material({ role: "agent", name: cluster }) });
      agents.push(agent);
      return agent;
    },
    async cleanup() {
      await Promise.all(agents.map((a) => a.close(1000)));
      await rm(dir, { recursive: true, force: true });
    },
  };
}
