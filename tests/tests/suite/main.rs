//! The two-cluster suite on real nodes: what Linkerd's multicluster suite checks on its two
//! k3d clusters, then the faults a production pair meets. Both clusters are installed with
//! helm (one trust anchor) and linked both ways with `strait multicluster link`: west → east
//! through east's gateway, east → west in remote-discovery mode (pod to pod, the flat network
//! the harness gives every cluster).
//!
//! ```text
//!  west                                    east
//!  client ──HTTP/1, gRPC, TCP──► gateway ──► web, greeter, echo   (mirrors *-east)
//!  users  ◄───────── pod to pod, mTLS ─────── caller               (mirror users-west)
//! ```
//!
//! In order: `check --multicluster` passes and `gateways` shows the peer alive, on each side;
//! traffic by DNS name reaches each exported service with the client's identity seen at the
//! gateway; the Link's label and annotation exclusions hold on the mirror; remote discovery
//! reaches west's pod directly, that pod's proxy seeing the caller's own identity; east's
//! StatefulSet is reached pod by pod by hostname, and its per-pod mirrors follow a scale-down
//! and an unexport; a federated Service with a member in each cluster is answered by both,
//! loses east's endpoints when east's member leaves and is gone with the last; Servers and
//! AuthorizationPolicies refuse (403 at web's proxy, closed at east's gateway) and admit
//! as they say, changed without restarts. Then the
//! faults, each with its outcome: east's gateway gone (mirrors not ready, calls refused at
//! once; back, the same client is served again), east's API server stopped across an export
//! and an unexport (nothing deleted meanwhile, traffic keeps flowing, converges when back),
//! west's mirror leader deleted during changes (another replica takes over; no orphan, no
//! duplicate), east's kubelet restarted (pods and mirrors recover). Unexport and unlink
//! remove their mirrors; east's trust anchor replaced refuses cross-cluster traffic and
//! `check` says why. Nothing of the run is left on the machine afterwards.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first unexpected error

#[path = "../install_support/mod.rs"]
mod install_support;
#[path = "../linked_support/mod.rs"]
mod linked_support;
#[path = "../nodes_support/mod.rs"]
mod nodes_support;

mod faults;
mod federated;
mod headless;
mod policy;
mod traffic;

use faults::*;
use install_support::*;
use nodes_support::Traces;
use std::collections::BTreeSet;
use strait_localcluster::Cluster;
use traffic::*;

pub const NS: &str = "shop";
/// What east exports through its gateway, as west's mirrors.
pub const WEB: &str = "web-east.shop.svc.cluster.local:80";
pub const GREETER: &str = "greeter-east.shop.svc.cluster.local:8080";
pub const ECHO: &str = "echo-east.shop.svc.cluster.local:9000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_linked_clusters_carry_traffic_both_ways_and_recover_from_faults() {
    let mut clock = Clock::default();
    let mut traces = Traces::default();
    let mut pair = Pair::start().await;
    // West runs two mirror replicas (the leader fault) and lets east's Link read its Pods
    // (remote discovery).
    pair.install_with(&["mirror.replicas=2", "remoteAccess.pods=true"], &[])
        .await;
    workloads(&pair).await;
    traces.record(&pair.west);
    traces.record(&pair.east);

    clock.lap("clusters, charts and samples");
    link_both_ways(&pair).await;
    clock.lap("links both ways, checks and gateways");
    traffic_through_the_gateway(&pair).await;
    clock.lap("HTTP/1, gRPC and TCP through the gateway");
    remote_discovery(&pair).await;
    clock.lap("remote discovery");
    headless::statefulset_by_pod_name(&pair).await;
    clock.lap("a StatefulSet by pod hostname, scaled down, unexported");
    federated::across_clusters(&pair).await;
    clock.lap("a federated Service answered by both clusters, shrunk, gone");
    policy::enforced(&pair).await;
    clock.lap("policy: web admits only caller, then the gateway; the gateway admits only client");
    gateway_gone(&pair).await;
    clock.lap("fault: east's gateway gone and back");
    api_server_outage(&mut pair).await;
    clock.lap("fault: east's API server stopped and started");
    leader_deleted(&pair).await;
    clock.lap("fault: west's mirror leader deleted");
    kubelet_restarted(&mut pair).await;
    clock.lap("fault: east's kubelet restarted");
    unexport_and_unlink(&pair).await;
    clock.lap("unexport and unlink");
    anchor_replaced(&pair).await;
    clock.lap("fault: east's trust anchor replaced");

    drop(pair);
    let left = traces.left();
    assert!(left.is_empty(), "the suite left behind: {left:?}");
}

/// Prints each stage's time, for the record (never asserted).
struct Clock(std::time::Instant);

impl Default for Clock {
    fn default() -> Self {
        Self(std::time::Instant::now())
    }
}

impl Clock {
    fn lap(&mut self, stage: &str) {
        eprintln!("suite: {:>6.1}s  {stage}", self.0.elapsed().as_secs_f64());
        self.0 = std::time::Instant::now();
    }
}

/// The names of the running pods matching `selector`.
pub async fn running_pods(c: &Cluster, ns: &str, selector: &str) -> BTreeSet<String> {
    set(pods(c, ns, selector)
        .await
        .iter()
        .filter(|p| {
            p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
        })
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned()))
}

/// The pods of east's and west's samples, by name.
pub async fn pod_names(c: &Cluster) -> BTreeSet<String> {
    set(pods(c, NS, "app")
        .await
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned()))
}

pub fn set<I: IntoIterator<Item = S>, S: Into<String>>(items: I) -> BTreeSet<String> {
    items.into_iter().map(Into::into).collect()
}
