//! Service mirror at scale, on two real local clusters, with the controller as a child process.
//!
//! Measures, for N exported services (default 1,000; `mirror 10000` for ten thousand):
//! - cold start: N services exist in east, the controller starts, time until all are mirrored;
//! - while synced: 1,000 more are exported, time until they are mirrored;
//! - removal: the N are deleted in east, time until their mirrors are gone;
//! - local API writes per mirror (the controller's own counter, scraped from /metrics);
//! - the controller's peak RSS (VmHWM) and the Link object's size at 10 and at N mirrors.
//!
//! With `--service-export`, east has the MCS `ServiceExport` CRD and every Service is exported
//! by a `ServiceExport` instead of the label (the controller then watches every remote
//! Service and keeps the exported ones).
//!
//! Baseline in the same run: the time the test client itself takes to create the N Services in
//! east (the same kind of writes the controller must make in west).
//!
//! Run (root): `cargo build -p strait-mirror -p strait-bench && target/debug/mirror [N]
//! [--service-export]`.
//! Bounded: every wait gives up after a fixed limit; clusters are torn down at exit.

use anyhow::{Context as _, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt};
use std::time::{Duration, Instant};
use strait_bench::procfs::{apiserver_pid, cpu_ticks, etcd_pid, machine_ticks};
use strait_k8s_api::{Link, ServiceExport};
use strait_localcluster::{Cluster, ClusterConfig};

