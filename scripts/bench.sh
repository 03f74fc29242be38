#!/usr/bin/env bash
# Benchmarks (not tests): the API server through kube-rs, the store engine against Debian's
# etcd, the kubelet on a real node, the scheduler on upstream's scheduler_perf workloads and
# the controller manager, all with hollow nodes where nodes are simulated. Prints Markdown
# tables for docs/BENCHMARKS.md. `scripts/bench.sh <section>` runs one section
# (api, store, kubelet, scheduler, controllers).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
cargo build --release -p skiff -p skiff-bench
target="${CARGO_TARGET_DIR:-$root/target}/release"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r), $(date -u +%F)"
section="${1:-all}"
want() { [ "$section" = all ] || [ "$section" = "$1" ]; }
if want api; then
    echo
    echo "## API server"
    SKIFF_BIN="$target/skiff" "$target/skiff-bench" ${API_BENCH_ARGS:-}
fi
if want store; then
    echo
    echo "## Store"
    # The embedded store and Debian's etcd 3.4 (started by the bench itself) on the same disk.
    "$target/skiff-store-bench" ${STORE_BENCH_ARGS:-}
fi
if want kubelet; then
    echo
    echo "## Kubelet"
    # Pod startup latency and kubelet memory on a real node (network namespaces; needs root).
    SKIFF_BIN="$target/skiff" "$target/skiff-kubelet-bench" ${KUBELET_BENCH_ARGS:-}
fi
if want scheduler; then
    echo
    echo "## Scheduler"
    # scheduler_perf's workloads through the API server, hollow nodes, the scheduler alone.
    SKIFF_BIN="$target/skiff" "$target/skiff-scheduler-bench" ${SCHEDULER_BENCH_ARGS:-}
fi
if want controllers; then
    echo
    echo "## Controller manager"
    SKIFF_BIN="$target/skiff" "$target/skiff-controllers-bench" ${CONTROLLERS_BENCH_ARGS:-}
fi
