#!/usr/bin/env python3
"""Fails when the top-level modules of src/ depend on each other in a cycle.

A module depends on another when its non-test code names it: `use crate::other...` or a path
`crate::other::...`. Test code (`#[cfg(test)] mod tests { ... }` at the end of a file, and
files under a `tests` module) is left out. Prints every cycle (as strongly connected
components) and the edges inside it, with one file and line for each edge.

Usage: .ci/module_cycles.py [--allow A,B,...]  (a component of exactly these modules is allowed)
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
REF = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
USE_GROUP = re.compile(r"\buse crate::\{([^;]*)\}", re.S)


def top_module(path):
    rel = os.path.relpath(path, ROOT)
    first = rel.split(os.sep)[0]
    return first[:-3] if first.endswith(".rs") else first


def strip_tests(text):
    # Cut the file at its `#[cfg(test)]` item (tests sit at the end of every file here).
    i = text.find("#[cfg(test)]")
    return text if i < 0 else text[:i]


def strip_comments(text):
    return "\n".join(line.split("//", 1)[0] if "//" in line and '"' not in line.split("//", 1)[0] else line
                     for line in text.split("\n"))


def edges():
    out = {}
    for dirpath, _, files in os.walk(ROOT):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            src = top_module(path)
            if src in ("main", "lib"):
                continue
            text = strip_comments(strip_tests(open(path, encoding="utf-8").read()))
            for lineno, line in enumerate(text.split("\n"), 1):
                names = REF.findall(line)
                for dst in names:
                    if dst != src:
                        out.setdefault((src, dst), f"{os.path.relpath(path, os.path.join(ROOT, '..'))}:{lineno}")
            for m in USE_GROUP.finditer(text):
                lineno = text[: m.start()].count("\n") + 1
                for part in m.group(1).split(","):
                    dst = part.strip().split("::")[0].strip()
                    if dst and dst != src and re.fullmatch(r"[a-z_][a-z0-9_]*", dst) and dst != "self":
                        out.setdefault((src, dst), f"{os.path.relpath(path, os.path.join(ROOT, '..'))}:{lineno}")
    return out


def sccs(nodes, adj):
    index, low, on, stack, res, n = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in adj.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            res.append(sorted(comp))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return res


def main():
    allow = []
    if len(sys.argv) > 2 and sys.argv[1] == "--allow":
        allow = [sorted(x.split(",")) for x in sys.argv[2:]]
    e = edges()
    nodes = {a for a, _ in e} | {b for _, b in e}
    adj = {}
    for a, b in e:
        adj.setdefault(a, set()).add(b)
    bad = [c for c in sccs(nodes, adj) if len(c) > 1 and c not in allow]
    if not bad:
        print(f"module graph of src/: {len(nodes)} modules, {len(e)} edges, no cycles")
        return 0
    for c in bad:
        print(f"cycle between the modules {', '.join(c)}:")
        for (a, b), where in sorted(e.items()):
            if a in c and b in c:
                print(f"  {a} -> {b}  ({where})")
    return 1


if __name__ == "__main__":
    sys.exit(main())
