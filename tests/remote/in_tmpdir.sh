#!/bin/bash
# in_tmpdir.sh PROGRAM [ARG...]: runs PROGRAM DIR ARG... in a new temporary
# directory DIR, with every "@DIR@" in the ARGs replaced by DIR, and removes
# DIR afterwards; exits with PROGRAM's status.  tests/meson.build runs
# sync_test and replica_test through it against a file:// remote in DIR,
# so that they need no server (tests/remote/test_*.py run them against
# the others).
set -u
prog=$1
shift
dir=$(mktemp -d "${TMPDIR:-/tmp}/streamfs-meson.XXXXXX") || exit 1
trap 'rm -rf "$dir"' EXIT
"$prog" "$dir" "${@//@DIR@/$dir}"
