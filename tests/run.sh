#!/usr/bin/env bash
# The whole test suite: installs what the tests need, then runs every test
# of the workspace (unit tests and the integration tests that start real
# agents and real Docker containers). This is the README's test command and
# what CI runs.
#
# Docker leftovers (containers and networks labelled `muster.test`) are swept
# before the run, in case an earlier run was killed, and after it, whatever
# its result; the test image is removed at the end (setup rebuilds it).
set -euo pipefail
cd "$(dirname "$0")/.."

# Removes every container and network labelled muster.test. Containers go in
# batches of at most 10 per `docker rm -f`: this engine has deadlocked when
# ~100 removals ran at once. Best effort: never fails the script.
sweep_docker() {
    local ids
    ids="$(timeout 60 docker ps -aq --filter label=muster.test 2>/dev/null || true)"
    if [ -n "$ids" ]; then
        echo "run: removing $(wc -w <<<"$ids") muster.test container(s)"
        xargs -n 10 timeout 120 docker rm -f <<<"$ids" >/dev/null 2>&1 || true
    fi
    ids="$(timeout 60 docker network ls -q --filter label=muster.test 2>/dev/null || true)"
    if [ -n "$ids" ]; then
        echo "run: removing $(wc -w <<<"$ids") muster.test network(s)"
        xargs -n 10 timeout 120 docker network rm <<<"$ids" >/dev/null 2>&1 || true
    fi
}

# Removes network namespaces left by the fault tests (tests/cluster/netns.rs
# names them mst<pid>x<n>-...), in case an earlier run was killed.
sweep_netns() {
    ip netns list 2>/dev/null | awk '{print $1}' | grep '^mst' | xargs -r -n1 ip netns del 2>/dev/null || true
}

cleanup() {
    sweep_docker
    sweep_netns
    timeout 60 docker image rm -f muster-test/busybox:1 >/dev/null 2>&1 || true
}

bash tests/setup.sh
sweep_docker
sweep_netns
trap cleanup EXIT
# Without these, a signal would end bash without running the EXIT trap.
trap 'exit 130' INT
trap 'exit 143' TERM

status=0
cargo nextest run --workspace --no-fail-fast "$@" || status=$?
exit "$status"
