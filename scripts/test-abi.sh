#!/bin/sh
# Compare the ABI of build/libmonlight.so with the committed baseline in
# abi/libmonlight.abi (an abidw dump limited to the public header) and fail
# on an incompatible change. Compatible additions pass and are listed.
#
# Changing the baseline is a deliberate act:
#   scripts/test-abi.sh --update
set -eu

cd "$(dirname "$0")/.."
baseline=abi/libmonlight.abi
library=build/libmonlight.so

if [ "${1:-}" = "--update" ]; then
    abidw --headers-dir core/include --no-corpus-path --out-file "$baseline" "$library"
    echo "abi: baseline written to $baseline"
    exit 0
fi

current=$(mktemp)
trap 'rm -f "$current"' EXIT
abidw --headers-dir core/include --no-corpus-path --out-file "$current" "$library"

# abidiff's exit status is a bit field: 4 means compatible changes, 8
# means incompatible ones (abidiff(1), "Return values").
set +e
abidiff --no-added-syms "$baseline" "$current" >/dev/null
compatible_status=$?
abidiff "$baseline" "$current"
status=$?
set -e
if [ $((status & 8)) -ne 0 ] || [ $((status & 1)) -ne 0 ]; then
    echo "abi: INCOMPATIBLE change to libmonlight.so.1 (abidiff status $status)." >&2
    echo "abi: restore compatibility, or bump the SONAME and run" >&2
    echo "abi: scripts/test-abi.sh --update deliberately." >&2
    exit 1
fi
if [ "$compatible_status" -ne 0 ] || [ "$status" -ne 0 ]; then
    echo "abi: compatible changes only (listed above)"
else
    echo "abi: identical to the baseline"
fi
