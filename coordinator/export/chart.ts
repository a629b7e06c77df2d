// The chart writer: the app's sanitised objects as a Helm chart whose templates take the values of values.ts. Each
// object is written as YAML with its slots (and its namespace) replaced by template expressions. Strings are data, never
// template code: one holding "{{" (a ConfigMap with its own templates, say) is emitted as base64 that the template
// decodes, so Helm renders it unchanged.
import { stringify } from "yaml";
import type { KubeObject } from "../../app-model/index.js";
import { TheseusError } from "../../common/index.js";
import { defaultValues, setAt, slotsOf } from "./values.js";
import type { ChartValues, Slot } from "./values.js";

/** The namespace the chart's objects are planned into: replaced by the namespace value wherever it occurs. */
export const NAMESPACE_PLACEHOLDER = "theseus-fat-chart-namespace";

export interface ChartFile {
  /** Relative to the chart's directory. */
  readonly path: string;
  readonly content: string;
}

export interface ChartInput {
  readonly name: string;
  readonly sourceCluster: string;
  readonly sourceNamespace: string;
  readonly exportedAt: string;
  /** The objects as planned into NAMESPACE_PLACEHOLDER (the Namespace itself is left to Helm). */
  readonly objects: readonly KubeObject[];
  readonly withData: boolean;
  readonly quiesced: boolean;
  readonly claims: readonly string[];
}

const HELPERS = `{{/* Written by theseus export. The namespace: the namespace value, else the release's. */}}
{{- define "fatchart.namespace" -}}
{{- .Values.namespace | default .Release.Namespace -}}
{{- end -}}

{{/* An image with the longest matching prefix of imageRegistries replaced (as theseus plan --image-registry). */}}
{{- define "fatchart.image" -}}
{{- $root := index . 0 -}}
{{- $image := index . 1 -}}
{{- $best := "" -}}
{{- $to := "" -}}
{{- range $prefix, $replacement := $root.Values.imageRegistries -}}
{{- $p := trimSuffix "/" $prefix -}}
{{- if and (or (eq $image $p) (hasPrefix (print $p "/") $image)) (gt (len $p) (len $best)) -}}
{{- $best = $p -}}
{{- $to = trimSuffix "/" $replacement -}}
{{- end -}}
{{- end -}}
{{- if eq $best "" -}}{{- $image -}}{{- else -}}{{- print $to (trimPrefix $best $image) -}}{{- end -}}
{{- end -}}

{{/* CPU in millicores times resourceScale, rounded up. */}}
{{- define "fatchart.cpu" -}}
{{- $root := index . 0 -}}
{{- printf "%dm" (int64 (ceil (mulf (index . 1) $root.Values.resourceScale))) -}}
{{- end -}}

{{/* Bytes times resourceScale, rounded up. */}}
{{- define "fatchart.bytes" -}}
{{- $root := index . 0 -}}
{{- printf "%d" (int64 (ceil (mulf (index . 1) $root.Values.resourceScale))) -}}
{{- end -}}
`;

const goString = (s: string): string => JSON.stringify(s);
const b64 = (s: string): string => `(b64dec ${goString(Buffer.from(s, "utf8").toString("base64"))})`;

/** A template that renders `value` (a string) with every placeholder replaced by the namespace. */
function stringExpression(value: string): string {
  const parts = value.split(NAMESPACE_PLACEHOLDER);
  const pieces = parts.flatMap((part, i) => [...(part === "" ? [] : [b64(part)]), ...(i < parts.length - 1 ? ['(include "fatchart.namespace" $)'] : [])]);
  return `{{ print ${pieces.join(" ")} | quote }}`;
}

function slotExpression(slot: Slot): string {
  switch (slot.type) {
    case "storageClass":
      return `{{ index $.Values.storageClasses ${goString(slot.key)} | quote }}`;
    case "image":
      return `{{ include "fatchart.image" (list $ ${goString(slot.image)}) | quote }}`;
    case "replicas":
      return `{{ index $.Values.replicas ${goString(slot.key)} }}`;
    case "host":
      return `{{ index $.Values.hosts ${goString(slot.key)} | quote }}`;
    case "cpu":
      return `{{ include "fatchart.cpu" (list $ ${slot.millicores}) | quote }}`;
    case "bytes":
      return `{{ include "fatchart.bytes" (list $ ${slot.bytes}) | quote }}`;
  }
}

/** One object as a template. */
export function objectTemplate(object: KubeObject): string {
  const copy = structuredClone(object);
  const expressions = new Map<string, string>();
  const marker = (expression: string): string => {
    const m = `__theseus_fat_chart_${expressions.size}__`;
    expressions.set(m, expression);
    return m;
  };
  for (const slot of slotsOf(copy)) setAt(slot.holder, slot.at, marker(slotExpression(slot)));
  const visit = (node: unknown): unknown => {
    if (typeof node === "string") {
      if (expressions.has(node)) return node;
      return node.includes(NAMESPACE_PLACEHOLDER) || node.includes("{{") || node.includes("__theseus_fat_chart_") ? marker(stringExpression(node)) : node;
    }
    if (Array.isArray(node)) return node.map(visit);
    if (typeof node === "object" && node !== null) {
      const out: Record<string, unknown> = {};
      for (const [key, value] of Object.entries(node)) {
        if (key.includes("{{") || key.includes(NAMESPACE_PLACEHOLDER)) {
          throw new TheseusError("failed_precondition", `${object.kind} ${object.metadata.name ?? "?"} has a key "${key.slice(0, 80)}" that a chart cannot hold as it is`, {
            hint: "rename the key, or leave the object out of the export (--selector)",
          });
        }
        out[key] = visit(value);
      }
      return out;
    }
    return node;
  };
  const templated = visit(copy);
  let text = stringify(templated, { lineWidth: 0, minContentWidth: 0 });
  for (const [m, expression] of expressions) text = text.split(m).join(expression);
  return text;
}

