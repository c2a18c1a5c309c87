#!/usr/bin/env bash
# The wheel as a user gets it: build it, install it into a fresh virtualenv in a directory
# outside the source tree, and run `driftline demo` and `driftline migrate` from there.
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/driftline-wheel.XXXXXX")"
trap 'rm -rf "$work"' EXIT
python3 -m pip wheel --no-deps -q -w "$work/dist" "$src"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q --upgrade pip
"$work/venv/bin/pip" install -q "$work"/dist/driftline-*.whl
cd "$work"
export DRIFTLINE_HOME="$work/home"
bin="$work/venv/bin"
"$bin/driftline" --version
# Nothing of the source tree is importable from here: the installed copy is what runs.
"$bin/python" -c "import driftline.streams.cli as c, sys; p = c.__file__; print(p); sys.exit(p.startswith('$src'))"
"$bin/driftline" demo --events 3000
"$bin/driftline" migrate
"$bin/driftline" migrate | grep -q "none pending"
echo "wheel check: demo and migrate ran from the installed wheel"
