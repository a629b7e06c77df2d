// Kubernetes label selectors in their string form (`app=shop,tier!=cache,env in (a,b),!legacy`), parsed once and
// matched without I/O: discovery narrows with them and user rules condition on them.
import { TheseusError } from "../common/index.js";

export interface LabelRequirement {
  readonly key: string;
  readonly operator: "=" | "!=" | "in" | "notin" | "exists" | "!";
  readonly values: readonly string[];
}

/** Every requirement must hold; no requirements selects everything, as in Kubernetes. */
export interface LabelSelector {
  readonly requirements: readonly LabelRequirement[];
}

const KEY = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/;

export function parseLabelSelector(selector: string): LabelSelector {
  const requirements: LabelRequirement[] = [];
  for (const part of splitTopLevel(selector)) {
    const text = part.trim();
    if (text === "") {
      if (selector.trim() === "") continue;
      throw invalid(selector, "an empty requirement (two commas in a row, or one at an end)");
    }
    requirements.push(parseRequirement(text, selector));
  }
  return { requirements };
}

export function matchesSelector(labels: Readonly<Record<string, string>> | undefined, selector: LabelSelector): boolean {
  return selector.requirements.every((r) => {
    const value = labels?.[r.key];
    switch (r.operator) {
      case "exists":
        return value !== undefined;
      case "!":
        return value === undefined;
      case "=":
      case "in":
        return value !== undefined && r.values.includes(value);
      case "!=":
      case "notin":
        return value === undefined || !r.values.includes(value);
    }
  });
}

/** The string form again, e.g. for a selector given as matchLabels/matchExpressions. */
export function formatLabelSelector(selector: LabelSelector): string {
  return selector.requirements
    .map((r) => {
      switch (r.operator) {
        case "exists":
          return r.key;
        case "!":
          return `!${r.key}`;
        case "=":
        case "!=":
          return `${r.key}${r.operator}${r.values[0] ?? ""}`;
        case "in":
        case "notin":
          return `${r.key} ${r.operator} (${r.values.join(",")})`;
      }
    })
    .join(",");
}

function parseRequirement(text: string, selector: string): LabelRequirement {
  const set = /^(\S+)\s+(in|notin)\s*\((.*)\)$/.exec(text);
  if (set !== null) {
    const values = (set[3] ?? "").split(",").map((v) => v.trim());
    return { key: checkKey(set[1] ?? "", selector), operator: set[2] === "in" ? "in" : "notin", values: values.map((v) => checkValue(v, selector)) };
  }
  const eq = /^([^=!\s]+)\s*(==|=|!=)\s*(.*)$/.exec(text);
  if (eq !== null) {
    const operator = eq[2] === "!=" ? "!=" : "=";
    return { key: checkKey(eq[1] ?? "", selector), operator, values: [checkValue((eq[3] ?? "").trim(), selector)] };
  }
  if (text.startsWith("!")) return { key: checkKey(text.slice(1).trim(), selector), operator: "!", values: [] };
  return { key: checkKey(text, selector), operator: "exists", values: [] };
}

function splitTopLevel(selector: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < selector.length; i++) {
    const c = selector[i];
    if (c === "(") depth++;
    else if (c === ")") depth--;
    else if (c === "," && depth === 0) {
      parts.push(selector.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(selector.slice(start));
  return parts;
}

function checkKey(key: string, selector: string): string {
  if (!KEY.test(key)) throw invalid(selector, `"${key}" is not a label key (NAME or PREFIX/NAME: letters, digits, - _ .)`);
  return key;
}

function checkValue(value: string, selector: string): string {
  if (!VALUE.test(value)) throw invalid(selector, `"${value}" is not a label value (at most 63 letters, digits, - _ .)`);
  return value;
}

function invalid(selector: string, why: string): TheseusError {
  return new TheseusError("invalid_argument", `label selector "${selector}" is invalid: ${why}`, {
    hint: "use Kubernetes selector syntax, e.g. app=shop,tier!=cache,env in (prod,staging),!legacy",
  });
}