const LINK_NS: &str = "strait-multicluster";
const GW_ID: &str =
    "strait-gateway.strait-multicluster.serviceaccount.identity.strait.cluster.local";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mcs = std::env::args().skip(1).any(|a| a == "--service-export");
    let n = strait_bench::count_arg(1000, 10..=12_000, "the service CIDR holds 16k addresses")?;
    let exe = std::env::current_exe()?;
    let controller_bin = exe.with_file_name("strait-mirror");
    if !controller_bin.exists() {
        bail!(
            "{} is missing: cargo build -p strait-mirror",
            controller_bin.display()
        );
    }
    let (west, east) = tokio::try_join!(
        Cluster::start(ClusterConfig::new("west")),
        Cluster::start(ClusterConfig::new("east"))
    )?;
    let (w, e) = (west.client(), east.client());
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(w.clone());
    crds.patch(
        "links.multicluster.strait.dev",
        &PatchParams::apply("bench").force(),
        &Patch::Apply(Link::crd()),
    )
    .await?;
    for ns in [LINK_NS, "cold", "warm"] {
        west.ensure_namespace(ns).await?;
    }
    for ns in ["cold", "warm"] {
        east.ensure_namespace(ns).await?;
    }
    if mcs {
        Api::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>::all(e.clone())
            .create(&PostParams::default(), &ServiceExport::crd())
            .await?;
        wait(
            "ServiceExport CRD served",
            Duration::from_secs(30),
            || async {
                Api::<ServiceExport>::all(e.clone())
                    .list(&ListParams::default())
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await?;
        println!("mode: every Service exported by a ServiceExport (MCS API), none by label");
    }
    wait("CRD served", Duration::from_secs(30), || async {
        Api::<Link>::all(w.clone())
            .list(&ListParams::default())
            .await
            .ok()
            .map(|_| ())
    })
    .await?;
    let kubeconfig = std::fs::read_to_string(east.kubeconfig_path())?;
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "east-credentials", "namespace": LINK_NS},
        "stringData": {"kubeconfig": kubeconfig},
    }))?;
    Api::<Secret>::namespaced(w.clone(), LINK_NS)
        .create(&PostParams::default(), &secret)
        .await?;
    // The gateway address is a benchmark-range address with no listener: probes fail, which
    // does not change how many writes mirroring takes once the liveness has settled.
    let link: Link = serde_json::from_value(serde_json::json!({
        "apiVersion": "multicluster.strait.dev/v1alpha1", "kind": "Link",
        "metadata": {"name": "east", "namespace": LINK_NS},
        "spec": {
            "targetClusterName": "east", "clusterCredentialsSecret": "east-credentials",
            "gatewayAddress": east.host_addr().to_string(), "gatewayPort": 4143, "gatewayIdentity": GW_ID,
            "probeSpec": {"port": 1, "period": "1s", "timeout": "200ms", "failureThreshold": 1},
            "selector": {"matchLabels": {"mirror.strait.dev/exported": "true"}},
        }
    }))?;
    let links: Api<Link> = Api::namespaced(w.clone(), LINK_NS);
    links.create(&PostParams::default(), &link).await?;

    // Setup, not measured as the controller's: the N remote Services, each with a ready
    // EndpointSlice, exist before the controller starts. Creating them is the baseline: the
    // same pair of objects a mirror is, written by a bare client with 32 in flight.
    let east_api = apiserver_pid(&east.server_url());
    let e0 = cpu_ticks(east_api);
    let t = Instant::now();
    create(&e, "cold", 0, n, mcs).await?;
    let baseline = t.elapsed();
    println!(
        "baseline (no controller running): a bare client created {n} ClusterIP Services + {n} EndpointSlices in east with 32 in flight in {baseline:.2?} ({:.0} pairs/s); east kube-apiserver busy {} cores, {} ms CPU per pair",
        n as f64 / baseline.as_secs_f64(),
        cpu_ticks(east_api)
            .zip(e0)
            .map_or("?".into(), |(b, a)| format!(
                "{:.2}",
                (b - a) as f64 / 100.0 / baseline.as_secs_f64()
            )),
        cpu_ticks(east_api)
            .zip(e0)
            .map_or("?".into(), |(b, a)| format!(
                "{:.2}",
                (b - a) as f64 * 10.0 / n as f64
            )),
    );
    let west_api = apiserver_pid(&west.server_url());
    let west_etcd = etcd_pid(west.dir());

    // Cold start.
    let dir = tempfile_dir()?;
    let anchors = dir.join("anchors.pem");
    let ca = rcgen::CertificateParams::new(Vec::<String>::new())?
        .self_signed(&rcgen::KeyPair::generate()?)?;
    std::fs::write(&anchors, ca.pem())?;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let cpu0 = (
        cpu_ticks(west_api),
        cpu_ticks(east_api),
        cpu_ticks(west_etcd),
        machine_ticks(),
    );
    let probe = tokio::spawn(latency_probe(w.clone()));
    let t = Instant::now();
    let mut child = tokio::process::Command::new(&controller_bin)
        .args([
            "--namespace",
            LINK_NS,
            "--admin-addr",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--trust-anchors")
        .arg(&anchors)
        .arg("--kubeconfig")
        .arg(west.kubeconfig_path())
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().context("controller pid")?;
    let mirrored = |want: u32| {
        let links = links.clone();
        move || {
            let links = links.clone();
            async move {
                let s = links.get("east").await.ok()?.status?;
                (s.services.mirrored == want && s.gateway_alive == Some(false)).then_some(())
            }
        }
    };
    let limit = Duration::from_secs(60 + (n as u64) / 20);
    wait("cold start: all mirrored", limit, mirrored(n as u32)).await?;
    let cold = t.elapsed();
    let cpu1 = (
        cpu_ticks(west_api),
        cpu_ticks(east_api),
        cpu_ticks(Some(pid)),
        cpu_ticks(west_etcd),
        machine_ticks(),
    );
    probe.abort();
    let _ = probe.await;
    let cores = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.2}", (b - a) as f64 / 100.0 / cold.as_secs_f64()),
        _ => "?".into(),
    };
    println!(
        "cold start CPU (cores busy on average; the machine has {}, all processes together used {}): west kube-apiserver {}, west etcd {}, east kube-apiserver {}, controller {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cores(cpu0.3, cpu1.4),
        cores(cpu0.0, cpu1.0),
        cores(cpu0.2, cpu1.3),
        cores(cpu0.1, cpu1.1),
        cores(Some(0), cpu1.2),
    );
    if let Some(l) = LATENCIES.lock().ok().map(|mut v| std::mem::take(&mut *v))
        && !l.is_empty()
    {
        let mut l = l;
        l.sort();
        let pct = |p: f64| l[((l.len() - 1) as f64 * p) as usize];
        println!(
            "west API latency during cold start (one GET of a Service every 250 ms, {} samples): p50 {:.1?}, p90 {:.1?}, max {:.1?}",
            l.len(),
            pct(0.5),
            pct(0.9),
            pct(1.0)
        );
    }
    let mirrors = count_mirrors(&w).await?;
    if mirrors != n {
        bail!("{mirrors} mirrors in west, expected {n}");
    }
    let writes_cold = writes(port).await?;
    println!(
        "controller peak RSS (VmHWM) at the end of the cold start: {} kB",
        vm_hwm(pid)?
    );
    let link_size_n = serde_json::to_vec(&links.get("east").await?)?.len();
    println!(
        "cold start: {n} services mirrored {cold:.2?} after the controller started ({:.0} mirrors/s); {writes_cold} local writes, {:.2} per mirror",
        n as f64 / cold.as_secs_f64(),
        writes_cold as f64 / n as f64
    );

    // While synced: 1,000 more.
    let t = Instant::now();
    create(&e, "warm", 0, 1000, mcs).await?;
    wait(
        "synced: 1,000 more mirrored",
        Duration::from_secs(120),
        mirrored((n + 1000) as u32),
    )
    .await?;
    let warm = t.elapsed();
    let writes_warm = writes(port).await? - writes_cold;
    println!(
        "while synced: 1,000 new exports mirrored {warm:.2?} after the first was created (creation itself included); {writes_warm} writes, {:.2} per mirror",
        writes_warm as f64 / 1000.0
    );

    // Idle: nothing changes for 5 s; count writes (should be zero besides status).
    let before = writes(port).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    println!(
        "idle 5 s with {} mirrors: {} writes",
        n + 1000,
        writes(port).await? - before
    );

    // Removal of the N.
    let t = Instant::now();
    delete_all(&e, "cold", n).await?;
    wait("removal: mirrors gone", limit, mirrored(1000)).await?;
    let removed = t.elapsed();
    println!(
        "removal: {n} exports deleted in east, mirrors gone {removed:.2?} after the first delete"
    );

    let hwm = vm_hwm(pid)?;
    println!("controller peak RSS (VmHWM): {hwm} kB");
    // Link size with 10 mirrored, for comparison.
    delete_all(&e, "warm", 990).await?;
    wait("10 left", Duration::from_secs(120), mirrored(10)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let link_size_10 = serde_json::to_vec(&links.get("east").await?)?.len();
    println!("Link object: {link_size_10} B with 10 mirrored, {link_size_n} B with {n}");
    let _ = child.start_kill();
    let _ = child.wait().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("strait-bench-mirror-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

async fn wait<F, Fut>(what: &str, limit: Duration, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<()>>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if f().await.is_some() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("timed out after {limit:?}: {what}")
}

/// Creates Services `s<from>..s<to>` in `ns`, each with one ready EndpointSlice, exported by
/// the label, or by a `ServiceExport` each.
async fn create(
    client: &Client,
    ns: &str,
    from: usize,
    to: usize,
    service_export: bool,
) -> anyhow::Result<()> {
    let svcs = Api::<Service>::namespaced(client.clone(), ns);
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), ns);
    let exports = Api::<ServiceExport>::namespaced(client.clone(), ns);
    let exported = if service_export { "false" } else { "true" };
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(from..to)
        .map(|i| {
            let (svcs, slices, exports) = (svcs.clone(), slices.clone(), exports.clone());
            async move {
                let svc: Service = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("s{i}"), "labels": {"mirror.strait.dev/exported": exported, "app": format!("s{i}")}},
                    "spec": {"ports": [{"name": "http", "port": 80}, {"name": "grpc", "port": 9090}]},
                }))?;
                svcs.create(&PostParams::default(), &svc).await?;
                let es: EndpointSlice = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("s{i}-1"), "labels": {"kubernetes.io/service-name": format!("s{i}")}},
                    "addressType": "IPv4",
                    "endpoints": [{"addresses": [format!("198.18.{}.{}", 1 + i / 250, 1 + i % 250)], "conditions": {"ready": true}}],
                    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "grpc", "port": 9090, "protocol": "TCP"}],
                }))?;
                slices.create(&PostParams::default(), &es).await?;
                if service_export {
                    let se: ServiceExport = serde_json::from_value(serde_json::json!({
                        "apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceExport",
                        "metadata": {"name": format!("s{i}")},
                    }))?;
                    exports.create(&PostParams::default(), &se).await?;
                }
                Ok(())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    results.into_iter().collect()
}

