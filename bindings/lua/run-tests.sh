#!/bin/sh
# Run the Lua suites against the contract receiver under every Lua that
# the build made a module for (build/lua/5.1, 5.4, luajit), the LuaJIT
# suites again on the C API path, the nginx test, and a luarocks build of
# the rockspec. Exits non-zero when anything failed.
#
# Run it after `make build`, from anywhere. BUILD_DIR (default build) is
# the CMake build directory. Each suite is stopped after
# MONLIGHT_LUA_SUITE_TIMEOUT seconds (default 120). A full run takes about
# a minute, most of it in tests that wait for retries and timeouts.
set -u

cd "$(dirname "$0")/../.."
REPOSITORY=$(pwd)
BUILD_DIR=${BUILD_DIR:-build}
SUITE_TIMEOUT=${MONLIGHT_LUA_SUITE_TIMEOUT:-120}
TESTS=bindings/lua/tests

case "$BUILD_DIR" in
    /*) ;;
    *) BUILD_DIR="$REPOSITORY/$BUILD_DIR" ;;
esac

if [ ! -d "$BUILD_DIR/lua" ]; then
    echo "run-tests: $BUILD_DIR/lua is missing; run 'make build' first" >&2
    exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/monlight-lua.XXXXXX")
receiver_pid_file="$work/receiver.pid"
failed_runs=0
summary=""

cleanup() {
    python3 tests/receiver/harness.py stop --pid-file "$receiver_pid_file" >/dev/null 2>&1
    if [ "$failed_runs" -eq 0 ]; then
        rm -rf "$work"
    else
        echo "run-tests: logs, records and nginx prefixes kept in $work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! url=$(python3 tests/receiver/harness.py start --record "$work/records.jsonl" \
        --pid-file "$receiver_pid_file" --port-file "$work/receiver.port"); then
    echo "run-tests: could not start the contract receiver" >&2
    failed_runs=1
    exit 1
fi

export MONLIGHT_TEST_URL="$url"
export MONLIGHT_TEST_RECORD="$work/records.jsonl"
export MONLIGHT_TEST_WORK="$work"
export MONLIGHT_TEST_API_KEY=test-key
export MONLIGHT_TEST_RECEIVER="$REPOSITORY/tests/receiver/receiver.py"
export MONLIGHT_BUILD_DIR="$BUILD_DIR"
export MONLIGHT_LUA_PATH="$BUILD_DIR/lua/?.lua"

# run_suite LABEL INTERPRETER SUITE: runs one suite, bounded in time, and
# adds its pass/fail line to the summary.
run_suite() {
    label=$1
    interpreter=$2
    suite=$3
    log="$work/$(basename "$suite" .lua)-$label.log"
    echo "== $label: $suite"
    timeout --kill-after=5 "$SUITE_TIMEOUT" "$interpreter" "$suite" >"$log" 2>&1
    status=$?
    # The engine's warnings (expected in the fault tests) go to stderr;
    # show the suite's own lines.
    grep -v '^monlight: ' "$log"
    counts=$(grep -E '^[a-z_]+\.lua \(.*\): [0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
    if [ "$status" -ne 0 ] || [ -z "$counts" ]; then
        failed_runs=$((failed_runs + 1))
        if [ "$status" -eq 124 ]; then
            counts="$(basename "$suite") under $label: timed out after $SUITE_TIMEOUT s"
        elif [ -z "$counts" ]; then
            counts="$(basename "$suite") under $label: exited with status $status before its summary"
        fi
        summary="$summary
FAILED  $label  $counts"
    else
        summary="$summary
ok      $label  $counts"
    fi
}

for variant in 5.1 5.4 luajit; do
    case "$variant" in
        luajit) interpreter=luajit ;;
        *) interpreter="lua$variant" ;;
    esac
    if [ ! -f "$BUILD_DIR/lua/$variant/monlight.so" ]; then
        summary="$summary
skip    $variant  no module built (no headers for this Lua)"
        continue
    fi
    if ! command -v "$interpreter" >/dev/null 2>&1; then
        summary="$summary
skip    $variant  no $interpreter interpreter"
        continue
    fi

    export MONLIGHT_LUA_CPATH="$BUILD_DIR/lua/$variant/?.so"
    for suite in "$TESTS"/test_*.lua; do
        run_suite "$variant" "$interpreter" "$suite"
    done
    if [ "$variant" = luajit ]; then
        for suite in "$TESTS/test_metrics.lua" "$TESTS/test_ffi.lua" "$TESTS/test_exit.lua"; do
            MONLIGHT_LUA_FFI=off run_suite "luajit-c-path" "$interpreter" "$suite"
        done
    fi
done

# nginx with Debian's lua-nginx-module, which runs on LuaJIT.
modules=${MONLIGHT_NGINX_MODULES:-/usr/lib/nginx/modules}
if ! command -v nginx >/dev/null 2>&1; then
    summary="$summary
skip    nginx  nginx is not installed"
elif [ ! -f "$modules/ngx_http_lua_module.so" ]; then
    summary="$summary
skip    nginx  no $modules/ngx_http_lua_module.so"
elif [ ! -f "$BUILD_DIR/lua/luajit/monlight.so" ] || ! command -v luajit >/dev/null 2>&1; then
    summary="$summary
skip    nginx  needs luajit and the LuaJIT module"
else
    MONLIGHT_LUA_CPATH="$BUILD_DIR/lua/luajit/?.so" run_suite nginx luajit "$TESTS/nginx_test.lua"
fi

# The rockspec, built into a scratch tree from a copy of the sources (the
# builtin build writes object files next to them), then loaded.
if command -v luarocks >/dev/null 2>&1 && command -v lua5.1 >/dev/null 2>&1; then
    echo "== luarocks: make bindings/lua/monlight-0.1.0-1.rockspec"
    mkdir -p "$work/rock-source/bindings"
    cp -R core "$work/rock-source/core"
    cp -R bindings/lua "$work/rock-source/bindings/lua"
    rock_log="$work/luarocks.log"
    # luarocks looks for headers in /usr/include only, but Debian puts
    # curl's under the multiarch directory.
    rock_variables=""
    multiarch=$(gcc -print-multiarch 2>/dev/null || true)
    for directory in /usr/include "/usr/include/$multiarch"; do
        if [ -f "$directory/curl/curl.h" ]; then
            rock_variables="CURL_INCDIR=$directory"
        fi
    done
    # shellcheck disable=SC2086 # rock_variables is one word or empty
    if (cd "$work/rock-source" && timeout "$SUITE_TIMEOUT" luarocks --lua-version 5.1 make \
            --tree "$work/rocks" bindings/lua/monlight-0.1.0-1.rockspec $rock_variables) >"$rock_log" 2>&1; then
        rock_cpath="$work/rocks/lib/lua/5.1/?.so"
        rock_path="$work/rocks/share/lua/5.1/?.lua"
        check='local m = require("monlight")
local c = m.MetricsClient.new({ base_url = "http://127.0.0.1:9", api_key = "k", exit_deadline = 0.1 })
assert(c:counter("rock_check", { a = 1 }) == true)
assert(io.open((package.path:gsub("%?", "monlight/openresty"))))
io.write(m.version, " ", m.fast_path, "\n")'
        result=$(lua5.1 -e "package.cpath='$rock_cpath'; package.path='$rock_path'" -e "$check" 2>"$work/rock-check.log")
        jit_result=""
        if command -v luajit >/dev/null 2>&1; then
            jit_result=$(luajit -e "package.cpath='$rock_cpath'; package.path='$rock_path'" -e "$check" 2>>"$work/rock-check.log")
        fi
        echo "   lua5.1: $result; luajit: ${jit_result:-not installed}"
        case "$result $jit_result" in
            "0.1.0 c 0.1.0 ffi" | "0.1.0 c ")
                summary="$summary
ok      luarocks  built and loaded (lua5.1: $result; luajit: ${jit_result:-not installed})" ;;
            *)
                failed_runs=$((failed_runs + 1))
                cat "$work/rock-check.log"
                summary="$summary
FAILED  luarocks  the installed rock did not load (log above): $result $jit_result" ;;
        esac
    else
        cat "$rock_log"
        failed_runs=$((failed_runs + 1))
        summary="$summary
FAILED  luarocks  luarocks make failed (log above)"
    fi
else
    summary="$summary
skip    luarocks  luarocks or lua5.1 is not installed"
fi

echo
echo "Lua results:$summary"
if [ "$failed_runs" -ne 0 ]; then
    echo "run-tests: $failed_runs failed"
    exit 1
fi
echo "run-tests: all passed"
