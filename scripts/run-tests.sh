#!/bin/sh
# Run every test suite, one after the other, and print a summary. A suite
# that fails does not stop the others; the exit status is non-zero when
# any failed. `make test` calls this after installing and building.
set -u

cd "$(dirname "$0")/.."

results=""
failed=0

run_suite() {
    name=$1
    shift
    echo
    echo "=== $name: $*"
    started=$(date +%s)
    if "$@"; then
        outcome=passed
    else
        outcome=FAILED
        failed=1
    fi
    elapsed=$(( $(date +%s) - started ))
    results="$results
  $(printf '%-22s %-7s %4ss' "$name" "$outcome" "$elapsed")"
}

# A suite that the project does not have yet is reported, not run.
run_script_suite() {
    name=$1
    script=$2
    if [ -x "$script" ]; then
        run_suite "$name" "$script"
    else
        results="$results
  $(printf '%-22s %-7s' "$name" "absent ($script)")"
    fi
}

run_suite "c" sh -c 'cd build && ctest --output-on-failure'
run_suite "c-asan-ubsan" make --no-print-directory test-sanitize
run_suite "c-tsan" make --no-print-directory test-tsan
run_script_suite "c-valgrind" scripts/test-valgrind.sh
run_script_suite "c-fuzz" scripts/test-fuzz.sh
run_script_suite "install" scripts/test-install.sh
run_script_suite "abi" scripts/test-abi.sh
run_suite "receiver" .venv/bin/python -m pytest -q tests/receiver
run_suite "cli" .venv/bin/python -m pytest -q tests/cli
run_script_suite "python" bindings/python/run-tests.sh
run_script_suite "lua" bindings/lua/run-tests.sh
run_script_suite "ruby" bindings/ruby/run-tests.sh

echo
echo "=== summary$results"
if [ "$failed" -ne 0 ]; then
    echo "some suites FAILED"
    exit 1
fi
echo "all suites passed"
