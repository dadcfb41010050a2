#!/usr/bin/env python3
"""Import cycles between the library's modules: a measure for the one-direction layering.

Reads every file under src/ (the library: src/main.rs, src/cli_*.rs and src/bin/ are left
out), takes each `crate::a::b`, `super::a` and `self::a` path its code names (comments and
in-file unit tests left out), resolves each to the module file it lands in, and prints the
strongly connected components of that graph with more than one module: every module in one of
them reaches every other through imports. A child using its parent counts like any other
import (a mod.rs is either a facade its children never use, or a layer above them). Exit
status 1 if there is any (0: the modules form layers).
Usage: scripts/module-cycles.py [--all]   (--all also prints each module's imports)
"""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
SKIP = ("main.rs", "cli_client.rs", "cli_log.rs")


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


def main():
    mods = dict(files())
    known = set(mods.values())
    edges = {m: set() for m in known}
    path_re = re.compile(r"\b(crate|self|super(?:::super)*)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
    comment_re = re.compile(r"//[^\n]*")
    for rel, mod in mods.items():
        text = open(os.path.join(SRC, rel), encoding="utf-8").read()
        # Tests inside a file do not count: they may reach anywhere.
        text = text.split("#[cfg(test)]\nmod tests")[0]
        text = comment_re.sub("", text)
        # A module's own children may be named bare (`use link::Link;` under `mod link;`).
        children = re.findall(r"^\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+([a-z_0-9]+)\s*;", text, re.M)
        if children:
            bare = re.compile(r"(?<![A-Za-z0-9_:])(" + "|".join(children) + r")((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
            text += "\n" + "\n".join(f"self::{c}{t}" for c, t in bare.findall(text))
        # Grouped imports (`use super::{Core, Waiter};`) name each item after the prefix.
        group_re = re.compile(r"\b((?:crate|self|super(?:::super)*)(?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^{}]*)\}")
        for prefix, items in group_re.findall(text):
            text += "\n" + "\n".join(f"{prefix}::{i.strip().split(' ')[0]}" for i in items.split(",") if i.strip())
        for head, tail in path_re.findall(text):
            segs = [s for s in tail.split("::") if s]
            if head == "crate":
                base = []
            elif head == "self":
                base = mod.split("::") if mod else []
            else:
                ups = head.count("super")
                here = mod.split("::") if mod else []
                # A mod.rs is its directory's module: `super` from it leaves the directory.
                base = here[: len(here) - ups] if len(here) >= ups else []
            # The longest prefix that names a module.
            target = None
            for k in range(len(segs), -1, -1):
                cand = "::".join(base + segs[:k])
                if cand in known:
                    target = cand
                    break
            if target and target != mod and target != "":
                edges[mod].add(target)
    # Tarjan's strongly connected components.
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
    cycles = [sorted(c) for c in sccs if len(c) > 1]
    if "--all" in sys.argv:
        for m in sorted(edges):
            print(f"{m or 'crate'} -> {', '.join(sorted(edges[m])) or '-'}")
        print()
    print(f"{len(known)} modules, {sum(len(e) for e in edges.values())} imports between them")
    if not cycles:
        print("no import cycle: the modules form layers")
        return 0
    for c in sorted(cycles, key=len, reverse=True):
        print(f"cycle of {len(c)} modules: {', '.join(c)}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
