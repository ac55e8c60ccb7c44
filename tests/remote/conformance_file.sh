#!/bin/sh
# The meson test of remote/: backend_conformance (the path in $1) against
# a file:// remote in a fresh temporary directory, removed afterwards.
# tests/remote/test_backend_conformance.py runs it against every backend.
dir=$(mktemp -d) || exit 1
trap 'rm -rf "$dir"' EXIT
"$1" "file://$dir/remote"
