#!/usr/bin/env bash
# Builds etcd, kube-apiserver and kubectl from the Go module proxy into $OUT.
#
# Called by `localcluster::assets` under a file lock; safe to run by hand too:
#   OUT=~/.cache/strait/k8s/v1.34.4-etcd-v3.6.16 crates/localcluster/scripts/build-k8s.sh
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod maps the staging modules
# (k8s.io/api, k8s.io/client-go, ...) to local folders. A wrapper module requires it
# and replaces every one of those entries with the published v0.<minor>.<patch> of
# that module. The list is read from the real go.mod so it never drifts.
set -euo pipefail

: "${OUT:?OUT must name the output folder}"
K8S_VERSION="${K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

command -v go >/dev/null || { echo "error: Go is not installed (need go >= 1.24 on PATH)" >&2; exit 3; }

work="$(mktemp -d "${TMPDIR:-/tmp}/strait-k8s-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$OUT"

staging_version="v0.${K8S_VERSION#v1.}"
major=1
minor="$(echo "$K8S_VERSION" | cut -d. -f2)"

echo "==> [1/4] downloading k8s.io/kubernetes@$K8S_VERSION"
gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
[ -f "$gomod" ] || { echo "error: could not download k8s.io/kubernetes@$K8S_VERSION" >&2; exit 4; }

mkdir -p "$work/kube"
cd "$work/kube"
cat > go.mod <<GOMOD
module strait.dev/localcluster/kube

go 1.24

require k8s.io/kubernetes $K8S_VERSION
GOMOD
# Every `k8s.io/x => ./staging/...` becomes `k8s.io/x => k8s.io/x v0.N.M`.
replaces="$(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "$gomod")"
[ -n "$replaces" ] || { echo "error: no staging replaces found in $gomod" >&2; exit 4; }
echo "replace (" >> go.mod
for m in $replaces; do echo "	$m => $m $staging_version" >> go.mod; done
echo ")" >> go.mod
cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
	_ "k8s.io/kubernetes/cmd/kubectl/app"
)
GO
echo "==> [2/4] resolving $(echo "$replaces" | wc -l) staging modules at $staging_version"
go mod tidy -e >/dev/null 2>&1 || true
go mod download

ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=$major -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
ldflags="$ldflags -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=$major -X k8s.io/client-go/pkg/version.gitMinor=$minor"
echo "==> [3/4] building kube-apiserver and kubectl $K8S_VERSION (a few minutes on a cold cache)"
go build -trimpath -ldflags "$ldflags" -o "$work/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
go build -trimpath -ldflags "$ldflags" -o "$work/kubectl" k8s.io/kubernetes/cmd/kubectl

echo "==> [4/4] building etcd $ETCD_VERSION"
mkdir -p "$work/etcd"
cd "$work/etcd"
cat > go.mod <<GOMOD
module strait.dev/localcluster/etcd

go 1.24

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
GOMOD
cat > main.go <<'GO'
// Command etcd runs etcd's own main, pinned by this module's go.mod.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
go mod tidy
go build -trimpath -ldflags "-s -w" -o "$work/etcd-bin" .

# Install atomically: a reader either sees all three binaries or none.
install -m 0755 "$work/kube-apiserver" "$OUT/kube-apiserver"
install -m 0755 "$work/kubectl" "$OUT/kubectl"
install -m 0755 "$work/etcd-bin" "$OUT/etcd"
"$OUT/kube-apiserver" --version
"$OUT/etcd" --version | head -1
touch "$OUT/.complete"
echo "==> installed into $OUT"
