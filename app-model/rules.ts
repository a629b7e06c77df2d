// User rules: the rules file, its schema, and how a rule changes an object.
//
// The format follows Velero's resource modifiers (one file, `version: v1`, a list of rules, each with conditions and
// the patches to apply when they hold), so that a Velero user's file works here:
//
//   version: v1
//   resourceModifierRules:
//     - conditions:
//         groupResource: deployments.apps      # glob over RESOURCE.GROUP: "*.apps", "configmaps", "*"
//         resourceNameRegex: "^web-"           # optional, unanchored, over metadata.name
//         namespaces: [shop]                   # optional, the SOURCE namespaces
//         labelSelector: "tier=frontend"       # optional: a selector string, or {matchLabels, matchExpressions}
//         matches:                             # optional: each RFC 6901 path must hold the value
//           - path: /spec/template/spec/containers/0/name
//             value: web                       # compared with a string field, or with the field's JSON text
//       patches:                               # JSON patch (RFC 6902) operations, applied first, in order
//         - operation: replace                 # add, remove, replace, move, copy, test
//           path: /spec/replicas
//           value: 2                           # any YAML value (Velero takes a JSON string; YAML parses the same)
//       mergePatches:                          # JSON merge patches (RFC 7386), applied after, in order
//         - patchData:                         # a mapping, or a JSON/YAML string as in Velero
//             metadata: { labels: { moved: "true" } }
//
// Conditions are evaluated against the original object as discovered on the source (as Velero does), so one rule
// cannot make another match; the patches apply to the object as the built-in rewrites left it (namespace, storage
// class, images, API version already changed), rule after rule in file order. A rule with no patch is refused.
import { Ajv } from "ajv";
import type { ErrorObject, ValidateFunction } from "ajv";
import { LineCounter, isMap as isYamlMap, isSeq as isYamlSeq, isScalar, parse as parseYaml, parseDocument } from "yaml";
import type { Node as YamlNode } from "yaml";
import { minimatch } from "minimatch";
import fastJsonPatch from "fast-json-patch";
import type { Operation } from "fast-json-patch";
import * as mergePatch from "json-merge-patch";
import { TheseusError } from "../common/index.js";
import type { Change, KubeObject, Problem, Rule, RuleConditions, RulePatch } from "./types.js";
import type { JsonMap } from "./json.js";
import { clone, isMap, valueAtPointer } from "./json.js";
import { formatLabelSelector, matchesSelector, parseLabelSelector } from "./selector.js";
import type { LabelRequirement } from "./selector.js";
import { diffObjects } from "./changes.js";
import { refOf, describeRef } from "./refs.js";

const POINTER = "^(/.*)?$";

/** The rules file's JSON schema (draft-07), exported for editors and for the coordinator's --help. */
export const RULES_SCHEMA = {
  $schema: "http://json-schema.org/draft-07/schema#",
  title: "Theseus rules file",
  type: "object",
  required: ["version", "resourceModifierRules"],
  additionalProperties: false,
  properties: {
    version: { const: "v1" },
    resourceModifierRules: {
      type: "array",
      items: {
        type: "object",
        required: ["conditions"],
        additionalProperties: false,
        properties: {
          conditions: {
            type: "object",
            required: ["groupResource"],
            additionalProperties: false,
            properties: {
              groupResource: { type: "string", minLength: 1 },
              resourceNameRegex: { type: "string" },
              namespaces: { type: "array", items: { type: "string", minLength: 1 } },
              labelSelector: {
                type: ["string", "object"],
                additionalProperties: false,
                properties: {
                  matchLabels: { type: "object", additionalProperties: { type: "string" } },
                  matchExpressions: {
                    type: "array",
                    items: {
                      type: "object",
                      required: ["key", "operator"],
                      additionalProperties: false,
                      properties: {
                        key: { type: "string" },
                        operator: { enum: ["In", "NotIn", "Exists", "DoesNotExist"] },
                        values: { type: "array", items: { type: "string" } },
                      },
                    },
                  },
                },
              },
              matches: {
                type: "array",
                items: {
                  type: "object",
                  required: ["path", "value"],
                  additionalProperties: false,
                  properties: { path: { type: "string", pattern: POINTER }, value: { type: "string" } },
                },
              },
            },
          },
          patches: {
            type: "array",
            items: {
              type: "object",
              required: ["operation", "path"],
              additionalProperties: false,
              properties: {
                operation: { enum: ["add", "remove", "replace", "move", "copy", "test"] },
                path: { type: "string", pattern: POINTER },
                from: { type: "string", pattern: POINTER },
                value: {},
              },
            },
          },
          mergePatches: {
            type: "array",
            items: {
              type: "object",
              required: ["patchData"],
              additionalProperties: false,
              properties: { patchData: { type: ["string", "object"] } },
            },
          },
        },
      },
    },
  },
} as const;

interface FileSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: { key: string; operator: string; values?: string[] }[];
}

