#!/bin/sh
# Build the monlight Python extension in place and run the Python suite.
#
# Uses the repository's .venv (scripts/install-deps.sh creates it). The
# extension is compiled into bindings/python/monlight/ with
# `setup.py build_ext --inplace`, which skips the compile when nothing
# changed, and is tested from there: nothing is installed into .venv, so a
# pure-Python monlight installed there for the benchmarks is left alone.
# Extra arguments go to pytest, e.g. `run-tests.sh -k fastapi`.
set -eu

cd "$(dirname "$0")"
PACKAGE_DIR=$(pwd)
REPOSITORY=$(cd ../.. && pwd)
PYTHON="$REPOSITORY/.venv/bin/python"

if [ ! -x "$PYTHON" ]; then
    echo "run-tests: $PYTHON is missing; run ./scripts/install-deps.sh first" >&2
    exit 1
fi

# The whole suite, slow packaging tests included, takes one to two minutes;
# the bound stops a hung test from blocking the caller for long.
SUITE_TIMEOUT=${MONLIGHT_PYTHON_SUITE_TIMEOUT:-600}

echo "run-tests: building monlight._native in place"
if ! build_log=$("$PYTHON" setup.py -q build_ext --inplace 2>&1); then
    printf '%s\n' "$build_log" >&2
    echo "run-tests: building the extension failed" >&2
    exit 1
fi

cd "$REPOSITORY"
exec timeout --kill-after=10 "$SUITE_TIMEOUT" \
    "$PYTHON" -m pytest "$PACKAGE_DIR/tests" -q -p no:cacheprovider "$@"
