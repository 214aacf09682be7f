# Sourced by scripts/test and scripts/demo: installs what a fresh machine lacks.
# Debian packages (iproute2, iptables; containerd, runc, the CNI plugins, conntrack and buildah
# for real nodes and images), Rust's rustfmt and clippy, and the Go-built Kubernetes binaries
# (etcd, kube-apiserver, kubectl; kubelet, kube-proxy, kube-controller-manager,
# kube-scheduler, CoreDNS and helm; cached under ~/.cache/strait/k8s).

if [ "$(id -u)" -ne 0 ]; then
  echo "error: Strait's local clusters need root (network namespaces, veths, routes): run this as root" >&2
  exit 1
fi

need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v sysctl >/dev/null 2>&1 || need+=(procps)
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
command -v containerd >/dev/null 2>&1 || need+=(containerd)
command -v runc >/dev/null 2>&1 || need+=(runc)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v conntrack >/dev/null 2>&1 || need+=(conntrack)
command -v buildah >/dev/null 2>&1 || need+=(buildah)
command -v objcopy >/dev/null 2>&1 || need+=(binutils)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need[@]}"
fi

command -v cargo >/dev/null 2>&1 || { echo "error: cargo is not installed (install Rust with rustup)" >&2; exit 1; }
command -v go >/dev/null 2>&1 || [ -n "${KUBEBUILDER_ASSETS:-}" ] || {
  echo "error: Go is not installed; it builds etcd and kube-apiserver (or set KUBEBUILDER_ASSETS)" >&2; exit 1; }
if command -v rustup >/dev/null 2>&1; then
  for c in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
  done
fi

echo "==> Kubernetes binaries (built once from the Go module proxy)"
KUBE_ASSETS="$(cargo run -q -p strait-localcluster --bin strait-k8s-assets)"
export KUBE_ASSETS
echo "    $KUBE_ASSETS"
STRAIT_NODE_ASSETS="$(cargo run -q -p strait-localcluster --bin strait-k8s-assets -- --node)"
export STRAIT_NODE_ASSETS
echo "    $STRAIT_NODE_ASSETS"
