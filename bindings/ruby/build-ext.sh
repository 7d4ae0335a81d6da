#!/bin/sh
# Build the monlight/native extension from the repository into
# build/ruby/ext (or the directory given) and print that directory, which
# goes on Ruby's load path together with bindings/ruby/lib. Only what
# changed is recompiled.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
ext_dir=${1:-$root/build/ruby/ext}

mkdir -p "$ext_dir/monlight"
cd "$ext_dir/monlight"
# The Makefile lists the engine's sources, so it is made again when that
# list changes, as well as when extconf.rb does.
sources=$(ls "$root"/core/src/*.c | tr '\n' ' ')
if [ ! -f Makefile ] || [ "$here/ext/monlight/extconf.rb" -nt Makefile ] ||
   [ "$(cat engine-sources.txt 2>/dev/null)" != "$sources" ]; then
    if ! ruby "$here/ext/monlight/extconf.rb" >extconf.out 2>&1; then
        cat extconf.out mkmf.log >&2
        echo "build-ext: extconf.rb failed" >&2
        exit 1
    fi
    printf '%s' "$sources" >engine-sources.txt
fi
if ! make -j2 V=0 >make.out 2>&1; then
    cat make.out >&2
    echo "build-ext: make failed" >&2
    exit 1
fi
echo "$ext_dir"
