#!/usr/bin/env bash
# Re-vendors KServe's InferenceService CRD from the Go module proxy (no git clone, no internet beyond the
# proxy): `bash manifests/third_party/refresh-kserve-crd.sh v0.20.0`. Keep the version equal to the
# `kserve` pin in pyproject.toml's `kserve` extra, so the Python models and the schema agree.
set -euo pipefail
version="${1:?usage: $0 vX.Y.Z (the github.com/kserve/kserve module version)}"
module=github.com/kserve/kserve
source_path=config/crd/full/serving.kserve.io_inferenceservices.yaml
here="$(cd "$(dirname "$0")" && pwd)"
dir="$(cd "$(mktemp -d)" && GOFLAGS=-mod=mod go mod download -json "$module@$version" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')"
{
  echo "# KServe's InferenceService CRD (serving.kserve.io/v1beta1), vendored verbatim for API servers"
  echo "# without KServe (the test bed): $module@$version, file $source_path."
  echo "# In a cluster, install KServe itself. Refresh: bash manifests/third_party/refresh-kserve-crd.sh $version"
  echo "# About 640 kB as JSON: too big for client-side apply's last-applied annotation, so apply it"
  echo "# with \`kubectl apply --server-side\` (as KServe's own install does)."
  cat "$dir/$source_path"
} > "$here/inferenceservices.serving.kserve.io.yaml"
echo "wrote $here/inferenceservices.serving.kserve.io.yaml from $module@$version"
