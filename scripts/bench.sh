#!/usr/bin/env bash
# Benchmarks (not tests): the API server through kube-rs, and the store engine against
# Debian's etcd. Prints Markdown tables for docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
cargo build --release -p skiff -p skiff-bench -p skiff-store
target="${CARGO_TARGET_DIR:-$root/target}/release"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r), $(date -u +%F)"
echo
echo "## API server"
SKIFF_BIN="$target/skiff" "$target/skiff-bench" "$@"
echo
echo "## Store engine"
etcd_args=()
if command -v etcd >/dev/null; then
  etcd_dir=$(mktemp -d)
  etcd --data-dir "$etcd_dir" --listen-client-urls http://127.0.0.1:23790 \
    --advertise-client-urls http://127.0.0.1:23790 --listen-peer-urls http://127.0.0.1:23800 \
    >"$etcd_dir.log" 2>&1 &
  etcd_pid=$!
  trap 'kill $etcd_pid 2>/dev/null; rm -rf "$etcd_dir"' EXIT
  sleep 2
  etcd_args=(--etcd http://127.0.0.1:23790)
fi
"$target/skiff-store-bench" "${etcd_args[@]}"
