#!/bin/sh
# The Ruby demo: a Sinatra shop (config.ru, app.rb) instrumented with
# Monlight::Rack::Middleware, served by WEBrick on a free loopback port.
# It receives a few requests, some of which succeed, one of which hits no
# route, and one raises from a nested method. It is then stopped, which
# delivers the buffered metrics.
#
# Needs MONLIGHT_ERROR_URL, MONLIGHT_METRICS_URL and MONLIGHT_API_KEY
# (scripts/demo.sh sets them); MONLIGHT_PROJECT is optional. Exits
# non-zero when a request gets an unexpected status or the server fails
# to deliver. Stops only the server it started.
set -u

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
: "${MONLIGHT_ERROR_URL:?set MONLIGHT_ERROR_URL to the error tracker URL}"
: "${MONLIGHT_METRICS_URL:?set MONLIGHT_METRICS_URL to the metrics collector URL}"
: "${MONLIGHT_API_KEY:?set MONLIGHT_API_KEY to the services API key}"

work=$(mktemp -d "${TMPDIR:-/tmp}/monlight-ruby-demo.XXXXXX")
server_pid=""
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -KILL "$server_pid" 2>/dev/null
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ext_dir=$("$root/bindings/ruby/build-ext.sh") || exit 1

# The server's stderr gets the backtrace that WEBrick's Rack handler
# prints for the raising request; it is shown only when something fails.
ruby -I"$root/bindings/ruby/lib" -I"$ext_dir" "$here/server.rb" "$work/port" 2>"$work/server.log" &
server_pid=$!

# Wait up to 10 s for the server to listen.
tries=0
while [ ! -s "$work/port" ]; do
    if ! kill -0 "$server_pid" 2>/dev/null || [ "$tries" -ge 100 ]; then
        echo "ruby demo: the server did not start; its log follows" >&2
        cat "$work/server.log" >&2
        exit 1
    fi
    tries=$((tries + 1))
    sleep 0.1
done
base="http://127.0.0.1:$(cat "$work/port")"
echo "ruby demo: shop listening at $base"

failures=0
request() {
    method=$1 path=$2 expected=$3
    # An empty body still gets a Content-Length, which WEBrick requires
    # on a POST.
    code=$(curl --silent --max-time 10 --output /dev/null --write-out '%{http_code}' \
        --request "$method" --data-binary "" "$base$path")
    echo "ruby demo: $method $path -> $code"
    if [ "$code" != "$expected" ]; then
        echo "ruby demo: expected $expected" >&2
        failures=$((failures + 1))
    fi
}

request GET / 200
request GET /orders/1 200
request GET /orders/2 200
request POST /orders 201
request POST /checkout/2?amount=40 200
request GET /nowhere 404
request POST /checkout/3?amount=250 500

# SIGTERM stops the server, which then shuts its clients down. That takes
# at most the clients' 3 s exit deadline plus a 5 s request timeout, so
# 15 s is ample.
kill -TERM "$server_pid"
tries=0
while kill -0 "$server_pid" 2>/dev/null && [ "$tries" -lt 150 ]; do
    tries=$((tries + 1))
    sleep 0.1
done
server_status=0
wait "$server_pid" || server_status=$?
server_pid=""
if [ "$server_status" -ne 0 ]; then
    echo "ruby demo: the server exited with status $server_status" >&2
    failures=$((failures + 1))
fi

if [ "$failures" -ne 0 ]; then
    echo "ruby demo: $failures check(s) failed; the server's log follows" >&2
    cat "$work/server.log" >&2
    exit 1
fi
