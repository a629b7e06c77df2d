// The agent's certificate as the Kubernetes Secret the Helm chart mounts (keys ca.crt, tls.crt, tls.key, the layout
// cert-manager writes too, so the chart reads both alike). Written as a manifest, or applied through a kubeconfig:
// created, or replaced in place when it exists, which is how a rotation reaches a running agent (the kubelet updates
// the mounted files and the agent reloads them).
import { KubeConfig } from "@kubernetes/client-node";
import { stringify } from "yaml";
import { TheseusError } from "../../common/index.js";
import { createKubeObjects, createKubeRest, loadKubeConfig } from "../../kube/index.js";
import type { TlsMaterial } from "../../rpc/index.js";
import { issueToDirectory, loadTlsMaterial } from "./store.js";

/** The chart's default: the release `theseus-agent` names its Secret `theseus-agent-tls`. */
export const DEFAULT_AGENT_SECRET = "theseus-agent-tls";

export interface AgentSecretOptions {
  readonly cluster: string;
  readonly namespace: string;
  readonly name: string;
}

export interface AgentSecret {
  readonly apiVersion: "v1";
  readonly kind: "Secret";
  readonly metadata: { name: string; namespace: string; labels: Record<string, string> };
  readonly type: "kubernetes.io/tls";
  readonly data: { "ca.crt": string; "tls.crt": string; "tls.key": string };
}

export function agentSecretManifest(material: TlsMaterial, options: AgentSecretOptions): AgentSecret {
  const b64 = (text: string): string => Buffer.from(text).toString("base64");
  return {
    apiVersion: "v1",
    kind: "Secret",
    metadata: {
      name: options.name,
      namespace: options.namespace,
      labels: { "app.kubernetes.io/part-of": "theseus", "theseus.io/agent-cluster": options.cluster },
    },
    type: "kubernetes.io/tls",
    data: { "ca.crt": b64(material.caPem), "tls.crt": b64(material.certPem), "tls.key": b64(material.keyPem) },
  };
}

export function agentSecretYaml(secret: AgentSecret): string {
  return `# The TLS material of the Theseus agent of cluster ${secret.metadata.labels["theseus.io/agent-cluster"] ?? ""}: keep this file as secret as its key.\n${stringify(secret)}`;
}

/**
 * The agent's material from the PKI directory: its certificate when it has one, else a new one issued there;
 * `rotate` issues a new key and certificate in any case (the old stays valid until it expires).
 */
export async function agentMaterialFor(pkiDir: string, cluster: string, options: { readonly rotate?: boolean; readonly validityDays?: number } = {}): Promise<{ material: TlsMaterial; issued: boolean }> {
  const identity = { role: "agent", name: cluster } as const;
  if (options.rotate !== true) {
    try {
      return { material: await loadTlsMaterial(pkiDir, identity), issued: false };
    } catch (error) {
      if (!(error instanceof TheseusError && error.code === "not_found")) throw error;
    }
  }
  await issueToDirectory(pkiDir, identity, { force: options.rotate === true, ...(options.validityDays === undefined ? {} : { validityDays: options.validityDays }) });
  return { material: await loadTlsMaterial(pkiDir, identity), issued: true };
}

/** Creates the Secret, or replaces its data when it exists. Returns what was done. */
export async function applyAgentSecret(secret: AgentSecret, kubeconfigPath: string | undefined, signal?: AbortSignal): Promise<"created" | "updated"> {
  let kc: KubeConfig;
  if (kubeconfigPath !== undefined) {
    kc = loadKubeConfig(kubeconfigPath);
  } else {
    kc = new KubeConfig();
    kc.loadFromDefault();
  }
  const objects = createKubeObjects(createKubeRest(kc));
  const ref = { apiVersion: "v1", kind: "Secret", namespace: secret.metadata.namespace, name: secret.metadata.name };
  const existing = await objects.get(ref, signal);
  if (existing === undefined) {
    await objects.create(secret as unknown as Parameters<typeof objects.create>[0], signal);
    return "created";
  }
  if (existing["type"] !== undefined && existing["type"] !== secret.type) {
    throw new TheseusError("already_exists", `Secret ${ref.namespace}/${ref.name} exists with type ${JSON.stringify(existing["type"])}, not ${secret.type}`, {
      hint: "choose another --name, or delete that Secret if it is a leftover",
    });
  }
  await objects.mergePatch(ref, { metadata: { labels: secret.metadata.labels }, data: secret.data }, signal);
  return "updated";
}
