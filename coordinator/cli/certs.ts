// `theseus certs`: the installation's CA and the agent and coordinator certificates.
import type { Command } from "commander";
import { TheseusError } from "../../common/index.js";
import { validateIdentityName } from "../../rpc/index.js";
import { writeFile } from "node:fs/promises";
import { DEFAULT_AGENT_SECRET, agentMaterialFor, agentSecretManifest, agentSecretYaml, applyAgentSecret, caPaths, initCertificateAuthority, issueToDirectory } from "../certs/index.js";
import { globalOptions } from "./context.js";

interface IssueFlags {
  cluster?: string;
  name?: string;
  dns: string[];
  ip: string[];
  days?: string;
  force?: boolean;
}

const collect = (value: string, all: string[]): string[] => [...all, value];

export function register(program: Command): void {
  const certs = program
    .command("certs")
    .description("create the installation's CA and the certificates of agents and coordinators")
    .addHelpText(
      "after",
      `
Every agent and coordinator proves who it is with a certificate from one CA. Identities live in the certificate
(URI SAN spiffe://theseus/agent/<cluster> or spiffe://theseus/coordinator/<name>), so agents may be reached through
any address. Files go to --pki-dir (default ~/.theseus/pki): ca.crt, ca.key, <role>-<name>.crt and .key.

Examples:
  theseus certs init
  theseus certs issue agent --cluster eu-1 --dns theseus-agent.theseus-system.svc
  theseus certs issue coordinator --name alice
  theseus certs secret --cluster eu-1 --namespace theseus-system --apply     # the Secret the Helm chart mounts`,
    );

  certs
    .command("init")
    .description("create the installation's CA (refuses to overwrite an existing one)")
    .option("--installation <name>", "a name shown in the CA's subject", "default")
    .option("--force", "replace an existing CA: every certificate it issued stops working")
    .action(async (flags: { installation: string; force?: boolean }, command: Command) => {
      const { pkiDir } = globalOptions(command);
      const paths = await initCertificateAuthority(pkiDir, { installation: flags.installation, force: flags.force === true });
      process.stdout.write(`created the CA: ${paths.caCert} (key ${paths.caKey}, keep it safe)\n`);
    });

  const issue = certs.command("issue").description("issue a certificate signed by the CA");
  const issueOptions = (command: Command): Command =>
    command
      .option("--dns <name>", "an extra DNS name for the certificate; repeatable", collect, [])
      .option("--ip <address>", "an extra IP address for the certificate; repeatable", collect, [])
      .option("--days <n>", "validity in days", "365")
      .option("--force", "replace an existing key and certificate of that identity");

  issueOptions(issue.command("agent").description("issue an agent certificate (server and client)").requiredOption("--cluster <name>", "the cluster the agent runs in")).action(
    async (flags: IssueFlags, command: Command) => issueAction("agent", flags.cluster, flags, command),
  );
  issueOptions(issue.command("coordinator").description("issue a coordinator certificate (client)").requiredOption("--name <name>", "who or what drives migrations, e.g. alice or ci")).action(
    async (flags: IssueFlags, command: Command) => issueAction("coordinator", flags.name, flags, command),
  );
  registerSecret(certs);
}

interface SecretFlags {
  cluster: string;
  namespace: string;
  name: string;
  output?: string;
  apply?: boolean;
  kubeconfig?: string;
  rotate?: boolean;
  days?: string;
}

function registerSecret(certs: Command): void {
  certs
    .command("secret")
    .description("write or apply the Kubernetes Secret with an agent's certificate, key and the CA, as the Helm chart mounts it")
    .requiredOption("--cluster <name>", "the cluster whose agent it is (issued into the PKI directory when missing)")
    .option("-n, --namespace <ns>", "the agent's namespace (the Helm release's)", "theseus-system")
    .option("--name <name>", "the Secret's name (the chart's tls.secretName; default for the release theseus-agent)", DEFAULT_AGENT_SECRET)
    .option("-o, --output <file>", "write the manifest to this file (mode 0600) instead of stdout")
    .option("--apply", "create or update the Secret in the cluster of --kubeconfig (or $KUBECONFIG, ~/.kube/config)")
    .option("--kubeconfig <file>", "the cluster to apply it to")
    .option("--rotate", "issue a new key and certificate first; the agent picks it up without a restart")
    .option("--days <n>", "validity in days of a newly issued certificate", "365")
    .addHelpText(
      "after",
      `
Examples:
  theseus certs secret --cluster eu-1 --apply --kubeconfig ~/.kube/eu-1.yaml
  theseus certs secret --cluster eu-1 -n theseus-system | kubectl apply -f -
  theseus certs secret --cluster eu-1 --rotate --apply       # rotation: the running agent reloads the files`,
    )
    .action(async (flags: SecretFlags, command: Command) => {
      const { pkiDir } = globalOptions(command);
      const cluster = validateIdentityName(flags.cluster, "cluster name");
      const namespace = validateIdentityName(flags.namespace, "namespace");
      const name = validateIdentityName(flags.name, "Secret name");
      const days = Number(flags.days ?? "365");
      if (!Number.isInteger(days) || days <= 0) throw new TheseusError("invalid_argument", `--days must be a positive whole number, not "${flags.days ?? ""}"`);
      if (flags.apply === true && flags.output !== undefined) throw new TheseusError("invalid_argument", "choose --apply or --output, not both");
      const { material, issued } = await agentMaterialFor(pkiDir, cluster, { rotate: flags.rotate === true, validityDays: days });
      if (issued) process.stderr.write(`issued agent "${cluster}" in ${pkiDir}\n`);
      const secret = agentSecretManifest(material, { cluster, namespace, name });
      if (flags.apply === true) {
        const done = await applyAgentSecret(secret, flags.kubeconfig);
        process.stdout.write(`${done} Secret ${namespace}/${name} for agent "${cluster}"\n`);
      } else if (flags.output !== undefined) {
        await writeFile(flags.output, agentSecretYaml(secret), { mode: 0o600 });
        process.stdout.write(`wrote Secret ${namespace}/${name} for agent "${cluster}" to ${flags.output}\n`);
      } else {
        process.stdout.write(agentSecretYaml(secret));
      }
    });
}

async function issueAction(role: "agent" | "coordinator", name: string | undefined, flags: IssueFlags, command: Command): Promise<void> {
  const { pkiDir } = globalOptions(command);
  const identityName = validateIdentityName(name ?? "", role === "agent" ? "cluster name" : "coordinator name");
  const days = Number(flags.days ?? "365");
  if (!Number.isInteger(days) || days <= 0) throw new TheseusError("invalid_argument", `--days must be a positive whole number, not "${flags.days ?? ""}"`);
  const paths = await issueToDirectory(pkiDir, { role, name: identityName }, { dnsNames: flags.dns, ipAddresses: flags.ip, validityDays: days, force: flags.force === true });
  process.stdout.write(`issued ${role} "${identityName}": ${paths.cert} (key ${paths.key}; CA ${caPaths(pkiDir).caCert})\n`);
}