interface FileRule {
  conditions: {
    groupResource: string;
    resourceNameRegex?: string;
    namespaces?: string[];
    labelSelector?: string | FileSelector;
    matches?: { path: string; value: string }[];
  };
  patches?: { operation: JsonOp; path: string; from?: string; value?: unknown }[];
  mergePatches?: { patchData: string | JsonMap }[];
}

interface RulesFile {
  version: "v1";
  resourceModifierRules: FileRule[];
}

type JsonOp = "add" | "remove" | "replace" | "move" | "copy" | "test";

// Compiled on first use: the agent imports this component too and never reads a rules file.
let compiled: ValidateFunction<RulesFile> | undefined;
const validator = (): ValidateFunction<RulesFile> =>
  (compiled ??= new Ajv({ allErrors: true, strict: true, allowUnionTypes: true }).compile<RulesFile>(RULES_SCHEMA));

const MAX_REPORTED = 5;

/** Parses and validates a rules file; every error names `source:LINE`. */
export function parseRules(text: string, source: string): Rule[] {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  const lineOf = (offset: number): number => lines.linePos(offset).line;
  if (doc.errors.length > 0) {
    throw invalidRules(source, doc.errors.map((e) => `${source}:${lineOf(e.pos[0])}: ${e.message.split("\n")[0] ?? ""}`));
  }
  const data: unknown = doc.toJS();
  const lineAt = (path: readonly (string | number)[], key = false): number => {
    const node = nodeAt(doc.contents, path, key);
    return node?.range === undefined || node.range === null ? 1 : lineOf(node.range[0]);
  };
  const validateFile = validator();
  if (!validateFile(data)) {
    throw invalidRules(source, (validateFile.errors ?? []).map((e) => schemaMessage(e, source, lineAt)));
  }
  const errors: string[] = [];
  const rules = data.resourceModifierRules.map((rule, index) =>
    toRule(
      rule,
      (...path) => `${source}:${lineAt(["resourceModifierRules", index, ...path])}`,
      (where, message) => void errors.push(`${where}: ${message}`),
    ),
  );
  if (errors.length > 0) throw invalidRules(source, errors);
  return rules;
}

/** One validated entry as a Rule; what the schema cannot say (regexes, selectors, needed values) goes to `fail`. */
function toRule(rule: FileRule, at: (...path: (string | number)[]) => string, fail: (where: string, message: string) => void): Rule {
  const c = rule.conditions;
  if (c.resourceNameRegex !== undefined) {
    try {
      new RegExp(c.resourceNameRegex);
    } catch (error) {
      fail(at("conditions", "resourceNameRegex"), `resourceNameRegex is not a regular expression: ${TheseusError.from(error).message}`);
    }
  }
  let labelSelector: string | undefined;
  if (c.labelSelector !== undefined) {
    try {
      labelSelector = typeof c.labelSelector === "string" ? c.labelSelector : selectorText(c.labelSelector);
      parseLabelSelector(labelSelector);
    } catch (error) {
      fail(at("conditions", "labelSelector"), TheseusError.from(error).message);
    }
  }
  const patches: RulePatch[] = [];
  if (rule.patches !== undefined && rule.patches.length > 0) {
    rule.patches.forEach((p, i) => {
      if ((p.operation === "add" || p.operation === "replace" || p.operation === "test") && p.value === undefined) {
        fail(at("patches", i), `a "${p.operation}" operation needs a value`);
      }
      if ((p.operation === "move" || p.operation === "copy") && p.from === undefined) fail(at("patches", i), `a "${p.operation}" operation needs from`);
    });
    patches.push({ type: "json", operations: rule.patches.map(({ operation, ...rest }) => ({ op: operation, ...rest })) });
  }
  (rule.mergePatches ?? []).forEach((m, i) => {
    const patch = typeof m.patchData === "string" ? parseQuietly(m.patchData) : m.patchData;
    if (isMap(patch)) patches.push({ type: "merge", patch });
    else fail(at("mergePatches", i, "patchData"), "patchData must be a mapping (or a JSON/YAML string holding one)");
  });
  if (patches.length === 0) fail(at(), "the rule has no patches and no mergePatches: it would change nothing");
  const conditions: RuleConditions = {
    groupResource: c.groupResource,
    ...(c.resourceNameRegex !== undefined && { resourceNameRegex: c.resourceNameRegex }),
    ...(c.namespaces !== undefined && { namespaces: c.namespaces }),
    ...(labelSelector !== undefined && { labelSelector }),
    ...(c.matches !== undefined && { matches: c.matches }),
  };
  return { source: at(), conditions, patches };
}

function parseQuietly(text: string): unknown {
  try {
    return parseYaml(text);
  } catch {
    return undefined;
  }
}

