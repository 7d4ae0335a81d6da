#!/bin/sh
# Build the libFuzzer targets with clang (AddressSanitizer and
# UndefinedBehaviorSanitizer on) and run each for a bounded time over its
# corpus in tests/fuzz/corpus. New inputs that reach new code go to
# build-fuzz/new-<target>; to keep them, merge them into the committed
# corpus with `build-fuzz/fuzz_<target> -merge=1 tests/fuzz/corpus/<target>
# build-fuzz/new-<target>`.
#   FUZZ_SECONDS  time per target (default 20)
set -eu

cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-20}
out=build-fuzz
mkdir -p "$out"

engine_sources=$(ls core/src/*.c)
flags="-g -O1 -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE
       -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
       -Icore/include -Icore/src $(pkg-config --cflags libcurl libcjson)"
libs="$(pkg-config --libs libcurl libcjson) -lpthread -lm"

for target in report labels; do
    # shellcheck disable=SC2086
    clang $flags -o "$out/fuzz_$target" "tests/fuzz/fuzz_$target.c" $engine_sources $libs
    mkdir -p "$out/new-$target"
    echo "fuzz_$target: running for ${seconds}s"
    "$out/fuzz_$target" -max_total_time="$seconds" -max_len=8192 -timeout=10 \
        -artifact_prefix="$out/" -print_final_stats=0 \
        "$out/new-$target" "tests/fuzz/corpus/$target" 2>"$out/fuzz_$target.log" || {
        tail -n 40 "$out/fuzz_$target.log"
        exit 1
    }
    tail -n 1 "$out/fuzz_$target.log"
done
