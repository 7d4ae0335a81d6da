#!/bin/sh
# The monlight demo: real errors and a stream of metrics through the
# engine, from the command line and from every binding that has a demo,
# then a summary of what the services accepted.
#
# With MONLIGHT_ERROR_URL, MONLIGHT_METRICS_URL and MONLIGHT_API_KEY set,
# everything goes to those services. Otherwise a contract receiver is
# started on a loopback port and stopped at the end.
set -u

cd "$(dirname "$0")/.."
ROOT=$(pwd)
MONLIGHT="$ROOT/build/monlight"
export MONLIGHT

workdir=$(mktemp -d)
receiver_pid_file="$workdir/receiver.pid"
record="$workdir/records.jsonl"
local_receiver=0

cleanup() {
    if [ "$local_receiver" -eq 1 ]; then
        python3 tests/receiver/harness.py stop --pid-file "$receiver_pid_file" >/dev/null 2>&1
    fi
    rm -rf "$workdir"
}
trap cleanup EXIT INT TERM

if [ -n "${MONLIGHT_ERROR_URL:-}" ] && [ -n "${MONLIGHT_METRICS_URL:-}" ] &&
   [ -n "${MONLIGHT_API_KEY:-}" ]; then
    echo "demo: sending to $MONLIGHT_ERROR_URL and $MONLIGHT_METRICS_URL"
else
    MONLIGHT_API_KEY="demo-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
    url=$(python3 tests/receiver/harness.py start --record "$record" \
          --pid-file "$receiver_pid_file" --port-file "$workdir/receiver.port" \
          --api-key "$MONLIGHT_API_KEY" --log "$workdir/receiver.log") || {
        echo "demo: the contract receiver did not start" >&2
        exit 1
    }
    local_receiver=1
    MONLIGHT_ERROR_URL=$url
    MONLIGHT_METRICS_URL=$url
    echo "demo: no services configured; sending to a contract receiver at $url"
fi
export MONLIGHT_ERROR_URL MONLIGHT_METRICS_URL MONLIGHT_API_KEY
export MONLIGHT_PROJECT=${MONLIGHT_PROJECT:-monlight-demo}

failures=0
step() {
    echo
    echo "--- $1"
    shift
    if ! "$@"; then
        echo "demo: step failed: $*" >&2
        failures=$((failures + 1))
    fi
}

# The command line: a cron job that fails twice (one error group, count
# 2) and succeeds once, then a stream of metrics.
step "cli: a failing cron job, twice" examples/cli/cron-job.sh
step "cli: the same failure again" examples/cli/cron-job.sh
step "cli: the job succeeding" examples/cli/cron-job.sh --skip-bad
metric_stream() {
    i=0
    while [ $i -lt 20 ]; do
        "$MONLIGHT" histogram demo_response_seconds "0.0$((i % 9 + 1))" \
            --label endpoint=/api/orders || return 1
        i=$((i + 1))
    done
    "$MONLIGHT" gauge demo_queue_depth 17 --label queue=emails &&
        "$MONLIGHT" counter deploys_total --label env=prod
}
step "cli: a stream of metrics" metric_stream

for language in python lua ruby; do
    script="examples/$language/demo.sh"
    if [ -x "$script" ]; then
        step "$language" "$script"
    fi
done

if [ "$local_receiver" -eq 1 ]; then
    echo
    echo "=== what the receiver accepted"
    python3 tests/receiver/summary.py "$record"
fi

echo
if [ "$failures" -ne 0 ]; then
    echo "demo: $failures step(s) failed" >&2
    exit 1
fi
echo "demo: done"
