//! Destination update latency: the time from an EndpointSlice change written through the API
//! to the matching update arriving on a `Get` stream, beside a baseline in the same run — the
//! same change arriving on a plain kube watch of that slice (the least any watcher can do).
//!
//! ```text
//! cargo run -p strait-bench --bin destination [-- <changes, default 200>]
//! ```
//!
//! Needs root (a local cluster). Bounded: at most 1,000 changes, 10 s per change.

use anyhow::{Context, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use linkerd2_proxy_api::destination as pb;
use linkerd2_proxy_api::destination::destination_client::DestinationClient;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use strait_control_plane::destination::{self, DestinationConfig, Discovery, Metrics};
use strait_localcluster::{Cluster, ClusterConfig};

const NS: &str = "bench";
const SLICE: &str = "echo-bench";
const PER_CHANGE: Duration = Duration::from_secs(10);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let changes: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()
        .context("the argument is the number of changes")?
        .unwrap_or(200)
        .clamp(1, 1000);
    strait_localcluster::require_root()?;
    let cluster = Cluster::start(ClusterConfig::new("dstbench")).await?;
    cluster.ensure_namespace(NS).await?;
    let client = cluster.client();

    // A Service without a selector: only this benchmark writes its slice.
    Api::<Service>::namespaced(client.clone(), NS)
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "echo", "namespace": NS},
                "spec": {"ports": [{"name": "http", "port": 80}]},
            }))?,
        )
        .await?;
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), NS);
    let pp = PatchParams::apply("strait-bench").force();
    let slice = |ip: Ipv4Addr| {
        serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": SLICE, "namespace": NS,
                         "labels": {"kubernetes.io/service-name": "echo"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip.to_string()], "conditions": {"ready": true}}],
        })
    };
    // Addresses from the benchmark range; nothing is ever sent to them.
    let addr_of = |i: usize| Ipv4Addr::new(198, 18, 60, 1 + (i % 250) as u8);
    slices
        .patch(SLICE, &pp, &Patch::Apply(slice(addr_of(0))))
        .await?;

    // Baseline: a plain watch of the slice, reporting each address with its arrival time.
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(Ipv4Addr, Instant)>();
    let baseline = tokio::spawn({
        let api = slices.clone();
        async move {
            let cfg = watcher::Config::default().fields(&format!("metadata.name={SLICE}"));
            let mut events = std::pin::pin!(watcher::watcher(api, cfg));
            while let Some(ev) = events.next().await {
                let Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) = ev else {
                    continue;
                };
                let ip = s
                    .endpoints
                    .first()
                    .and_then(|e| e.addresses.first())
                    .and_then(|a| a.parse().ok());
                if let Some(ip) = ip
                    && seen_tx.send((ip, Instant::now())).is_err()
                {
                    return;
                }
            }
        }
    });

    // The destination service, in process, on loopback.
    let discovery = Discovery::spawn(client.clone());
    let mut registry = prometheus_client::registry::Registry::default();
    let svc = discovery.service(
        DestinationConfig::default(),
        Metrics::register(&mut registry),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(destination::serve(listener, svc, std::future::pending()));
    tokio::time::timeout(Duration::from_secs(60), discovery.synced())
        .await
        .context("discovery did not sync")?;
    let mut dst = DestinationClient::connect(format!("http://{addr}")).await?;
    let mut stream = dst
        .get(pb::GetDestination {
            scheme: "k8s".into(),
            path: "echo.bench.svc.cluster.local:80".into(),
            context_token: String::new(),
        })
        .await?
        .into_inner();
    wait_add(&mut stream, addr_of(0)).await?;

    let mut via_dst = Vec::with_capacity(changes);
    let mut via_watch = Vec::with_capacity(changes);
    for i in 1..=changes {
        let ip = addr_of(i);
        let t0 = Instant::now();
        slices.patch(SLICE, &pp, &Patch::Apply(slice(ip))).await?;
        wait_add(&mut stream, ip).await?;
        via_dst.push(t0.elapsed());
        let arrived = tokio::time::timeout(PER_CHANGE, async {
            while let Some((seen, at)) = seen_rx.recv().await {
                if seen == ip {
                    return Some(at);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .context("the baseline watch missed a change")?;
        via_watch.push(arrived.duration_since(t0));
    }
    baseline.abort();
    server.abort();

    println!("destination update latency over {changes} EndpointSlice changes (write -> arrival):");
    report("Get stream (strait destination)", &mut via_dst);
    report("plain kube watch (baseline)", &mut via_watch);
    Ok(())
}

/// Reads the stream until an Add names `ip`.
async fn wait_add(stream: &mut tonic::Streaming<pb::Update>, ip: Ipv4Addr) -> anyhow::Result<()> {
    let want = SocketAddr::new(ip.into(), 8080);
    tokio::time::timeout(PER_CHANGE, async {
        while let Some(u) = stream.message().await? {
            if let Some(pb::update::Update::Add(set)) = u.update
                && set
                    .addrs
                    .iter()
                    .filter_map(|a| a.addr)
                    .filter_map(|a| SocketAddr::try_from(a).ok())
                    .any(|a| a == want)
            {
                return Ok(());
            }
        }
        bail!("stream ended")
    })
    .await
    .context("no update within 10 s")?
}

fn report(what: &str, samples: &mut [Duration]) {
    samples.sort();
    let pick = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i.min(samples.len() - 1)]
    };
    println!(
        "  {what:<34} median {:>8.2?}  p99 {:>8.2?}  max {:>8.2?}",
        pick(0.5),
        pick(0.99),
        pick(1.0)
    );
}
