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

# abidiff's exit status is a bit field (abidiff(1), "Return values"): 4
# is an ABI change, 8 an incompatible one. abidiff counts a changed size
# of a public struct as a mere change, so any change to what the baseline
# exports fails here, and only added functions pass.
set +e
abidiff --suppressions abi/suppressions.abignore --no-added-syms \
    "$baseline" "$current"
changed=$?
abidiff --suppressions abi/suppressions.abignore "$baseline" "$current" >/dev/null
any=$?
set -e
if [ "$changed" -ne 0 ]; then
    echo "abi: INCOMPATIBLE change to libmonlight.so.1 (abidiff status $changed)." >&2
    echo "abi: restore compatibility, or bump the SONAME and run" >&2
    echo "abi: scripts/test-abi.sh --update deliberately." >&2
    exit 1
fi
if [ "$any" -ne 0 ]; then
    echo "abi: compatible: functions were only added"
else
    echo "abi: identical to the baseline"
fi
