//! What the demo and the suite read from a running real-node cluster: a running pod's name,
//! the gateway's metrics, and the mesh identities those metrics name.

use anyhow::ensure;
use std::collections::BTreeSet;
use strait_localcluster::Cluster;

/// The multicluster chart's namespace.
pub const MC: &str = "strait-multicluster";

/// The name of a running pod in `ns` matching `selector`.
pub async fn running_pod(c: &Cluster, ns: &str, selector: &str) -> anyhow::Result<String> {
    let out = c
        .kubectl(&[
            "-n",
            ns,
            "get",
            "pods",
            "-l",
            selector,
            "--field-selector=status.phase=Running",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .await?;
    let first = out.split_whitespace().next().map(str::to_owned);
    ensure!(
        first.is_some(),
        "{}: no running pod matches {selector} in {ns}",
        c.name()
    );
    Ok(first.unwrap_or_default())
}

/// The metrics of `c`'s gateway, through the API server's pod proxy to its TLS admin port.
pub async fn gateway_metrics(c: &Cluster) -> anyhow::Result<String> {
    let gw = running_pod(c, MC, "app.kubernetes.io/name=strait-gateway").await?;
    let path = format!(
        "/api/v1/namespaces/{MC}/pods/https:{gw}:{}/proxy/metrics",
        strait_core::ports::ADMIN
    );
    Ok(c.kubectl(&["get", "--raw", &path]).await?)
}

/// The identities in the `client_id` labels of Prometheus text `metrics`.
pub fn client_ids(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split("client_id=\"").nth(1)?.split('"').next())
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn client_ids_are_read_from_samples_not_comments() {
        let m = "# HELP x client_id=\"not.this\"\n\
                 tcp_open_total{direction=\"inbound\",client_id=\"a.shop\"} 1\n\
                 tcp_open_total{direction=\"inbound\",client_id=\"\"} 1\n\
                 request_total{client_id=\"b.shop\",x=\"y\"} 2\n";
        let ids: Vec<String> = super::client_ids(m).into_iter().collect();
        assert_eq!(ids, ["a.shop", "b.shop"]);
    }
}
