#!/bin/sh
# The Lua demo: examples/lua/example.lua under each Lua that has a built
# module, then an nginx with examples/openresty/nginx.conf on a free
# loopback port, which serves a few requests (one handler fails) and is
# stopped, which delivers what its workers buffered.
#
# Needs MONLIGHT_ERROR_URL, MONLIGHT_METRICS_URL and MONLIGHT_API_KEY
# (scripts/demo.sh sets them) and `make build`; MONLIGHT_PROJECT is
# optional. Exits non-zero when an example fails, a request gets an
# unexpected status, or nginx logs a delivery failure. Stops only the
# nginx it started, by the PID in its pid file.
set -u

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${BUILD_DIR:-$root/build}
: "${MONLIGHT_ERROR_URL:?set MONLIGHT_ERROR_URL to the error tracker URL}"
: "${MONLIGHT_METRICS_URL:?set MONLIGHT_METRICS_URL to the metrics collector URL}"
: "${MONLIGHT_API_KEY:?set MONLIGHT_API_KEY to the services API key}"
export MONLIGHT_ERROR_URL MONLIGHT_METRICS_URL MONLIGHT_API_KEY

work=$(mktemp -d "${TMPDIR:-/tmp}/monlight-lua-demo.XXXXXX")
nginx_pid=""
cleanup() {
    if [ -n "$nginx_pid" ] && kill -0 "$nginx_pid" 2>/dev/null; then
        kill -KILL "$nginx_pid" 2>/dev/null
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

failures=0
export LUA_PATH="$build/lua/?.lua;;"

# --- plain Lua ------------------------------------------------------------

for variant in 5.4 5.1 luajit; do
    case "$variant" in
        luajit) interpreter=luajit ;;
        *) interpreter="lua$variant" ;;
    esac
    if [ ! -f "$build/lua/$variant/monlight.so" ] || ! command -v "$interpreter" >/dev/null 2>&1; then
        continue
    fi
    echo "lua demo: example.lua under $interpreter"
    if ! LUA_CPATH="$build/lua/$variant/?.so;;" \
         timeout 60 "$interpreter" "$here/example.lua" 2>"$work/example.log"; then
        echo "lua demo: example.lua failed under $interpreter; its warnings follow" >&2
        cat "$work/example.log" >&2
        failures=$((failures + 1))
    fi
done

# --- OpenResty ------------------------------------------------------------

modules=${MONLIGHT_NGINX_MODULES:-/usr/lib/nginx/modules}
if ! command -v nginx >/dev/null 2>&1 || [ ! -f "$modules/ngx_http_lua_module.so" ] ||
   [ ! -f "$build/lua/luajit/monlight.so" ]; then
    echo "lua demo: no nginx with lua-nginx-module or no LuaJIT build; skipping OpenResty" >&2
    exit $((failures > 0))
fi

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$work/nginx/logs"
sed -e "s|@PORT@|$port|" \
    -e "s|@NGINX_MODULES@|$modules|" \
    -e "s|@LUA_PATH@|$build/lua/?.lua|" \
    -e "s|@LUA_CPATH@|$build/lua/luajit/?.so|" \
    -e "s|@APP_DIR@|$root/examples/openresty|" \
    "$root/examples/openresty/nginx.conf" >"$work/nginx/nginx.conf"

if ! nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" 2>"$work/nginx-start.log"; then
    echo "lua demo: nginx did not start" >&2
    cat "$work/nginx-start.log" "$work/nginx/logs/error.log" >&2 2>/dev/null
    exit 1
fi
nginx_pid=$(cat "$work/nginx/logs/nginx.pid")
base="http://127.0.0.1:$port"
echo "lua demo: nginx $nginx_pid listening at $base"

request() {
    path=$1 expected=$2
    code=$(curl --silent --max-time 10 --output /dev/null --write-out '%{http_code}' \
        -H "X-Session-Token: not-sent" -H "Authorization: Bearer not-sent" "$base$path")
    echo "lua demo: GET $path -> $code"
    if [ "$code" != "$expected" ]; then
        echo "lua demo: expected $expected" >&2
        failures=$((failures + 1))
    fi
}

# /ready is not counted in the request metrics, so the collector gets
# exactly the requests printed below.
tries=0
until curl --silent --fail --output /dev/null "$base/ready" || [ "$tries" -ge 100 ]; do
    tries=$((tries + 1))
    sleep 0.1
done

request /hello 200
request /users/1 200
request /users/2 200
request /users/9 404
request "/checkout?code=SPRING" 500
request "/checkout?code=SPRING" 500

# SIGQUIT: the workers finish their requests and exit, and the engine
# delivers what they hold within its 3 s exit deadline.
kill -QUIT "$nginx_pid"
tries=0
while kill -0 "$nginx_pid" 2>/dev/null && [ "$tries" -lt 150 ]; do
    tries=$((tries + 1))
    sleep 0.1
done
if kill -0 "$nginx_pid" 2>/dev/null; then
    echo "lua demo: nginx did not exit within 15 s of SIGQUIT" >&2
    failures=$((failures + 1))
fi

# The engine writes its warnings (failed deliveries) to stderr, which
# nginx sends to the error log.
log="$work/nginx/logs/error.log"
if grep -E '^monlight: |\[(alert|emerg|crit)\]' "$log" >/dev/null; then
    echo "lua demo: nginx logged problems:" >&2
    grep -E '^monlight: |\[(alert|emerg|crit)\]' "$log" >&2
    failures=$((failures + 1))
fi

if [ "$failures" -ne 0 ]; then
    echo "lua demo: $failures problem(s)" >&2
    exit 1
fi
echo "lua demo: done"
