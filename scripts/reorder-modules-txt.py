#!/usr/bin/env python3
"""Reorder a Go 1.15-era vendor/modules.txt so that Go >= 1.17 reads it correctly.

Go 1.15's `go mod vendor` could list a module's packages under two headers: some after the versioned line
`# path v1 => repl v1`, others after the replacement-only line `# path => repl v1`. Go >= 1.17 attributes packages
after a version-less header to a module with no version, and then refuses to build ("updates to go.mod needed,
disabled by -mod=vendor"). This moves every package line of a module under its versioned header (keeping the
`## ...` annotation lines first) and puts the replacement-only header after them. Idempotent.
"""
import sys

def main(path: str) -> None:
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    order: list[str] = []
    versioned: dict[str, list[str]] = {}    # module path -> versioned header + "##" lines
    unversioned: dict[str, list[str]] = {}  # module path -> replacement-only header lines
    packages: dict[str, list[str]] = {}
    current = None
    for line in lines:
        if line.startswith("# "):
            fields = line[2:].split()
            mod = fields[0]
            if mod not in packages:
                order.append(mod)
                packages[mod] = []
                versioned[mod] = []
                unversioned[mod] = []
            current = mod
            if len(fields) > 1 and fields[1] == "=>":
                unversioned[mod].append(line)
                target = None
            else:
                versioned[mod].append(line)
                target = "versioned"
            current_target = target
        elif line.startswith("## "):
            if current is None:
                raise SystemExit(f"{path}: annotation before any module header: {line}")
            (versioned if current_target == "versioned" else unversioned)[current].append(line)
        elif line.strip():
            if current is None:
                raise SystemExit(f"{path}: package before any module header: {line}")
            packages[current].append(line)
    out: list[str] = []
    for mod in order:
        if versioned[mod]:
            out += versioned[mod] + packages[mod] + unversioned[mod]
        else:
            out += unversioned[mod] + packages[mod]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")

if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: reorder-modules-txt.py vendor/modules.txt")
    main(sys.argv[1])