const fileName = (object: KubeObject, index: number): string =>
  `${String(index).padStart(3, "0")}-${object.kind.toLowerCase()}-${(object.metadata.name ?? "object").replace(/[^a-z0-9.-]/g, "-")}.yaml`.slice(0, 200);

export function chartFiles(input: ChartInput): ChartFile[] {
  const objects = input.objects.filter((o) => o.kind !== "Namespace");
  const crds = objects.filter((o) => o.kind === "CustomResourceDefinition");
  const templated = objects.filter((o) => o.kind !== "CustomResourceDefinition");
  const values = defaultValues(templated);
  const files: ChartFile[] = [
    { path: "Chart.yaml", content: chartYaml(input) },
    { path: "values.yaml", content: valuesYaml(values) },
    { path: ".helmignore", content: "# The volume data and theseus import's own copy of the objects: never part of a Helm release (at most 1 MiB).\ndata/\n" },
    { path: "README.md", content: readme(input) },
    { path: "templates/_helpers.tpl", content: HELPERS },
    ...templated.map((o, i) => ({ path: `templates/${fileName(o, i + 1)}`, content: objectTemplate(o) })),
    // Helm installs crds/ before the templates, as they are (no templating), and never deletes them.
    ...crds.map((o, i) => ({ path: `crds/${fileName(o, i + 1)}`, content: stringify(o, { lineWidth: 0 }) })),
  ];
  return files;
}

function chartYaml(input: ChartInput): string {
  return stringify({
    apiVersion: "v2",
    name: input.name,
    description: `${input.sourceNamespace} from ${input.sourceCluster}, exported by theseus with${input.withData ? "" : "out"} its volume data`,
    type: "application",
    version: "1.0.0",
    appVersion: input.exportedAt,
    annotations: { "theseus.io/source-cluster": input.sourceCluster, "theseus.io/source-namespace": input.sourceNamespace, "theseus.io/exported-at": input.exportedAt },
  });
}

function valuesYaml(values: ChartValues): string {
  return `# Values of a chart written by \`theseus export\`; \`theseus import --set KEY=VALUE\` takes the same keys.
# The defaults reproduce the application as it was exported.

# The namespace of every object; "" = the release's (helm install -n NS).
namespace: ${JSON.stringify(values.namespace)}

# Each source StorageClass and the class its claims get (theseus import --storage-class SRC=DST sets one).
${stringify({ storageClasses: values.storageClasses }).trim()}

# Image prefix -> replacement, longest prefix first, e.g. quay.io/shop: registry.example.com/shop
${stringify({ imageRegistries: values.imageRegistries }).trim()}

# Replicas per workload, by Kind/name.
${stringify({ replicas: values.replicas }).trim()}

# Route hosts (Route/name) and Ingress rule hosts (Ingress/name/RULE-INDEX); TLS hosts follow their rule.
${stringify({ hosts: values.hosts }).trim()}

# Multiplies every container's cpu, memory and ephemeral-storage requests and limits (rounded up).
resourceScale: 1
`;
}

function readme(input: ChartInput): string {
  return `# ${input.name}: a fat chart written by theseus

The application of namespace \`${input.sourceNamespace}\` on cluster \`${input.sourceCluster}\`, exported at ${input.exportedAt}
by \`theseus export\`: its objects, cleaned of everything bound to the source cluster (uids, status, cluster IPs,
node ports, bound volume names...), as a Helm chart, ${input.withData ? `and the data of its volumes (${input.claims.join(", ") || "none"})` : "without volume data (--no-data)"}.
${input.withData ? (input.quiesced ? "The app was stopped while its volumes were read (--quiesce): the snapshot is consistent.\n" : "The app kept running while its volumes were read: the snapshot is crash-consistent at best.\n") : ""}
## Layout

    ${input.name}/
      Chart.yaml, values.yaml, README.md, .helmignore
      templates/        one file per object, with the values below
      crds/             the custom resource definitions (Helm installs them first, as they are)
      data/             never loaded by Helm (.helmignore lists it; a release is kept in a Secret of at most 1 MiB)
        manifest.json   the format, the source, and per claim: its file, size, sha256, entries and content digest
        objects.json    the objects as \`theseus import\` reads them (it needs no Helm), with the source's served kinds
        claims/CLAIM.tar.zst   one zstd-compressed tar per claim: its files, modes, owners, mtimes, symbolic links

## Installing

With its data, into any cluster with a theseus agent (checks the target first, restores every volume, verifies each
volume's digest, then starts the workloads):

    theseus import ${input.name}.tgz --to CLUSTER [--to-namespace NS] [--storage-class SRC=DST] [--set KEY=VALUE]...

With Helm alone (the volumes start empty): unpack the archive, then install the directory (\`.helmignore\` keeps
\`data/\` out of the release; installing the .tgz file directly would load the data into the release, so don't):

    tar xzf ${input.name}.tgz && helm install RELEASE ./${input.name} -n NS --create-namespace

## Values

| key | what |
| --- | --- |
| namespace | the namespace of the objects ("" = the release's) |
| storageClasses.SRC | the StorageClass for the claims that used SRC |
| imageRegistries.PREFIX | replaces an image prefix in every container |
| replicas.Kind/name | a workload's replicas |
| hosts.Route/name, hosts.Ingress/name/N | Route and Ingress rule hosts |
| resourceScale | multiplies containers' cpu, memory and ephemeral-storage requests and limits |

\`theseus import\` reads \`data/objects.json\` and these values, not the templates: edits to a template reach only
\`helm install\`.
`;
}
