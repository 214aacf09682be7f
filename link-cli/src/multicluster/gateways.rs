//! `strait multicluster gateways`: each linked cluster's gateway as this cluster's mirror
//! controller sees it. ALIVE, NUM_SVC and LATENCY (the last probe) come from the Links'
//! status; P50 and P99 from the controller's probe-latency histogram, read through the API
//! server's pod proxy from the leader (`-` when it cannot be read).

use super::{KubeArgs, TableOutput, table};
use anyhow::Context as _;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde::Serialize;
use strait_k8s_api::Link;

/// The mirror controller's leader Lease (charts/strait-multicluster, `mirror` values).
pub const MIRROR_LEASE: &str = "strait-mirror";

/// `strait multicluster gateways`
#[derive(clap::Args, Debug)]
pub struct GatewaysArgs {
    #[command(flatten)]
    pub kube: KubeArgs,
    /// The multicluster namespace (of the Links and the mirror controller).
    #[arg(long, default_value = super::link::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Only the Link to this cluster.
    #[arg(long)]
    pub cluster_name: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: TableOutput,
}

/// One row of the table (and one object of `-o json`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayRow {
    pub cluster: String,
    pub link: String,
    /// `None` until the first probes are in.
    pub alive: Option<bool>,
    pub num_svc: u32,
    pub latency_ms: Option<u64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Why the Link is not served, or the remote API's error, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub async fn gateways(args: GatewaysArgs) -> anyhow::Result<()> {
    let client = args.kube.client().await?;
    let rows = rows(&client, &args.namespace, args.cluster_name.as_deref()).await?;
    match args.output {
        TableOutput::Json => println!(
            "{}",
            serde_json::to_string_pretty(&rows).context("writing JSON")?
        ),
        TableOutput::Table if rows.is_empty() => eprintln!(
            "no Links in {}: link a cluster with `strait multicluster link`",
            args.namespace
        ),
        TableOutput::Table => print!("{}", render(&rows)),
    }
    Ok(())
}

/// The rows for every Link in `ns` (or the one to `only`).
pub async fn rows(
    client: &kube::Client,
    ns: &str,
    only: Option<&str>,
) -> anyhow::Result<Vec<GatewayRow>> {
    let links: Api<Link> = Api::namespaced(client.clone(), ns);
    let list = links.list(&Default::default()).await.with_context(|| {
        format!("listing the Links in {ns} (is the multicluster extension installed here?)")
    })?;
    let metrics = leader_metrics(client, ns).await.unwrap_or_default();
    let mut rows: Vec<GatewayRow> = list
        .items
        .into_iter()
        .filter(|l| only.is_none_or(|c| l.spec.target_cluster_name == c))
        .map(|l| {
            let name = l.metadata.name.clone().unwrap_or_default();
            let status = l.status.unwrap_or_default();
            let error = status.link_error.clone().or_else(|| {
                status
                    .remote_api
                    .as_ref()
                    .filter(|r| !r.reachable)
                    .map(|r| {
                        r.message
                            .clone()
                            .unwrap_or_else(|| "remote API unreachable".into())
                    })
            });
            GatewayRow {
                cluster: l.spec.target_cluster_name.clone(),
                alive: status.gateway_alive,
                num_svc: status.services.mirrored,
                latency_ms: status.gateway_latency_ms,
                p50_ms: quantile(&metrics, &name, 0.5),
                p99_ms: quantile(&metrics, &name, 0.99),
                link: name,
                error,
            }
        })
        .collect();
    rows.sort_by(|a, b| a.cluster.cmp(&b.cluster));
    Ok(rows)
}

