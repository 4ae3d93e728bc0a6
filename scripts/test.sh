#!/usr/bin/env bash
# The project's test command: installs redis-server when it is missing (the Redis sync tests
# start their own servers on free loopback ports) and Debian's chromium when /usr/bin/chromium
# is missing (tests/dashboard_browser.rs drives it headless), then runs the whole suite with
# every feature. Extra arguments go to `cargo test`, e.g. `scripts/test.sh --test redis_sync`.
set -euo pipefail
cd "$(dirname "$0")/.."

# Installs Debian packages with apt-get (through sudo when not root).
apt_install() {
    echo "scripts/test.sh: installing $*" >&2
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq "$@" >/dev/null
}

if ! command -v redis-server >/dev/null 2>&1; then
    apt_install redis-server
    # The package may start a system service on the default port; the tests need none.
    if command -v service >/dev/null 2>&1; then
        ${sudo:-} service redis-server stop >/dev/null 2>&1 || true
    fi
fi

if [ ! -x /usr/bin/chromium ]; then
    apt_install chromium
fi

exec cargo test --all-features "$@"
