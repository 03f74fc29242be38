#!/usr/bin/env bash
# Set up a fresh Debian machine and start a single-node Skiff cluster in the foreground.
# The admin kubeconfig is written to <data-dir>/kubeconfig.yaml (printed in the log).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -p skiff
data_dir="${SKIFF_DATA_DIR:-$([ "$(id -u)" = 0 ] && echo /var/lib/skiff || echo "$HOME/.local/share/skiff")}"
echo "starting skiff; then: export KUBECONFIG=$data_dir/kubeconfig.yaml PATH=$(pwd)/.tools/bin:\$PATH; kubectl get ns"
exec ./target/release/skiff server --data-dir "$data_dir" "$@"