fn render(rows: &[GatewayRow]) -> String {
    let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}ms"));
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.cluster.clone(),
                match r.alive {
                    Some(true) => "True".into(),
                    Some(false) => "False".into(),
                    None => "Unknown".into(),
                },
                r.num_svc.to_string(),
                r.latency_ms.map_or("-".into(), |l| format!("{l}ms")),
                ms(r.p50_ms),
                ms(r.p99_ms),
            ]
        })
        .collect();
    table(
        &["CLUSTER", "ALIVE", "NUM_SVC", "LATENCY", "P50", "P99"],
        &body,
    )
}

/// The leader's `/metrics`, through the API server's pod proxy.
async fn leader_metrics(client: &kube::Client, ns: &str) -> Option<String> {
    let lease = Api::<Lease>::namespaced(client.clone(), ns)
        .get(MIRROR_LEASE)
        .await
        .ok()?;
    let holder = lease.spec?.holder_identity?;
    let path = format!(
        "/api/v1/namespaces/{ns}/pods/{holder}:{}/proxy/metrics",
        strait_core::ports::MIRROR_ADMIN
    );
    let req = http::Request::get(path).body(Vec::new()).ok()?;
    let fut = client.request_text(req);
    tokio::time::timeout(std::time::Duration::from_secs(5), fut)
        .await
        .ok()?
        .ok()
}

/// The `q` quantile of `strait_mirror_gateway_probe_latency_ms{link}` from Prometheus text,
/// interpolated within its bucket as Prometheus' `histogram_quantile` does.
fn quantile(metrics: &str, link: &str, q: f64) -> Option<f64> {
    let want = format!("link=\"{link}\"");
    let mut buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter(|l| l.starts_with("strait_mirror_gateway_probe_latency_ms_bucket{"))
        .filter(|l| l.contains(&want))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let count: f64 = l.rsplit(' ').next()?.parse().ok()?;
            Some((le, count))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let inside = count - below;
            let frac = if inside > 0.0 {
                (rank - below) / inside
            } else {
                1.0
            };
            return Some(lower + (le - lower) * frac);
        }
        (lower, below) = (le, count);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = "\
# TYPE strait_mirror_gateway_probe_latency_ms histogram
strait_mirror_gateway_probe_latency_ms_bucket{le=\"1.0\",link=\"east\"} 0
strait_mirror_gateway_probe_latency_ms_bucket{le=\"2.0\",link=\"east\"} 50
strait_mirror_gateway_probe_latency_ms_bucket{le=\"5.0\",link=\"east\"} 98
strait_mirror_gateway_probe_latency_ms_bucket{le=\"10.0\",link=\"east\"} 100
strait_mirror_gateway_probe_latency_ms_bucket{le=\"+Inf\",link=\"east\"} 100
strait_mirror_gateway_probe_latency_ms_bucket{le=\"1.0\",link=\"south\"} 0
strait_mirror_gateway_probe_latency_ms_bucket{le=\"+Inf\",link=\"south\"} 0
";

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        assert_eq!(quantile(METRICS, "east", 0.5), Some(2.0));
        let p99 = quantile(METRICS, "east", 0.99).unwrap();
        assert!((p99 - 7.5).abs() < 1e-9, "{p99}");
        assert_eq!(quantile(METRICS, "south", 0.5), None, "no probes yet");
        assert_eq!(quantile(METRICS, "west", 0.5), None, "no such link");
        assert_eq!(quantile("", "east", 0.5), None);
    }

    #[test]
    fn the_table_says_unknown_before_the_first_probes() {
        let row = |cluster: &str, alive| GatewayRow {
            cluster: cluster.into(),
            link: cluster.into(),
            alive,
            num_svc: 3,
            latency_ms: alive.map(|_| 2),
            p50_ms: None,
            p99_ms: Some(7.5),
            error: None,
        };
        let out = render(&[row("east", Some(true)), row("west", None)]);
        assert_eq!(
            out,
            "CLUSTER  ALIVE    NUM_SVC  LATENCY  P50  P99\n\
             east     True     3        2ms      -    8ms\n\
             west     Unknown  3        -        -    8ms\n"
        );
    }
}
