#!/usr/bin/env bash
# The whole test suite: installs what the tests need, then runs every test
# of the workspace (unit tests and the integration tests that start real
# agents). This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh
cargo nextest run --workspace --no-fail-fast "$@"
