#!/usr/bin/env bash
# Benchmarks (not tests): the API server through kube-rs, and the store engine against
# Debian's etcd. Prints Markdown tables for docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
cargo build --release -p skiff -p skiff-bench
target="${CARGO_TARGET_DIR:-$root/target}/release"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r), $(date -u +%F)"
echo
echo "## API server"
SKIFF_BIN="$target/skiff" "$target/skiff-bench" "$@"
echo
echo "## Store"
# The embedded store and Debian's etcd 3.4 (started by the bench itself) on the same disk.
"$target/skiff-store-bench" ${STORE_BENCH_ARGS:-}
echo
echo "## Kubelet"
# Pod startup latency and kubelet memory on a real node (network namespaces; needs root).
SKIFF_BIN="$target/skiff" "$target/skiff-kubelet-bench" ${KUBELET_BENCH_ARGS:-}
