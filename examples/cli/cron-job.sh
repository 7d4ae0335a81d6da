#!/bin/sh
# How a cron job reports through the monlight command: run the job, count
# the run, time it, and report its traceback when it fails. Needs
# MONLIGHT_ERROR_URL, MONLIGHT_METRICS_URL and MONLIGHT_API_KEY.
set -u

cd "$(dirname "$0")"
MONLIGHT=${MONLIGHT:-../../build/monlight}
JOB_ARGS=${1:-}

stderr_file=$(mktemp)
trap 'rm -f "$stderr_file"' EXIT

started=$(date +%s.%N)
if python3 nightly_report.py $JOB_ARGS 2>"$stderr_file"; then
    status=ok
else
    status=failed
    # The last line of a Python traceback is "Type: message".
    last_line=$(tail -n 1 "$stderr_file")
    "$MONLIGHT" error --type "${last_line%%:*}" --message "${last_line#*: }" \
        --traceback-file "$stderr_file" || exit 1
fi
elapsed=$(awk -v start="$started" -v end="$(date +%s.%N)" 'BEGIN { printf "%.3f", end - start }')

"$MONLIGHT" counter cron_runs_total --label job=nightly_report --label status=$status || exit 1
"$MONLIGHT" histogram cron_duration_seconds "$elapsed" --label job=nightly_report || exit 1
echo "nightly_report: $status, reported"