async fn delete_all(client: &Client, ns: &str, n: usize) -> anyhow::Result<()> {
    let api = Api::<Service>::namespaced(client.clone(), ns);
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                api.delete(&format!("s{i}"), &DeleteParams::default())
                    .await?;
                Ok(())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    results.into_iter().collect()
}

async fn count_mirrors(client: &Client) -> anyhow::Result<usize> {
    let lp = ListParams::default()
        .labels("mirror.strait.dev/mirrored-service=true,mirror.strait.dev/cluster-name=east");
    Ok(Api::<Service>::all(client.clone())
        .list(&lp)
        .await?
        .items
        .len())
}

/// The controller's local writes, from its /metrics.
async fn writes(port: u16) -> anyhow::Result<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut body)).await??;
    Ok(body
        .lines()
        .filter(|l| l.starts_with("strait_mirror_api_requests_total{"))
        .filter(|l| {
            ["apply", "delete", "create", "patch"]
                .iter()
                .any(|v| l.contains(&format!("verb=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum())
}

fn vm_hwm(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmHWM in /proc/<pid>/status")
}

static LATENCIES: std::sync::Mutex<Vec<Duration>> = std::sync::Mutex::new(Vec::new());

/// One GET every 250 ms against west while the controller works: the API server's latency
/// as any client sees it. Bounded by the caller (aborted) and by 4,000 samples.
async fn latency_probe(client: Client) {
    let api = Api::<Service>::namespaced(client, "default");
    for _ in 0..4000 {
        let t = Instant::now();
        if api.get_opt("kubernetes").await.is_ok()
            && let Ok(mut l) = LATENCIES.lock()
        {
            l.push(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
