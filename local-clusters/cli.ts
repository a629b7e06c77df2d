// `theseus local up|down|list|openshift`: developer commands for local clusters, registered into the theseus CLI by
// the coordinator with hooks that give each cluster its agent (certificates, registration); local-clusters/main.ts is
// a stand-alone entry without an agent. The local clusters never issue certificates or know the coordinator's config.
import type { Command } from "commander";
import { TheseusError, createLogger } from "../common/index.js";
import type { LocalAgentOptions } from "./agent.js";
import { downCluster, getCluster, listClusters, upCluster } from "./cluster.js";
import type { LocalCluster } from "./cluster.js";
import { KNOWN_IMAGES } from "./images.js";
import { installOpenShiftKinds } from "./openshift.js";
import { BUILD_SCRIPT, clustersRoot } from "./paths.js";
import { STORAGE_CLASS_IMMEDIATE, STORAGE_CLASS_WAIT } from "./provisioner.js";

/** What the coordinator adds to `local up` and `local down`: the cluster's agent. */
export interface LocalCommandHooks {
  /** Before `up` starts the agent: makes its certificates exist and says how to run it with them. */
  prepareAgent(name: string, command: Command, how: AgentHow): Promise<LocalAgentOptions>;
  /** After `up`: e.g. registers the agent under the cluster's name; returns a line to show the user. */
  afterUp(cluster: LocalCluster, command: Command): Promise<string>;
  /** After `down` removed a cluster. */
  afterDown(name: string, command: Command): Promise<void>;
}

/** How `local up` runs the cluster's agent: `--agent` and, for the chart, `--volume-access`. */
export interface AgentHow {
  readonly mode: "chart" | "process";
  readonly volumeAccess: "auto" | "direct" | "mover";
}

const AGENT_MODES = ["chart", "process"] as const;
const VOLUME_ACCESS = ["auto", "direct", "mover"] as const;

function agentHowOf(opts: { agent: string; volumeAccess: string }): AgentHow {
  const mode = AGENT_MODES.find((m) => m === opts.agent);
  if (mode === undefined) throw new TheseusError("invalid_argument", `--agent ${opts.agent} is not a way to run the agent`, { hint: "use --agent chart (the Helm chart, as in a real cluster) or --agent process (a local process the tests can kill by pid)" });
  const volumeAccess = VOLUME_ACCESS.find((v) => v === opts.volumeAccess);
  if (volumeAccess === undefined) throw new TheseusError("invalid_argument", `--volume-access ${opts.volumeAccess} is not one of ${VOLUME_ACCESS.join(", ")}`);
  return { mode, volumeAccess };
}

