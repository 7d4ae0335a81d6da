#!/bin/sh
# Run the C tests that need no timing margin under valgrind memcheck: any
# invalid access or definite leak fails. The fault, process and
# concurrency tests are left to the sanitizer builds, because valgrind's
# slowdown breaks their timing.
set -eu

cd "$(dirname "$0")/.."
status=0
for test in test_json test_report test_api test_metrics test_errors; do
    echo "valgrind: $test"
    if ! valgrind --quiet --error-exitcode=99 --leak-check=full \
         --errors-for-leak-kinds=definite --show-leak-kinds=definite \
         "build/tests/c/$test" >"build/$test.valgrind.log" 2>&1; then
        tail -n 40 "build/$test.valgrind.log"
        status=1
    fi
done
exit $status
