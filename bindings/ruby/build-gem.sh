#!/bin/sh
# Package the monlight gem into OUTPUT_DIR (default build/ruby/pkg) and
# print the path of the .gem file.
#
# The gem must install without SWIG and without this repository, so the
# gem directory is staged in a temporary directory with the wrapper that
# SWIG generates from swig/monlight.i and a copy of the engine's sources
# (core/include, core/src) under ext/monlight/vendor/core.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
output=${1:-$root/build/ruby/pkg}
mkdir -p "$output"
output=$(cd "$output" && pwd)

stage=$(mktemp -d "${TMPDIR:-/tmp}/monlight-gem.XXXXXX")
trap 'rm -rf "$stage"' EXIT

cp -R "$here/lib" "$here/ext" "$here/monlight.gemspec" "$here/README.md" "$stage/"
mkdir -p "$stage/ext/monlight/vendor/core"
cp -R "$root/core/include" "$root/core/src" "$stage/ext/monlight/vendor/core/"
swig -ruby -I"$root/core/include" -I"$here/ext/monlight" \
    -o "$stage/ext/monlight/monlight_wrap.c" "$root/swig/monlight.i"

version=$(ruby -e 'require ARGV[0]; print Monlight::VERSION' "$here/lib/monlight/version.rb")
gem_file="$output/monlight-$version.gem"
# gem build warns that the gemspec names no license or homepage; its
# output is shown only when the build fails.
if ! log=$(cd "$stage" && gem build monlight.gemspec --output "$gem_file" 2>&1); then
    echo "$log" >&2
    echo "build-gem: gem build failed" >&2
    exit 1
fi
echo "$gem_file"
