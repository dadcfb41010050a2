#!/usr/bin/env python3
"""Import cycles between the library's modules: the check that the layers import only downward.

Reads every file under src/ (the library: src/main.rs, src/cli_*.rs and src/bin/ are left
out), takes each `crate::a::b`, `super::a` and `self::a` path its code names (comments and
in-file unit tests left out; grouped imports `use super::{A, B}` and a module's own children
named bare, `link::Link` under `mod link;`, followed too), resolves each to the module file it
lands in, and prints the strongly connected components of that graph with more than one
module: every module in one of them reaches every other through imports. A child using its
parent counts like any other import (a mod.rs is either a facade its children never use, or a
layer above them). The same is checked between top-level modules (a directory counted as one:
`reactor -> admin` and `admin -> reactor::rooms` is a cycle). Exit status 1 if there is any
(0: the modules form layers).

Usage: scripts/module-cycles.py [--all] [--layers] [--why FROM TO]
  --all       also print each module's imports
  --layers    print the modules by layer (0: imports no other module; n: imports one of n-1)
  --why A B   print the lines of module A that import module B
"""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
SKIP = ("main.rs", "cli_client.rs", "cli_log.rs")
PATH_RE = re.compile(r"\b(crate|self|super(?:::super)*)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
GROUP_RE = re.compile(r"\b((?:crate|self|super(?:::super)*)(?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^{}]*)\}")
MOD_RE = re.compile(r"^\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+([a-z_0-9]+)\s*;", re.M)


def module_of(rel):
    """src-relative file -> module path ('reactor::core::asks'); mod.rs/lib.rs name their dir."""
    parts = rel[:-3].split(os.sep)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return "::".join(parts)


def files():
    for root, _, names in os.walk(SRC):
        rel_root = os.path.relpath(root, SRC)
        if rel_root.split(os.sep)[0] == "bin":
            continue
        for n in names:
            if n.endswith(".rs") and not (rel_root == "." and n in SKIP):
                rel = os.path.normpath(os.path.join(rel_root, n))
                yield rel, module_of(rel)


def paths_in(line, children):
    """The (head, tail) module paths one line of code names."""
    if children:
        # A module's own children named bare are `self::` paths.
        line = re.sub(r"(?<![A-Za-z0-9_:])(" + "|".join(children) + r")::", r"self::\1::", line)
    found = PATH_RE.findall(line)
    for prefix, items in GROUP_RE.findall(line):
        for item in items.split(","):
            name = item.strip().split(" ")[0]
            if name and name != "self":
                found += PATH_RE.findall(f"{prefix}::{name}")
    return found


def resolve(head, tail, mod, known):
    segs = [s for s in tail.split("::") if s]
    here = mod.split("::") if mod else []
    if head == "crate":
        base = []
    elif head == "self":
        base = here
    else:
        ups = head.count("super")
        base = here[: len(here) - ups] if len(here) >= ups else []
    # The longest prefix that names a module.
    for k in range(len(segs), -1, -1):
        cand = "::".join(base + segs[:k])
        if cand in known:
            return cand
    return None


def graph():
    mods = dict(files())
    known = set(mods.values())
    edges = {m: {} for m in known}
    for rel, mod in mods.items():
        text = open(os.path.join(SRC, rel), encoding="utf-8").read()
        # Tests inside a file do not count: they may reach anywhere.
        text = text.split("#[cfg(test)]\nmod tests")[0]
        children = MOD_RE.findall(text)
        for number, line in enumerate(text.split("\n"), 1):
            code = re.sub(r"//.*", "", line)
            for head, tail in paths_in(code, children):
                target = resolve(head, tail, mod, known)
                if target and target != mod and target != "":
                    edges[mod].setdefault(target, []).append(f"src/{rel}:{number}: {code.strip()}")
    return known, edges


def components(edges):
    """Tarjan's strongly connected components."""
    index, low, on, stack, sccs, counter = {}, {}, set(), [], [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
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
            sccs.append(comp)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return [sorted(c) for c in sccs if len(c) > 1]


def main():
    known, edges = graph()
    if "--why" in sys.argv:
        i = sys.argv.index("--why")
        a, b = sys.argv[i + 1], sys.argv[i + 2]
        for line in edges.get(a, {}).get(b, []):
            print(line)
        return 0
    if "--all" in sys.argv:
        for m in sorted(edges):
            print(f"{m or 'crate'} -> {', '.join(sorted(edges[m])) or '-'}")
        print()
    top = {}
    for m, targets in edges.items():
        a = m.split("::")[0]
        top.setdefault(a, {}) if a else None
        for t, lines in targets.items():
            b = t.split("::")[0]
            if a and b and a != b:
                top.setdefault(a, {}).setdefault(b, lines)
                top.setdefault(b, {})
    top_cycles = components(top)
    cycles = components(edges)
    if "--layers" in sys.argv and not cycles:
        depth = {}

        def level(m):
            if m not in depth:
                depth[m] = 1 + max((level(t) for t in edges[m]), default=-1)
            return depth[m]

        for m in edges:
            level(m)
        for d in range(max(depth.values()) + 1):
            print(f"layer {d}: {', '.join(sorted(m or 'crate' for m in depth if depth[m] == d))}")
        print()
    print(f"{len(known)} modules, {sum(len(e) for e in edges.values())} imports between them")
    for c in sorted(top_cycles, key=len, reverse=True):
        print(f"cycle of {len(c)} top-level modules: {', '.join(c)}")
        inside = set(c)
        for m in c:
            for t in sorted(top[m]):
                if t in inside:
                    print(f"  {m} -> {t}   ({top[m][t][0].split(': ', 1)[0]})")
    if not cycles and not top_cycles:
        print("no import cycle: the modules form layers, and so do the top-level modules")
        return 0
    if not cycles:
        return 1
    for c in sorted(cycles, key=len, reverse=True):
        print(f"cycle of {len(c)} modules: {', '.join(c)}")
        inside = set(c)
        for m in c:
            for t in sorted(edges[m]):
                if t in inside:
                    print(f"  {m} -> {t}   ({edges[m][t][0].split(': ', 1)[0]})")
    return 1


if __name__ == "__main__":
    sys.exit(main())
