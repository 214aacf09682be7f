//! # strait-localcluster
//!
//! Real Kubernetes clusters on one machine, for Strait's end-to-end tests and its demo. No
//! container engine or image registry exists where Strait is built, so a cluster here is:
//!
//! ```text
//!  ┌──────────── Cluster "east" (slot 1) ─────────────┐
//!  │ etcd ◄── kube-apiserver :127.0.0.1:<free port>   │  own CA, serving cert, admin cert,
//!  │            ▲  RBAC, TokenRequest/TokenReview     │  service-account key, kubeconfig
//!  │            │ watch                               │
//!  │  endpoint-slice writer (stands in for the        │
//!  │  controller-manager: Pods + Services ─► slices)  │
//!  │                                                  │
//!  │  Pod "web" = netns strait-s1-N ── veth ──┐       │  pod IPs from 198.18.64.0/18
//!  │     processes run inside via `ip netns exec`    │  service IPs from 198.19.64.0/18
//!  └──────────────────────────────────────────┼───────┘
//!   root namespace: 198.18.0.0/15 ─► blackhole; one /32 route per pod veth
//! ```
//!
//! Start one with [`Cluster::start`]; run a process as a pod with [`Cluster::pod`]. The etcd and
//! kube-apiserver binaries come from [`assets::ensure`], which builds them once from the Go
//! module proxy into a cache (or takes `KUBEBUILDER_ASSETS`).
//!
//! With [`ClusterConfig::with_nodes`], a cluster also runs kube-controller-manager,
//! kube-scheduler and real nodes (containerd, runc, CNI, kubelet, kube-proxy in a network
//! namespace each), CoreDNS, and a LoadBalancer "cloud": the tier on which images, Helm
//! charts and webhooks are proven. See [`node`].
//!
//! Everything is torn down on drop, also while a test panics: processes are killed, network
//! namespaces, veths and routes removed, and the data folder deleted unless `STRAIT_KEEP=1`.
//! When a test panics, the tail of every process log is printed. A run that was killed outright
//! is cleaned up by the next run that takes the same slot (see [`net::Slot`]).

mod api;
pub mod assets;
mod cluster;
mod endpoints;
mod error;
pub mod net;
pub mod node;
pub mod pki;
mod pod;
mod process;

pub use cluster::{Cluster, ClusterConfig};
pub use error::Error;
pub use pod::{Pod, PodSpec};
pub use process::Process;

/// Fails with a clear error unless the process runs as root; network namespaces, veths and
/// routes all need it.
pub fn require_root() -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the effective uid of the process reading it.
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .map_err(|source| Error::Io {
            what: "reading /proc/self".into(),
            source,
        })?;
    if uid != 0 {
        return Err(Error::NotRoot { uid });
    }
    Ok(())
}

/// Whether `STRAIT_KEEP=1` asks to keep data folders for inspection.
pub(crate) fn keep_data() -> bool {
    std::env::var_os("STRAIT_KEEP").is_some_and(|v| v == "1")
}