function selectorText(selector: FileSelector): string {
  const operators: Record<string, LabelRequirement["operator"]> = { In: "in", NotIn: "notin", Exists: "exists", DoesNotExist: "!" };
  const requirements: LabelRequirement[] = [
    ...Object.entries(selector.matchLabels ?? {}).map(([key, value]): LabelRequirement => ({ key, operator: "=", values: [value] })),
    ...(selector.matchExpressions ?? []).map((e): LabelRequirement => ({ key: e.key, operator: operators[e.operator] ?? "exists", values: e.values ?? [] })),
  ];
  return formatLabelSelector({ requirements });
}

function invalidRules(source: string, errors: readonly string[]): TheseusError {
  const shown = errors.slice(0, MAX_REPORTED);
  const more = errors.length > shown.length ? `\n(and ${errors.length - shown.length} more)` : "";
  return new TheseusError("invalid_argument", `rules file ${source} is invalid:\n${shown.join("\n")}${more}`, {
    hint: "the format is described at the top of app-model/rules.ts (Velero's resource modifiers, version v1)",
  });
}

/** One ajv error as `source:LINE: where: what`, pointing at the offending key when there is one. */
function schemaMessage(error: ErrorObject, source: string, lineAt: (path: readonly (string | number)[], key?: boolean) => number): string {
  const path = error.instancePath === "" ? [] : error.instancePath.slice(1).split("/").map(unescape);
  const where = path.length === 0 ? "the file" : path.map((s) => (/^\d+$/.test(s) ? `[${s}]` : `.${s}`)).join("").replace(/^\./, "");
  const params = error.params as Record<string, unknown>;
  if (error.keyword === "additionalProperties") {
    const field = String(params["additionalProperty"]);
    return `${source}:${lineAt([...path, field], true)}: ${where}: unknown field "${field}"`;
  }
  if (error.keyword === "enum") {
    const allowed = (params["allowedValues"] as unknown[]).map(String).join(", ");
    return `${source}:${lineAt(path)}: ${where}: must be one of ${allowed}`;
  }
  return `${source}:${lineAt(path)}: ${where}: ${error.message ?? error.keyword}`;
}

function unescape(segment: string): string {
  return segment.replaceAll("~1", "/").replaceAll("~0", "~");
}

/** The YAML node at a path (or the key node of its last segment), for its line; the deepest existing node otherwise. */
function nodeAt(root: unknown, path: readonly (string | number)[], key: boolean): YamlNode | undefined {
  let node = root as YamlNode | null;
  for (const [i, segment] of path.entries()) {
    if (isYamlMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(segment));
      if (pair === undefined) return node;
      if (key && i === path.length - 1 && isScalar(pair.key)) return pair.key;
      node = pair.value as YamlNode | null;
    } else if (isYamlSeq(node)) {
      const item = node.items[Number(segment)] as YamlNode | undefined;
      if (item === undefined) return node;
      node = item;
    } else {
      return node ?? undefined;
    }
  }
  return node ?? undefined;
}

/** Whether the rule's conditions hold for the original object (as discovered, before any rewrite). */
function ruleMatches(rule: Rule, original: KubeObject, groupResource: string): boolean {
  const c = rule.conditions;
  if (!minimatch(groupResource, c.groupResource, { nocase: true })) return false;
  if (c.resourceNameRegex !== undefined && !new RegExp(c.resourceNameRegex).test(original.metadata.name ?? "")) return false;
  if (c.namespaces !== undefined && !c.namespaces.includes(original.metadata.namespace ?? "")) return false;
  if (c.labelSelector !== undefined && !matchesSelector(original.metadata.labels, parseLabelSelector(c.labelSelector))) return false;
  return (c.matches ?? []).every((m) => {
    const value = valueAtPointer(original, m.path);
    return value === m.value || (value !== undefined && JSON.stringify(value) === m.value);
  });
}

/** Applies each matching rule in order; a patch that fails leaves that rule's changes out and is a Problem. */
export function applyRules(
  rules: readonly Rule[],
  original: KubeObject,
  current: KubeObject,
  groupResource: string,
): { object: KubeObject; changes: Change[]; problems: Problem[] } {
  let object = current;
  const changes: Change[] = [];
  const problems: Problem[] = [];
  for (const rule of rules) {
    if (!ruleMatches(rule, original, groupResource)) continue;
    try {
      let next = clone(object);
      for (const patch of rule.patches) {
        if (patch.type === "json") {
          next = fastJsonPatch.applyPatch(next, patch.operations as Operation[], true, true).newDocument;
        } else {
          next = mergePatch.apply(next, clone(patch.patch)) as KubeObject;
        }
      }
      changes.push(...diffObjects(object, next, rule.source));
      object = next;
    } catch (error) {
      problems.push({
        severity: "error",
        check: "rules",
        object: refOf(original),
        message: `rule ${rule.source} cannot patch ${describeRef(refOf(original))}: ${TheseusError.from(error).message.split("\n")[0] ?? ""}`,
        hint: "fix the rule's path (it must exist for replace, remove and test) or narrow its conditions",
      });
    }
  }
  return { object, changes, problems };
}
