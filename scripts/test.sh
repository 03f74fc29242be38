#!/usr/bin/env bash
# The whole test suite: lints, unit and integration tests, end-to-end tests with stock kubectl
# and the Python client against real `skiff server` processes. This is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
scripts/setup.sh
export PATH="$root/.tools/bin:$PATH"
export KUBECTL="$root/.tools/bin/kubectl"

cargo fmt --all --check
cargo build --workspace --all-targets
cargo clippy --workspace --all-targets --quiet -- -D warnings
export SKIFF_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/skiff"

status=0
cargo nextest run --workspace --profile ci || status=$?
# The API server's end-to-end suite once more, every test on a real etcd it starts.
# (--workspace with a filter, not -p: the same feature set, so nothing is rebuilt.)
SKIFF_TEST_STORE=etcd cargo nextest run --workspace --profile ci -E 'package(skiff-e2e)' || status=$?

# pytest exits 5 when it collects no tests; that is a failure of the suite, not a pass.
"$root/.tools/venv/bin/pytest" -q e2e/python || status=$?
exit $status
