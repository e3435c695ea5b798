#!/usr/bin/env bash
# Offline checks of deploy/ (no Docker engine, no API server needed): hadolint on the Dockerfile,
# yamllint on every YAML file, then each kustomize overlay rendered with `kubectl kustomize` and
# validated strictly (unknown fields fail) against the bundled Kubernetes schemas.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=.venv/bin
# Native sidecars (initContainers[].restartPolicy: Always) are GA in 1.33; older schemas reject them.
KUBERNETES_VERSION=1.33.0

echo "hadolint deploy/Dockerfile"
"$BIN/hadolint" --no-color --failure-threshold style deploy/Dockerfile

echo "yamllint deploy/"
"$BIN/yamllint" --strict -c deploy/.yamllint.yaml deploy

if ! command -v kubectl >/dev/null 2>&1; then
  echo "kubectl not found: manifests not rendered (hadolint and yamllint passed)"
  exit 0
fi

rendered="$(mktemp -d)"
trap 'rm -rf "$rendered"' EXIT
for overlay in deploy/k8s/overlays/*/; do
  name="$(basename "$overlay")"
  echo "kubectl kustomize $overlay | kubernetes-validate --strict -k $KUBERNETES_VERSION"
  kubectl kustomize "$overlay" >"$rendered/$name.yaml"
  "$BIN/kubernetes-validate" --strict --quiet -k "$KUBERNETES_VERSION" "$rendered/$name.yaml"
done
echo "deploy checks passed"
