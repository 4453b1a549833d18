#!/usr/bin/env bash
# Installs every tool the test suite uses on a fresh Debian 12 machine:
# dig (bind9-dnsutils) and dnspython. Idempotent: does nothing when they
# are already there.
set -euo pipefail

need_apt=()
command -v dig >/dev/null 2>&1 || need_apt+=(bind9-dnsutils)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
if ((${#need_apt[@]})); then
    echo "setup: installing Debian packages: ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! python3 -c 'import dns.message' >/dev/null 2>&1; then
    echo "setup: installing Python packages from tests/requirements.txt"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
        -r "$(dirname "$0")/requirements.txt" \
        || python3 -m pip install --quiet --break-system-packages -r "$(dirname "$0")/requirements.txt"
fi

if ! command -v cargo-nextest >/dev/null 2>&1; then
    echo "setup: installing cargo-nextest"
    cargo install --locked cargo-nextest
fi
