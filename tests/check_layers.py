#!/usr/bin/env python3
"""Checks the layers of store/ on its built objects.

    check_layers.py LIBSTORE.a STORE_INT.H

The layers are the numbered lines at the top of store_int.h ("  2 name:
a.c b.c").  From `nm` of the archive, a file calls another when it leaves
undefined a symbol the other defines.  Fails, naming the symbols, when a
file calls into a higher layer, when two files call each other (even
through others), when an object is in no layer, or when a symbol other
files can see lacks the module prefix store_.
"""
import re
import subprocess
import sys

LAYER_LINE = re.compile(r"^\s*\*\s+(\d+)\s+[^:]+:\s+(.*)$")
CONTINUED = re.compile(r"^\s*\*\s{3,}\S+\.[ch](\s|$)")


def read_layers(header):
    """{file stem: layer number} from the comment at the top of HEADER."""
    layers = {}
    layer = None
    with open(header) as f:
        for line in f:
            if line.startswith(" */"):
                break
            m = LAYER_LINE.match(line)
            if m:
                layer, names = int(m.group(1)), m.group(2)
            elif layer is not None and CONTINUED.match(line):
                names = line.strip(" *\n")	# the layer's files go on
            else:
                layer = None
                continue
            for name in names.split():
                if name.endswith(".c"):
                    layers[name[:-2]] = layer
    return layers


def read_symbols(archive):
    """({symbol: defining file}, {file: set of undefined symbols})."""
    out = subprocess.run(["nm", "--format=posix", "-A", archive],
                         check=True, capture_output=True, text=True).stdout
    defined, undefined = {}, {}
    for line in out.splitlines():
        m = re.match(r"^.*\[(?:.*/)?([^/\]]+)\.c\.o\]: (\S+) (\S)", line)
        if not m:
            continue
        obj, sym, kind = m.groups()
        undefined.setdefault(obj, set())
        if kind == "U":
            undefined[obj].add(sym)
        elif kind in "TDBRVW":	# global: text, data, bss, rodata, weak
            defined[sym] = obj
    return defined, undefined


def call_graph(defined, undefined):
    """{caller: {callee: [symbols]}} between distinct files."""
    graph = {obj: {} for obj in undefined}
    for obj, syms in undefined.items():
        for sym in sorted(syms):
            callee = defined.get(sym)
            if callee and callee != obj:
                graph[obj].setdefault(callee, []).append(sym)
    return graph


def tangles(graph):
    """The strongly connected groups of more than one file, sorted."""
    index, low, on_stack, stack, groups = {}, {}, set(), [], []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, {})):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    layers = read_layers(sys.argv[2])
    defined, undefined = read_symbols(sys.argv[1])
    graph = call_graph(defined, undefined)
    errors = [f"{obj}.c exports {sym} without the prefix store_"
              for sym, obj in sorted(defined.items())
              if not sym.startswith("store_")]
    for obj in sorted(graph):
        if obj not in layers:
            errors.append(f"{obj}.c is in no layer of {sys.argv[2]}")
    for obj in sorted(graph):
        for callee, syms in sorted(graph[obj].items()):
            if obj in layers and layers.get(callee, 0) > layers[obj]:
                errors.append(f"{obj}.c (layer {layers.get(obj)}) calls up "
                              f"into {callee}.c (layer {layers.get(callee)}): "
                              + ", ".join(syms))
    for group in tangles(graph):
        calls = [f"{a}.c -> {b}.c ({', '.join(graph[a][b])})"
                 for a in group for b in group if b in graph[a]]
        errors.append("files that call each other round a cycle:\n  "
                      + "\n  ".join(calls))
    for e in errors:
        print(e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
