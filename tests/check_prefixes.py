#!/usr/bin/env python3
"""Checks that every symbol a library lets other files see carries its
module's prefix, so that the static libraries never clash by name.

    check_prefixes.py LIB.a PREFIX[,PREFIX...]

Reads `nm` of the archive; fails, naming file and symbol, on a global
symbol (text, data, bss, rodata, weak) that starts with none of the
prefixes.  ASan's `__odr_asan.X` markers are checked as X.
"""
import re
import subprocess
import sys


def exported(archive):
    """[(file, symbol)] of the archive's global definitions."""
    out = subprocess.run(["nm", "--format=posix", "-A", archive],
                         check=True, capture_output=True, text=True).stdout
    syms = []
    for line in out.splitlines():
        m = re.match(r"^.*\[(?:.*/)?([^/\]]+\.c)\.o\]: (\S+) ([TDBRVW])", line)
        if m:
            name = m.group(2).removeprefix("__odr_asan.")
            syms.append((m.group(1), name))
    return syms


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    prefixes = tuple(sys.argv[2].split(","))
    errors = [f"{obj} exports {sym} without a prefix of {sys.argv[2]}"
              for obj, sym in sorted(set(exported(sys.argv[1])))
              if not sym.startswith(prefixes)]
    for e in errors:
        print(e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