export function registerLocalCommands(program: Command, hooks?: LocalCommandHooks): Command {
  const local = program
    .command("local")
    .description("run local Kubernetes clusters (real control plane, emulated kubelet) for demos and tests")
    .addHelpText(
      "after",
      `
Each cluster runs etcd, kube-apiserver, kube-controller-manager and kube-scheduler (v1.20.2) on 127.0.0.1 with
its own ports, CA and service CIDR, plus a node daemon that emulates the kubelet: pods of known images run as local
processes, each with its own loopback pod IP (127.N.X.Y). State lives in ${clustersRoot()}/NAME.${
        hooks === undefined
          ? ""
          : `
Each cluster also runs its Theseus agent (a local process with the cluster's kubeconfig) on 127.0.0.1, registered
as an agent of the same name, so that \`theseus plan --from source --to target -n NS\` works right after two ups.`
      }
The control-plane binaries come from ${BUILD_SCRIPT} (first run: about 5-7 minutes of compiling).

Examples:
  $ theseus local up source                  # start (or reuse) cluster "source"
  $ theseus local up target --nodes 2        # a second, independent cluster with two nodes
  $ theseus plan --from source --to target -n shop
  $ export KUBECONFIG=$(theseus local up source --print-kubeconfig)
  $ theseus local list
  $ theseus local down source`,
    );

  local
    .command("up")
    .argument("<name>", "cluster name: lower-case letters, digits and dashes")
    .option("--nodes <n>", "number of emulated nodes for a new cluster", "1")
    .option("--openshift", "also install the Route and DeploymentConfig CRDs (OpenShift kinds)")
    .option("--print-kubeconfig", "print only the kubeconfig path (for scripts)")
    .option("--agent <how>", "how the agent runs: chart (Helm, a pod behind a NodePort) or process", "chart")
    .option("--volume-access <mode>", "chart only: how the agent reaches claims: auto (directly where it can), direct, or mover (always a mover pod)", "auto")
    .description("start a local cluster, or reuse it if it runs (restarting components that died)")
    .addHelpText(
      "after",
      `
StorageClasses: ${STORAGE_CLASS_WAIT} (default, WaitForFirstConsumer) and ${STORAGE_CLASS_IMMEDIATE} (Immediate);
PVs are directories under the cluster's pv/ directory.
Known images (any tag): ${KNOWN_IMAGES.map((k) => k.repository).join(", ")}.

Examples:
  $ theseus local up source
  $ theseus local up ocp --openshift
  $ theseus local up fast --agent process     # the agent as a local process (no Helm)
  $ theseus local up nfs-like --volume-access mover   # every claim through a mover pod
  $ kubectl --kubeconfig ~/.theseus/clusters/source/kubeconfig get nodes`,
    )
    .action(async (name: string, opts: { nodes: string; openshift?: boolean; printKubeconfig?: boolean; agent: string; volumeAccess: string }, command: Command) => {
      const logger = createLogger({ name: "theseus", level: opts.printKubeconfig === true ? "warn" : "info" });
      const how = agentHowOf(opts);
      const agent = hooks === undefined ? {} : { agent: await hooks.prepareAgent(name, command, how) };
      const cluster = await upCluster(name, { nodes: Number(opts.nodes), logger, ...agent });
      if (opts.openshift === true) await installOpenShiftKinds(cluster.kubeconfigPath);
      const registered = hooks === undefined ? undefined : await hooks.afterUp(cluster, command);
      if (opts.printKubeconfig === true) {
        console.log(cluster.kubeconfigPath);
        return;
      }
      console.log(`cluster ${cluster.name} is up
  API server:  ${cluster.apiServerUrl}
  kubeconfig:  ${cluster.kubeconfigPath}
  nodes:       ${cluster.nodes.join(", ")}
  services:    ${cluster.serviceCidr}   pod IPs: ${cluster.podIpPrefix}.x.y
  state:       ${cluster.dataDir}${cluster.agentAddress === undefined ? "" : `\n  agent:       ${cluster.agentAddress}${registered === undefined ? "" : ` (${registered})`}`}
Try: kubectl --kubeconfig ${cluster.kubeconfigPath} get nodes`);
    });

  local
    .command("down")
    .argument("<name>", "cluster name")
    .description("stop every process of a local cluster (its agent, pods with their grace period) and delete its state")
    .addHelpText("after", "\nExample:\n  $ theseus local down source")
    .action(async (name: string, _opts: unknown, command: Command) => {
      const existed = await downCluster(name);
      await hooks?.afterDown(name, command);
      console.log(existed ? `cluster ${name} is down and its state is removed` : `no local cluster named ${name}`);
    });

  local
    .command("list")
    .option("--json", "print JSON")
    .description("list local clusters and whether their processes run")
    .addHelpText("after", "\nExamples:\n  $ theseus local list\n  $ theseus local list --json | jq '.[].kubeconfigPath'")
    .action(async (opts: { json?: boolean }) => {
      const clusters = await listClusters();
      if (opts.json === true) {
        console.log(JSON.stringify(clusters, null, 2));
        return;
      }
      if (clusters.length === 0) {
        console.log("no local clusters; start one with: theseus local up NAME");
        return;
      }
      const rows = clusters.map((c) => [c.name, c.status, c.apiServerUrl, c.agent?.address ?? "-", String(c.nodes.length), c.serviceCidr, c.kubeconfigPath]);
      const header = ["NAME", "STATUS", "API SERVER", "AGENT", "NODES", "SERVICE CIDR", "KUBECONFIG"];
      const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
      for (const r of [header, ...rows]) console.log(r.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join("  ").trimEnd());
      for (const c of clusters.filter((x) => x.status !== "running")) {
        const dead = [...Object.entries(c.components), ...(c.agent === undefined ? [] : [["agent", c.agent.running] as const])].filter(([, alive]) => !alive).map(([n]) => n);
        console.log(`\n${c.name}: not running: ${dead.join(", ")}; restart with: theseus local up ${c.name}`);
      }
    });

  local
    .command("openshift")
    .argument("<name>", "cluster name")
    .description("install the OpenShift kinds (Route, DeploymentConfig CRDs) into a running local cluster")
    .action(async (name: string) => {
      const cluster = await getCluster(name);
      if (cluster === undefined) {
        console.error(`no local cluster named ${name}; start it with: theseus local up ${name}`);
        process.exitCode = 1;
        return;
      }
      await installOpenShiftKinds(cluster.kubeconfigPath);
      console.log(`Route and DeploymentConfig kinds installed in ${name}`);
    });
  return local;
}
