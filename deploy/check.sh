#!/usr/bin/env bash
# Checks the shipped Kubernetes manifests: valid objects for the Kubernetes API (strict:
# unknown fields refused; kubernetes-validate from PyPI carries the OpenAPI schemas), and the
# ConfigMap's config.toml accepted by the daemon's `--check` (its upstream's cluster DNS name
# swapped for an address that resolves here).
#   deploy/check.sh [path/to/zerocopy-server]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/zerocopy-server}
for version in 1.30.0 1.37.0; do
  kubernetes-validate --strict --quiet -k "$version" \
    deploy/kubernetes/configmap.yaml deploy/kubernetes/deployment.yaml deploy/kubernetes/service.yaml
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$tmp/config.toml" <<'PY'
import sys, yaml
with open("deploy/kubernetes/configmap.yaml") as f:
    data = yaml.safe_load(f)["data"]["config.toml"]
with open(sys.argv[1], "w") as f:
    f.write(data.replace("web.default.svc.cluster.local", "127.0.0.1"))
PY
"$bin" --check --config "$tmp/config.toml"
echo "deploy/kubernetes: ok"
