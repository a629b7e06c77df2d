#!/usr/bin/env node
// Reorders a Go 1.15-era vendor/modules.txt so that Go >= 1.17 reads it correctly (used by build-kubernetes.sh).
//
// Go 1.15's `go mod vendor` could list a module's packages under two headers: some after the versioned line
// `# path v1 => repl v1`, others after the replacement-only line `# path => repl v1`. Go >= 1.17 attributes packages
// after a version-less header to a module with no version and then refuses to build ("updates to go.mod needed,
// disabled by -mod=vendor"). This moves every package line of a module under its versioned header (keeping the
// `## ...` annotation lines first) and puts the replacement-only header after them. Idempotent.
import { readFileSync, writeFileSync } from "node:fs";

const path = process.argv[2];
if (path === undefined) {
  console.error("usage: reorder-modules-txt.mjs vendor/modules.txt");
  process.exit(2);
}
const order = [];
const modules = new Map(); // path -> { versioned: [], unversioned: [], packages: [] }
let current;
let target;
for (const line of readFileSync(path, "utf8").split("\n")) {
  if (line.startsWith("# ")) {
    const fields = line.slice(2).split(/\s+/);
    const mod = fields[0];
    if (!modules.has(mod)) {
      order.push(mod);
      modules.set(mod, { versioned: [], unversioned: [], packages: [] });
    }
    current = modules.get(mod);
    target = fields[1] === "=>" ? current.unversioned : current.versioned;
    target.push(line);
  } else if (line.startsWith("## ")) {
    if (target === undefined) throw new Error(`${path}: annotation before any module header: ${line}`);
    target.push(line);
  } else if (line.trim() !== "") {
    if (current === undefined) throw new Error(`${path}: package before any module header: ${line}`);
    current.packages.push(line);
  }
}
const out = [];
for (const mod of order) {
  const m = modules.get(mod);
  if (m.versioned.length > 0) out.push(...m.versioned, ...m.packages, ...m.unversioned);
  else out.push(...m.unversioned, ...m.packages);
}
writeFileSync(path, `${out.join("\n")}\n`);
