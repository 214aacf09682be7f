//! The service mirror across two real clusters: west runs the controller (in-process), east
//! exports Services. The east gateway is stood in by a TLS 1.3 server on east's host address
//! (198.18.x.1, a local address of this machine once a pod exists) that answers 200 on the
//! probe path with a certificate for the gateway identity.
//!
//! One module a topic: [`lifecycle`] (export to removal, faults, restarts, the Link deleted),
//! [`scale`] (1,000 Services), [`gateway_hostname`] (a gateway named, not numbered),
//! [`service_export`] (the MCS API), [`remote_discovery`] (pods listed, no gateway),
//! [`headless`] (a StatefulSet's Service: one mirror per pod), [`federated`] (members in both
//! clusters form `<svc>-federated`); [`relay`]
//! is the cuttable route to east that the lifecycle uses. This file holds the in-process
//! controller they start; the clusters come linked from `mirror_support::linked_pair`.
//!
//! Run: `cargo test -p strait-e2e --test mirror -- --nocapture --test-threads=1` (as root).

use kube::Client;
use std::sync::Arc;
use std::time::Duration;

#[path = "../mirror_support/mod.rs"]
mod mirror_support;
use mirror_support::LINK_NS;

mod federated;
mod gateway_hostname;
mod headless;
mod lifecycle;
mod relay;
mod remote_discovery;
mod scale;
mod service_export;

/// The controller running in this process, stopped when dropped.
struct Controller {
    task: tokio::task::JoinHandle<Result<(), strait_mirror::Error>>,
    metrics: Arc<strait_mirror::Metrics>,
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn start_controller(client: Client, anchors: &str) -> Controller {
    let mut config = strait_mirror::Config::new(LINK_NS, anchors.as_bytes().to_vec());
    config.admin_addr = "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!());
    config.holder_identity = "e2e".into();
    config.lease_duration = Duration::from_secs(3);
    // A remote without the ServiceExport API is asked again every second, not every minute.
    config.exports_recheck = Duration::from_secs(1);
    let metrics = Arc::new(strait_mirror::Metrics::new());
    let task = tokio::spawn(strait_mirror::run(client, config, metrics.clone()));
    Controller { task, metrics }
}

/// The sum of every sample of `metric` whose line contains all of `needles`.
fn metric_sum(text: &str, metric: &str, needles: &[&str]) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(metric) && needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}
