#!/bin/sh
# The Python demo. A FastAPI bookshop (app.py) set up with setup_monlight()
# is served by uvicorn on a free loopback port (serve.py). It gets a few
# real requests: some succeed, /users/{user_id} is asked for several ids,
# one path matches no route, and one route raises from a nested function.
# The server is then stopped, which delivers the buffered metrics. Finally
# direct.py uses ErrorClient and MetricsClient without a framework.
#
# Needs MONLIGHT_ERROR_URL, MONLIGHT_METRICS_URL and MONLIGHT_API_KEY
# (scripts/demo.sh sets them); MONLIGHT_PROJECT is optional. Builds the
# extension in place if needed. Exits non-zero when a request gets an
# unexpected status or a client fails to deliver. Stops only the server
# it started, by its PID.
set -u

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
python="$root/.venv/bin/python"
: "${MONLIGHT_ERROR_URL:?set MONLIGHT_ERROR_URL to the error tracker URL}"
: "${MONLIGHT_METRICS_URL:?set MONLIGHT_METRICS_URL to the metrics collector URL}"
: "${MONLIGHT_API_KEY:?set MONLIGHT_API_KEY to the services API key}"

if [ ! -x "$python" ]; then
    echo "python demo: $python is missing; run ./scripts/install-deps.sh first" >&2
    exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/monlight-python-demo.XXXXXX")
server_pid=""
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -KILL "$server_pid" 2>/dev/null
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! (cd "$root/bindings/python" && "$python" setup.py -q build_ext --inplace) >"$work/build.log" 2>&1; then
    echo "python demo: building the extension failed; its log follows" >&2
    cat "$work/build.log" >&2
    exit 1
fi
PYTHONPATH="$root/bindings/python${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONPATH

# The server's stderr gets uvicorn's traceback for the raising request;
# it is shown only when something fails.
"$python" "$here/serve.py" "$work/port" >"$work/server.out" 2>"$work/server.log" &
server_pid=$!

# Wait up to 10 s for the server to listen.
tries=0
while [ ! -s "$work/port" ]; do
    if ! kill -0 "$server_pid" 2>/dev/null || [ "$tries" -ge 100 ]; then
        echo "python demo: the server did not start; its log follows" >&2
        cat "$work/server.log" >&2
        exit 1
    fi
    tries=$((tries + 1))
    sleep 0.1
done
base="http://127.0.0.1:$(cat "$work/port")"
echo "python demo: bookshop listening at $base"

failures=0
request() {
    method=$1 path=$2 expected=$3
    code=$(curl --silent --max-time 10 --output /dev/null --write-out '%{http_code}' \
        --request "$method" "$base$path")
    echo "python demo: $method $path -> $code"
    if [ "$code" != "$expected" ]; then
        echo "python demo: expected $expected" >&2
        failures=$((failures + 1))
    fi
}

request GET / 200
request GET /books 200
request GET /users/1 200
request GET /users/2 200
request GET /users/3 200
request GET /users/99 404
request POST /orders 201
request GET /wp-login.php 404
request GET /reports/2024-06-01 500

# SIGTERM stops uvicorn; the lifespan's end shuts the metrics client down,
# within its 3 s exit deadline, so 15 s is ample.
kill -TERM "$server_pid"
tries=0
while kill -0 "$server_pid" 2>/dev/null && [ "$tries" -lt 150 ]; do
    tries=$((tries + 1))
    sleep 0.1
done
server_status=0
wait "$server_pid" || server_status=$?
server_pid=""
cat "$work/server.out"
if [ "$server_status" -ne 0 ]; then
    echo "python demo: the server exited with status $server_status" >&2
    failures=$((failures + 1))
fi

if ! "$python" "$here/direct.py"; then
    failures=$((failures + 1))
fi

if [ "$failures" -ne 0 ]; then
    echo "python demo: $failures check(s) failed; the server's log follows" >&2
    cat "$work/server.log" >&2
    exit 1
fi
echo "python demo: done"
