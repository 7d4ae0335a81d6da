#!/bin/sh
# Install what building and testing monlight needs on a Debian 12 machine:
# system packages through apt-get (with sudo when not root) and Python
# packages into the project's .venv. Safe to run again: it only installs
# what is missing, so a second run takes a second or two.
set -eu

cd "$(dirname "$0")/.."

# Build tools and the engine's libraries (and the curl command, which the
# demo and test scripts use); Lua, Ruby and nginx for the bindings; clang
# for the fuzzer; abigail-tools for the ABI check. LuaJIT
# comes as OpenResty's fork (luajit2) because Debian's nginx Lua module
# needs it and it conflicts with the plain luajit package.
PACKAGES="
build-essential cmake ninja-build pkg-config git curl
libcurl4-openssl-dev libcjson-dev libcmocka-dev
python3 python3-venv python3-dev
lua5.1 liblua5.1-0-dev luajit2 libluajit2-5.1-dev lua5.4 liblua5.4-dev luarocks
nginx-light libnginx-mod-http-lua
ruby ruby-dev swig ruby-minitest ruby-rack ruby-webrick ruby-sinatra
clang libclang-rt-14-dev
abigail-tools valgrind
"

missing=""
for package in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $package"
    fi
done

if [ -n "$missing" ]; then
    echo "install-deps: installing system packages:$missing"
    if [ "$(id -u)" -eq 0 ]; then
        sudo=""
    else
        sudo="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -q
    # nginx must not start a system-wide server on port 80: the tests start
    # their own nginx with their own prefix. policy-rc.d only exists for the
    # duration of this install.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
        $sudo chmod +x /usr/sbin/policy-rc.d
        remove_policy=1
    else
        remove_policy=0
    fi
    $sudo apt-get install -y -q --no-install-recommends $missing
    if [ "$remove_policy" -eq 1 ]; then
        $sudo rm -f /usr/sbin/policy-rc.d
    fi
fi

# Python packages for the tests, the demo and the benchmarks.
if [ ! -x .venv/bin/python ]; then
    echo "install-deps: creating .venv"
    python3 -m venv .venv
fi
if ! .venv/bin/python -c "import cffi, pytest, fastapi, uvicorn, httpx" 2>/dev/null \
   || [ requirements-dev.txt -nt .venv/.requirements-stamp ]; then
    echo "install-deps: installing Python packages into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -r requirements-dev.txt
    touch .venv/.requirements-stamp
fi
