#!/bin/sh
# `make bench`: build a release engine and the Python extension under
# build-bench/, measure every figure against its alternative in this one
# run, print the table and write bench/results.md (see bench/README.md).
#
# Each step has a time bound, and the whole run takes 1 to 5 minutes on 2
# cores, depending on the load. A step that fails shows in the table as
# not measured. The script then still exits 0, because a benchmark reports
# and does not fail the build; only a failed build makes it exit 1.
#
# BENCH_SCALE (default 1) multiplies the Python call counts, such as
# BENCH_SCALE=0.1 for a quick trial whose numbers are noisier.
set -eu

cd "$(dirname "$0")/.."
BUILD=build-bench
RUN=$BUILD/run
PYTHON=.venv/bin/python
SCALE=${BENCH_SCALE:-1}

say() {
    echo "bench: $*" >&2
}

if [ ! -x "$PYTHON" ]; then
    say "$PYTHON is missing; run ./scripts/install-deps.sh first"
    exit 1
fi
rm -rf "$RUN"
mkdir -p "$RUN"
# Other work on the machine shows in the load average; results.md quotes it.
cp /proc/loadavg "$RUN/loadavg-start" 2>/dev/null || true

# ------------------------------------------------------------ building

say "building the release engine in $BUILD"
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMONLIGHT_BUILD_TESTS=OFF >"$RUN/cmake.log" 2>&1 \
    || { cat "$RUN/cmake.log" >&2; exit 1; }
cmake --build "$BUILD" >>"$RUN/cmake.log" 2>&1 || { cat "$RUN/cmake.log" >&2; exit 1; }

C_FLAGS="-std=c11 -O2 -g -Wall -Wextra"
ENGINE_LIBS="$BUILD/libmonlight.a $(pkg-config --libs libcurl libcjson) -lpthread -lm"
cc $C_FLAGS -o "$BUILD/sink" bench/sink.c
# shellcheck disable=SC2086 # the flag lists are meant to split into words
cc $C_FLAGS -Icore/include -o "$BUILD/record_cost" bench/record_cost.c $ENGINE_LIBS
# shellcheck disable=SC2086
cc $C_FLAGS -Icore/include -o "$BUILD/send_floor" bench/send_floor.c $ENGINE_LIBS

# The Python package is built from a copy, so that the extension that
# bindings/python/run-tests.sh builds in place there is left alone. Its
# setup.py copies core/ into the copy's _engine/ and cffi compiles it with
# Python's own flags (-O3 -DNDEBUG for a release CPython).
say "building the Python extension in $BUILD/python-src"
mkdir -p "$BUILD/python-src"
cp -p bindings/python/setup.py bindings/python/pyproject.toml "$BUILD/python-src/"
rm -rf "$BUILD/python-src/monlight.new"
cp -rp bindings/python/monlight "$BUILD/python-src/monlight.new"
find "$BUILD/python-src/monlight.new" \( -name '*.so' -o -name __pycache__ \) -prune -exec rm -rf {} +
if [ -f "$BUILD/python-src/monlight/_native.abi3.so" ]; then
    # Keep the previous build: setup.py skips the compile when nothing changed.
    cp -p "$BUILD/python-src/monlight/_native.abi3.so" "$BUILD/python-src/monlight.new/"
fi
rm -rf "$BUILD/python-src/monlight"
mv "$BUILD/python-src/monlight.new" "$BUILD/python-src/monlight"
(cd "$BUILD/python-src" && "../../$PYTHON" setup.py -q build_ext --inplace) >"$RUN/python-build.log" 2>&1 \
    || { cat "$RUN/python-build.log" >&2; exit 1; }

# ---------------------------------------------------------------- sinks

SINK_PIDS=""
stop_sinks() {
    for pid in $SINK_PIDS; do
        kill "$pid" 2>/dev/null || true
    done
}
trap stop_sinks EXIT
trap 'stop_sinks; exit 130' INT TERM

# start_sink NAME [extra sink arguments]: starts a sink, sets SINK_URL.
start_sink() {
    name=$1
    shift
    "$BUILD/sink" --port-file "$RUN/$name.port" --max-seconds 420 "$@" 2>"$RUN/$name.log" &
    SINK_PIDS="$SINK_PIDS $!"
    waited=0
    while [ ! -s "$RUN/$name.port" ]; do
        waited=$((waited + 1))
        if [ "$waited" -gt 50 ]; then
            say "the $name sink did not start; see $RUN/$name.log"
            exit 1
        fi
        sleep 0.1
    done
    SINK_URL="http://127.0.0.1:$(cat "$RUN/$name.port")"
}

# -------------------------------------------------------------- figures

start_sink python-sink
say "Python figures (about 2 to 3 minutes)"
PYTHONPATH="$BUILD/python-src:bench" timeout --kill-after=10 300 \
    "$PYTHON" bench/bench_python.py run --sink-url "$SINK_URL" --output "$RUN/python.json" --scale "$SCALE" \
    || say "the Python figures failed (exit $?); the table shows what was measured"

start_sink floor-sink --capture "$RUN/captured-body.json"
say "error report send against the bare libcurl floor"
timeout --kill-after=5 60 "$BUILD/send_floor" "$SINK_URL" "$RUN/captured-body.json" 400 15 \
    >"$RUN/send_floor.json" 2>"$RUN/send_floor.log" \
    || say "send_floor failed (exit $?); see $RUN/send_floor.log"

say "engine record cost: wall time per call, then instructions under callgrind"
for mode in record json; do
    timeout 60 "$BUILD/record_cost" "$mode" 400000 >>"$RUN/record_native.jsonl" 2>>"$RUN/record_native.log" \
        || say "record_cost $mode failed"
done
for threads in 1 2 4 8; do
    timeout 60 "$BUILD/record_cost" json 400000 "$threads" >>"$RUN/record_native.jsonl" \
        2>>"$RUN/record_native.log" || say "record_cost with $threads threads failed"
done
if command -v valgrind >/dev/null 2>&1; then
    for mode in record json; do
        case $mode in
            record) function=monlight_metrics_client_record ;;
            json) function=monlight_metrics_client_record_json ;;
        esac
        for count in 20000 40000; do
            timeout 120 valgrind --tool=callgrind --toggle-collect="$function" \
                --callgrind-out-file="$RUN/callgrind.$mode.$count" \
                "$BUILD/record_cost" "$mode" "$count" >/dev/null 2>"$RUN/callgrind.$mode.$count.log" \
                || say "callgrind of $mode with $count metrics failed"
        done
    done
else
    say "valgrind is not installed: instructions per metric not measured"
fi

if command -v luajit >/dev/null 2>&1 && [ -f bindings/lua/bench.lua ]; then
    say "LuaJIT: C API path against the FFI path"
    MONLIGHT_LUA_CPATH="$BUILD/lua/luajit/?.so" MONLIGHT_LUA_PATH="$BUILD/lua/?.lua" \
        timeout 90 luajit bindings/lua/bench.lua 300000 >"$RUN/luajit.txt" 2>"$RUN/luajit.log" \
        || say "bindings/lua/bench.lua failed (exit $?); see $RUN/luajit.log"
fi

stop_sinks
SINK_PIDS=""

echo
"$PYTHON" bench/report.py --run-dir "$RUN" --output bench/results.md
