#!/bin/sh
# Install the engine into a temporary prefix (through DESTDIR, as a
# package build would), check what landed, then build a small downstream
# program against the installed copy twice, with pkg-config and with
# CMake's find_package, and run both against a contract receiver.
set -eu

cd "$(dirname "$0")/.."
ROOT=$(pwd)
work=$(mktemp -d)
cleanup() {
    python3 tests/receiver/harness.py stop --pid-file "$work/receiver.pid" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

prefix=/opt/monlight-test
DESTDIR="$work/stage" cmake --install build --prefix "$prefix" >/dev/null
root="$work/stage$prefix"
for file in include/monlight.h lib/libmonlight.so.1 lib/libmonlight.a \
            lib/pkgconfig/monlight.pc lib/cmake/monlight/monlightConfig.cmake \
            bin/monlight share/man/man1/monlight.1; do
    if [ ! -e "$root/$file" ]; then
        echo "install: $file is missing from the installed tree" >&2
        exit 1
    fi
done
soname=$(objdump -p "$root/lib/libmonlight.so.1" | awk '/SONAME/ { print $2 }')
if [ "$soname" != "libmonlight.so.1" ]; then
    echo "install: SONAME is '$soname', expected libmonlight.so.1" >&2
    exit 1
fi

# The staged tree stands in for the prefix: monlight.pc finds its prefix
# relative to itself, and CMake's prefix path points at it.
export MONLIGHT_API_KEY=install-test-key
MONLIGHT_URL=$(python3 tests/receiver/harness.py start --record "$work/records.jsonl" \
    --pid-file "$work/receiver.pid" --port-file "$work/receiver.port" \
    --api-key "$MONLIGHT_API_KEY")
export MONLIGHT_URL

PKG_CONFIG_PATH="$root/lib/pkgconfig" \
    sh -c 'cc -std=c11 -Wall -Wextra -Werror -o "$1/downstream-pc" tests/install/downstream.c \
           $(pkg-config --cflags --libs monlight)' sh "$work"
LD_LIBRARY_PATH="$root/lib" "$work/downstream-pc"

cmake -S tests/install -B "$work/cmake-build" -DCMAKE_PREFIX_PATH="$root" >/dev/null
cmake --build "$work/cmake-build" >/dev/null
LD_LIBRARY_PATH="$root/lib" "$work/cmake-build/downstream"

accepted=$(grep -c '"kind": "metrics"' "$work/records.jsonl" || true)
if [ "$accepted" -ne 2 ]; then
    echo "install: expected 2 accepted metric batches, found $accepted" >&2
    exit 1
fi
echo "install: pkg-config and find_package builds both delivered"
