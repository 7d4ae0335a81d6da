#!/bin/sh
# Build the Ruby extension, run the minitest suite against the contract
# receiver, then package the gem, install it into a temporary GEM_HOME and
# check that the installed copy loads and reports. Exits non-zero when any
# step fails.
#
#   bindings/ruby/run-tests.sh [MINITEST_OPTIONS]   e.g. -n /fork/ or -v
#
# The extension is built in build/ruby and only recompiled when a source
# changed. The receiver is started here and stopped on exit. Each of the
# two suite runs is given SUITE_TIMEOUT seconds (default 300), and the gem
# check GEM_TIMEOUT (default 180).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build="$root/build/ruby"
suite_timeout=${SUITE_TIMEOUT:-300}
gem_timeout=${GEM_TIMEOUT:-180}

work=$(mktemp -d "${TMPDIR:-/tmp}/monlight-ruby-tests.XXXXXX")
pid_file="$work/receiver.pid"
stop_receiver() {
    python3 "$root/tests/receiver/harness.py" stop --pid-file "$pid_file" 2>/dev/null || true
    rm -rf "$work"
}
trap stop_receiver EXIT
trap 'exit 130' INT TERM

# --- Build --------------------------------------------------------------

echo "ruby: building the extension in $build/ext"
"$here/build-ext.sh" "$build/ext" >/dev/null

# --- Suite --------------------------------------------------------------

# The suite runs twice: against a receiver that closes every connection,
# as the services do, and against one that keeps connections alive, as a
# reverse proxy does, where forked children must not reuse the parent's.
for mode in close keep-alive; do
    python3 "$root/tests/receiver/harness.py" stop --pid-file "$pid_file" 2>/dev/null || true
    if [ "$mode" = keep-alive ]; then keep_alive=--keep-alive; else keep_alive=; fi
    url=$(python3 "$root/tests/receiver/harness.py" start --record "$work/records-$mode.jsonl" \
        --pid-file "$pid_file" --port-file "$work/receiver.port" $keep_alive)
    echo "ruby: receiver at $url ($mode)"

    status=0
    MONLIGHT_TEST_URL="$url" MONLIGHT_TEST_RUBYLIB="$here/lib:$build/ext" \
        timeout "$suite_timeout" ruby -I"$here/lib" -I"$build/ext" -I"$here/test" -e '
            files = Dir[File.join(ARGV.shift, "*_test.rb")].sort
            files.each { |file| require file }
        ' "$here/test" "$@" || status=$?
    if [ "$status" -eq 124 ]; then
        echo "ruby: the suite did not finish within $suite_timeout s" >&2
    fi
    [ "$status" -eq 0 ] || exit "$status"
done

# --- Packaged gem -------------------------------------------------------

echo "ruby: building and installing the gem"
gem_file=$("$here/build-gem.sh" "$work/pkg")
gem_home="$work/gems"
if ! GEM_HOME="$gem_home" timeout "$gem_timeout" gem install --local --no-document \
        --install-dir "$gem_home" "$gem_file" >"$work/gem-install.log" 2>&1; then
    cat "$work/gem-install.log" >&2
    echo "ruby: gem install failed" >&2
    exit 1
fi
(
    cd "$work"
    env -u RUBYLIB -u RUBYOPT GEM_HOME="$gem_home" GEM_PATH="$gem_home" MONLIGHT_TEST_URL="$url" \
        timeout 60 ruby "$here/test/installed_gem_check.rb" "$gem_home"
)
