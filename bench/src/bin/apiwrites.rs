//! What each kind of write costs a real kube-apiserver: the evidence behind how the mirror
//! controller writes (create new objects, JSON-patch existing ones, never server-side apply).
//!
//! On one local cluster, N objects of each kind, 32 requests in flight, one phase after the
//! other; for each: the rate and the API server's CPU per write (utime + stime from /proc).
//! The baseline in the same run is a ConfigMap create, the cheapest write there is.
//!
//! Run (root): `cargo build --release -p strait-bench --bin apiwrites && target/release/apiwrites [N]`
//! (N defaults to 2,000; at most 8,000: two sets of N Services share the 16k service CIDR).

use anyhow::{Context as _, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use std::time::Instant;
use strait_bench::procfs::{apiserver_pid, cpu_ticks};
use strait_localcluster::{Cluster, ClusterConfig};

const NS: &str = "writes";
const IN_FLIGHT: usize = 32;

#[derive(Clone, Copy, Debug)]
enum Write {
    ConfigMapCreate,
    SliceCreate,
    SliceApplyCreate,
    SliceApplyUpdate,
    SliceJsonPatch,
    ServiceCreate,
    ServiceApplyCreate,
    ServiceApplyUpdate,
    ServiceJsonPatch,
}

impl Write {
    const ALL: [Write; 9] = [
        Write::ConfigMapCreate,
        Write::SliceCreate,
        Write::SliceApplyCreate,
        Write::SliceApplyUpdate,
        Write::SliceJsonPatch,
        Write::ServiceCreate,
        Write::ServiceApplyCreate,
        Write::ServiceApplyUpdate,
        Write::ServiceJsonPatch,
    ];

    fn describe(self) -> &'static str {
        match self {
            Write::ConfigMapCreate => "ConfigMap create (baseline)",
            Write::SliceCreate => "EndpointSlice create",
            Write::SliceApplyCreate => "EndpointSlice apply, creating",
            Write::SliceApplyUpdate => "EndpointSlice apply, changing ready",
            Write::SliceJsonPatch => "EndpointSlice JSON patch, changing ready",
            Write::ServiceCreate => "ClusterIP Service create",
            Write::ServiceApplyCreate => "ClusterIP Service apply, creating",
            Write::ServiceApplyUpdate => "ClusterIP Service apply, changing a label",
            Write::ServiceJsonPatch => "ClusterIP Service JSON patch, changing a label",
        }
    }

    async fn run(self, client: kube::Client, i: usize) -> anyhow::Result<()> {
        let apply = PatchParams::apply("bench").force();
        let services = Api::<Service>::namespaced(client.clone(), NS);
        let slices = Api::<EndpointSlice>::namespaced(client.clone(), NS);
        // The update phases change the objects the create phases made.
        let (svc_created, svc_applied) = (format!("svc-{i}"), format!("svc-apply-{i}"));
        let (es_created, es_applied) = (format!("es-{i}"), format!("es-apply-{i}"));
        match self {
            Write::ConfigMapCreate => {
                let cm: ConfigMap = serde_json::from_value(
                    json!({"metadata": {"name": format!("cm-{i}")}, "data": {"a": "b"}}),
                )?;
                Api::<ConfigMap>::namespaced(client, NS)
                    .create(&PostParams::default(), &cm)
                    .await?;
            }
            Write::SliceCreate => {
                slices
                    .create(&PostParams::default(), &slice(&es_created, true)?)
                    .await?;
            }
            Write::SliceApplyCreate => {
                slices
                    .patch(
                        &es_applied,
                        &apply,
                        &Patch::Apply(slice(&es_applied, true)?),
                    )
                    .await?;
            }
            Write::SliceApplyUpdate => {
                slices
                    .patch(
                        &es_applied,
                        &apply,
                        &Patch::Apply(slice(&es_applied, false)?),
                    )
                    .await?;
            }
            Write::SliceJsonPatch => {
                let p: json_patch::Patch = serde_json::from_value(json!([
                    {"op": "add", "path": "/endpoints",
                     "value": [{"addresses": ["198.18.0.1"], "conditions": {"ready": false}}]},
                ]))?;
                slices
                    .patch(&es_created, &PatchParams::default(), &Patch::<()>::Json(p))
                    .await?;
            }
            Write::ServiceCreate => {
                services
                    .create(&PostParams::default(), &service(&svc_created, "1")?)
                    .await?;
            }
            Write::ServiceApplyCreate => {
                services
                    .patch(
                        &svc_applied,
                        &apply,
                        &Patch::Apply(service(&svc_applied, "1")?),
                    )
                    .await?;
            }
            Write::ServiceApplyUpdate => {
                services
                    .patch(
                        &svc_applied,
                        &apply,
                        &Patch::Apply(service(&svc_applied, "2")?),
                    )
                    .await?;
            }
            Write::ServiceJsonPatch => {
                let p: json_patch::Patch = serde_json::from_value(json!([
                    {"op": "test", "path": "/metadata/labels/v", "value": "1"},
                    {"op": "add", "path": "/metadata/labels", "value": {"v": "2"}},
                ]))?;
                services
                    .patch(&svc_created, &PatchParams::default(), &Patch::<()>::Json(p))
                    .await?;
            }
        }
        Ok(())
    }
}

fn service(name: &str, version: &str) -> anyhow::Result<Service> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "labels": {"v": version}},
        "spec": {"ports": [{"name": "http", "port": 80}, {"name": "grpc", "port": 9090}]},
    }))?)
}

fn slice(name: &str, ready: bool) -> anyhow::Result<EndpointSlice> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["198.18.0.1"], "conditions": {"ready": ready}}],
        "ports": [{"name": "http", "port": 4143, "protocol": "TCP"}],
    }))?)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let n = strait_bench::count_arg(
        2000,
        10..=8000,
        "two sets of N Services share a 16k service CIDR",
    )?;
    let cluster = Cluster::start(ClusterConfig::new("writes")).await?;
    cluster.ensure_namespace(NS).await?;
    let api_pid = Some(apiserver_pid(&cluster.server_url()).context("kube-apiserver pid")?);
    println!(
        "{n} writes per kind, {IN_FLIGHT} in flight, one kube-apiserver + etcd on {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<48} {:>9} {:>16} {:>12}",
        "write", "writes/s", "apiserver ms/op", "apiserver %"
    );
    for kind in Write::ALL {
        let cpu0 = cpu_ticks(api_pid).context("apiserver CPU")?;
        let t = Instant::now();
        let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..n)
            .map(|i| kind.run(cluster.client(), i))
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        let elapsed = t.elapsed().as_secs_f64();
        let cpu = (cpu_ticks(api_pid).context("apiserver CPU")? - cpu0) as f64 / 100.0;
        if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
            bail!("{}: {e:#}", kind.describe());
        }
        println!(
            "{:<48} {:>9.0} {:>16.2} {:>12.0}",
            kind.describe(),
            n as f64 / elapsed,
            cpu * 1000.0 / n as f64,
            cpu / elapsed * 100.0
        );
    }
    Ok(())
}
