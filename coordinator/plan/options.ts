// What a user asks of a plan, as typed on the command line (or by the transaction later), validated once into
// app-model's fully defaulted PlanOptions and the selection of the application on the source.
import { readFile } from "node:fs/promises";
import { parseLabelSelector, parseRules } from "../../app-model/index.js";
import type { ConflictPolicy, PlanOptions, Rule } from "../../app-model/index.js";
import { TheseusError } from "../../common/index.js";
import { validateMigrationId } from "./report.js";

/** Raw inputs, as strings the user typed; repeatable flags as arrays. */
export interface PlanInput {
  readonly namespace?: string | undefined;
  readonly toNamespace?: string | undefined;
  readonly storageClass?: readonly string[] | undefined;
  readonly imageRegistry?: readonly string[] | undefined;
  readonly replicas?: readonly string[] | undefined;
  readonly routeHost?: readonly string[] | undefined;
  /** Path of a rules file (app-model's format, Velero-like resource modifiers). */
  readonly rules?: string | undefined;
  readonly selector?: string | undefined;
  readonly helmRelease?: string | undefined;
  readonly rewriteServiceDns?: boolean | undefined;
  readonly keepNodePorts?: boolean | undefined;
  readonly onConflict?: string | undefined;
  /** Staging's migration: objects on the target already labelled with it are ours, not conflicts. */
  readonly migrationId?: string | undefined;
}

/** Which objects of the source namespace make up the application (AgentService's AppSelector). */
export interface AppSelection {
  readonly namespace: string;
  /** "" = every object of the namespace. */
  readonly labelSelector: string;
  readonly helmRelease: string;
}

export interface ResolvedPlanInput {
  readonly app: AppSelection;
  readonly options: PlanOptions;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const KIND = /^[A-Z][A-Za-z0-9]*$/;

export async function resolvePlanInput(input: PlanInput): Promise<ResolvedPlanInput> {
  const namespace = validateNamespace(input.namespace, "-n/--namespace");
  const targetNamespace = input.toNamespace === undefined ? namespace : validateNamespace(input.toNamespace, "--to-namespace");
  if (input.selector !== undefined && input.helmRelease !== undefined) {
    throw new TheseusError("invalid_argument", "--selector and --helm-release both narrow the application; give one of them", {
      hint: "a Helm release's objects are selected by its annotations; add --selector only without --helm-release",
    });
  }
  if (input.selector !== undefined) parseLabelSelector(input.selector);
  if (input.helmRelease !== undefined && !DNS_SUBDOMAIN.test(input.helmRelease)) {
    throw new TheseusError("invalid_argument", `--helm-release "${input.helmRelease}" is not a Helm release name`, { hint: "see the releases with `helm list -n NAMESPACE`" });
  }
  const onConflict = input.onConflict ?? "fail";
  if (onConflict !== "fail" && onConflict !== "adopt") {
    throw new TheseusError("invalid_argument", `--on-conflict must be fail or adopt, not "${onConflict}"`, {
      hint: "fail refuses to stage over objects that exist on the target; adopt leaves them as they are and never deletes them",
    });
  }
  const storageClasses = pairs(input.storageClass, "--storage-class", "SRC=DST", "--storage-class local-path=fast-ssd", (value) =>
    DNS_SUBDOMAIN.test(value) ? undefined : `"${value}" is not a StorageClass name`,
  );
  const imageRegistries = pairs(input.imageRegistry, "--image-registry", "OLD=NEW", "--image-registry quay.io/shop=registry.us.example.com/shop", (value) =>
    /\s/.test(value) ? `"${value}" contains white space` : undefined,
  );
  const routeHosts = pairs(input.routeHost, "--route-host", "OLD=NEW", "--route-host apps.eu.example.com=apps.us.example.com", (value) =>
    DNS_SUBDOMAIN.test(value) ? undefined : `"${value}" is not a host name suffix`,
  );
  const replicas = new Map<string, number>();
  for (const [key, value] of pairs(input.replicas, "--replicas", "KIND/NAME=N", "--replicas Deployment/web=2", (value, side) => {
    if (side === "value") return /^\d{1,6}$/.test(value) ? undefined : `"${value}" is not a whole number of replicas`;
    const [kind, name, extra] = value.split("/");
    return kind !== undefined && name !== undefined && extra === undefined && KIND.test(kind) && DNS_SUBDOMAIN.test(name) ? undefined : `"${value}" is not KIND/NAME`;
  })) {
    replicas.set(key, Number(value));
  }
  const rules = input.rules === undefined ? [] : await readRules(input.rules);
  const options: PlanOptions = {
    sourceNamespace: namespace,
    targetNamespace,
    storageClasses,
    imageRegistries,
    replicas,
    routeHosts,
    rules,
    rewriteServiceDns: input.rewriteServiceDns === true,
    keepNodePorts: input.keepNodePorts === true,
    onConflict: onConflict satisfies ConflictPolicy,
    ...(input.migrationId === undefined ? {} : { migrationId: validateMigrationId(input.migrationId) }),
  };
  return { app: { namespace, labelSelector: input.selector ?? "", helmRelease: input.helmRelease ?? "" }, options };
}

export function validateNamespace(value: string | undefined, flag: string): string {
  if (value === undefined) throw new TheseusError("invalid_argument", `${flag} is required: the namespace of the application`, { hint: "for example -n shop" });
  if (!DNS_LABEL.test(value)) {
    throw new TheseusError("invalid_argument", `${flag} "${value}" is not a namespace name`, { hint: "namespaces are 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit" });
  }
  return value;
}

/** KEY=VALUE flags into a map; `check` says what is wrong with one side, or undefined. */
function pairs(
  values: readonly string[] | undefined,
  flag: string,
  shape: string,
  example: string,
  check: (text: string, side: "key" | "value") => string | undefined,
): Map<string, string> {
  const out = new Map<string, string>();
  for (const entry of values ?? []) {
    const eq = entry.indexOf("=");
    const key = entry.slice(0, eq);
    const value = entry.slice(eq + 1);
    const problem = eq <= 0 || value === "" ? `"${entry}" is not ${shape}` : (check(key, "key") ?? check(value, "value"));
    if (problem !== undefined) throw new TheseusError("invalid_argument", `${flag}: ${problem}`, { hint: `for example ${example}` });
    const previous = out.get(key);
    if (previous !== undefined && previous !== value) {
      throw new TheseusError("invalid_argument", `${flag} maps ${key} twice (to ${previous} and to ${value})`, { hint: "keep one of them" });
    }
    out.set(key, value);
  }
  return out;
}

async function readRules(path: string): Promise<Rule[]> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    throw new TheseusError("invalid_argument", `cannot read the rules file ${path}`, { cause: error, hint: "check the --rules path" });
  }
  return parseRules(text, path);
}
