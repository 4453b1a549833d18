#!/usr/bin/env bash
# Installs every tool the test suite uses on a fresh Debian 12 machine:
# dig (bind9-dnsutils), dnspython, prometheus (the tests start their own
# server on loopback; the package's service is never used), ip and
# iptables for the fault tests in network namespaces, and for the
# Docker tests busybox-static and the local image muster-test/busybox:1.
# Idempotent: does nothing when they are already there.
set -euo pipefail

need_apt=()
command -v dig >/dev/null 2>&1 || need_apt+=(bind9-dnsutils)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
# The fault tests: hosts in network namespaces, links cut with iptables.
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v iptables >/dev/null 2>&1 || need_apt+=(iptables)
# Clock skew between hosts in the fault tests.
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ] || need_apt+=(libfaketime)
# Certificates for the gRPC TLS tests.
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
if ((${#need_apt[@]})); then
    echo "setup: installing Debian packages: ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! python3 -c 'import dns.message, grpc, grpc_reflection, grpc_health' >/dev/null 2>&1; then
    echo "setup: installing Python packages from tests/requirements.txt"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
        -r "$(dirname "$0")/requirements.txt" \
        || python3 -m pip install --quiet --break-system-packages -r "$(dirname "$0")/requirements.txt"
fi

if ! command -v cargo-nextest >/dev/null 2>&1; then
    echo "setup: installing cargo-nextest"
    cargo install --locked cargo-nextest
fi

# Docker: the discovery tests drive a real engine. They need it answering,
# and a tiny local image (nothing can be pulled: no registry), built here
# from the static busybox binary with `docker import`.
if ! timeout 20 docker info >/dev/null 2>&1; then
    echo "setup: the Docker engine does not answer ('docker info' failed or timed out)." >&2
    echo "setup: start it (e.g. 'service docker start' or 'dockerd &') and run tests/setup.sh again." >&2
    exit 1
fi

if [ ! -x /bin/busybox ]; then
    echo "setup: installing Debian package: busybox-static"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends busybox-static >/dev/null
fi

TEST_IMAGE=muster-test/busybox:1
if ! docker image inspect "$TEST_IMAGE" >/dev/null 2>&1; then
    echo "setup: building the test image $TEST_IMAGE"
    rootfs="$(mktemp -d)"
    trap 'rm -rf "$rootfs"' EXIT
    mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp"
    chmod 1777 "$rootfs/tmp"
    cp /bin/busybox "$rootfs/bin/busybox"
    # touch and rm toggle health checks (docker exec NAME touch /tmp/healthy).
    for applet in sh sleep httpd true false cat echo test touch rm ls mkdir hostname; do
        ln -s busybox "$rootfs/bin/$applet"
    done
    tar -C "$rootfs" -c . \
        | docker import --change 'CMD ["/bin/sleep","3600"]' - "$TEST_IMAGE" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
fi
