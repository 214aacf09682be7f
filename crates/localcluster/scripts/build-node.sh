#!/usr/bin/env bash
# Builds what a real node and its add-ons run, from the Go module proxy, into $OUT:
# kubelet, kube-proxy, kube-controller-manager and kube-scheduler (k8s.io/kubernetes at
# $K8S_VERSION), CoreDNS ($COREDNS_VERSION) and helm ($HELM_VERSION).
#
# Called by `localcluster::assets::ensure_node` under a file lock; safe to run by hand too:
#   OUT=~/.cache/strait/k8s/node-v1.34.4 crates/localcluster/scripts/build-node.sh
#
# The Kubernetes binaries come from the same wrapper module as kube-apiserver's (see
# build-k8s.sh: every `./staging/...` replace of the real go.mod becomes the published
# v0.<minor>.<patch>), so a warm Go cache shares every package between them. One
# `go build -o DIR` of the four main packages links them in parallel.
set -euo pipefail

: "${OUT:?OUT must name the output folder}"
K8S_VERSION="${K8S_VERSION:-v1.34.4}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.15.0}"
HELM_VERSION="${HELM_VERSION:-v4.3.1}"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

command -v go >/dev/null || { echo "error: Go is not installed (need go >= 1.24 on PATH)" >&2; exit 3; }

work="$(mktemp -d "${TMPDIR:-/tmp}/strait-node-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$OUT" "$work/bin"

staging_version="v0.${K8S_VERSION#v1.}"
major=1
minor="$(echo "$K8S_VERSION" | cut -d. -f2)"

echo "==> [1/4] resolving k8s.io/kubernetes@$K8S_VERSION"
gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
[ -f "$gomod" ] || { echo "error: could not download k8s.io/kubernetes@$K8S_VERSION" >&2; exit 4; }
mkdir -p "$work/kube"
cd "$work/kube"
cat > go.mod <<GOMOD
module strait.dev/localcluster/node

go 1.24

require k8s.io/kubernetes $K8S_VERSION
GOMOD
replaces="$(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "$gomod")"
[ -n "$replaces" ] || { echo "error: no staging replaces found in $gomod" >&2; exit 4; }
echo "replace (" >> go.mod
for m in $replaces; do echo "	$m => $m $staging_version" >> go.mod; done
echo ")" >> go.mod
cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	_ "k8s.io/kubernetes/cmd/kube-proxy/app"
	_ "k8s.io/kubernetes/cmd/kube-scheduler/app"
	_ "k8s.io/kubernetes/cmd/kubelet/app"
)
GO
go mod tidy -e >/dev/null 2>&1 || true
go mod download

ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=$major -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
ldflags="$ldflags -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=$major -X k8s.io/client-go/pkg/version.gitMinor=$minor"
echo "==> [2/4] building kubelet, kube-proxy, kube-controller-manager, kube-scheduler $K8S_VERSION (minutes on a cold cache)"
go build -trimpath -ldflags "$ldflags" -o "$work/bin/" \
  k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy \
  k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler

echo "==> [3/4] building CoreDNS $COREDNS_VERSION"
GOBIN="$work/bin" go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"

echo "==> [4/4] building helm $HELM_VERSION"
helm_major="${HELM_VERSION%%.*}"   # v3 or v4: the module path carries the major version
helm_mod="helm.sh/helm/$helm_major"
GOBIN="$work/bin" go install -trimpath -ldflags "-s -w -X helm.sh/helm/$helm_major/internal/version.version=$HELM_VERSION" "$helm_mod/cmd/helm@$HELM_VERSION"

# Install atomically: a reader sees every binary or none (the marker comes last).
for b in kubelet kube-proxy kube-controller-manager kube-scheduler coredns helm; do
  install -m 0755 "$work/bin/$b" "$OUT/$b"
done
"$OUT/kubelet" --version
"$OUT/coredns" -version | head -1
"$OUT/helm" version --short 2>/dev/null || true
touch "$OUT/.complete"
echo "==> installed into $OUT"
