//! The multicluster commands on real-node clusters, as an operator types them: both charts
//! installed with helm in `west` and `east` (one anchor); `strait export` in east;
//! `strait multicluster link` against east, applied in west; then west's mirror controller
//! mirrors east's Service through east's gateway with only the link's limited credentials
//! (which cannot read a Secret or write a Service in east) and renews them before they
//! expire.
//!
//! In order: a meshed client in west calls `web-east` by DNS name and east's web pod answers,
//! its proxy naming east's gateway as the client; `strait check --multicluster` passes and
//! `gateways` shows east alive with one service; the token is renewed; then each fault makes
//! `check` fail with its own message and passes again once repaired (an orphaned mirror, a
//! mirror without endpoints, the gateway scaled to zero, anchors that differ, the credentials
//! Secret deleted); `allow` gives a second Link its own account, whose deletion the Link
//! reports in its status; `unexport` removes the mirror; `unlink` removes every mirror of the
//! Link.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first unexpected error

mod install_support;
mod linked_support;
mod nodes_support;

use install_support::*;
use linked_support::*;
use nodes_support::{eventually, load_balancer_ip};
use serde_json::Value;
use std::time::Duration;
use strait_k8s_api::ServiceAccountToken;
use strait_localcluster::Cluster;
use strait_tls::testing::TestPki;

/// The kubeconfig and token in the link's credentials Secret, as west stores it.
async fn stored_credentials(west: &Cluster, secret: &str) -> Option<(String, ServiceAccountToken)> {
    let out = west
        .kubectl(&[
            "-n",
            MC,
            "get",
            "secret",
            secret,
            "-o",
            "jsonpath={.data.kubeconfig}",
        ])
        .await
        .ok()?;
    use base64::Engine as _;
    let kc = base64::engine::general_purpose::STANDARD
        .decode(out.trim())
        .ok()?;
    let kc = String::from_utf8(kc).ok()?;
    let parsed: Value = serde_saphyr::from_str(&kc).ok()?;
    let token = parsed["users"][0]["user"]["token"].as_str()?.to_owned();
    assert_eq!(
        parsed["users"].as_array().map(Vec::len),
        Some(1),
        "{parsed}"
    );
    Some((kc, ServiceAccountToken::peek(&token).ok()?))
}

/// `kubectl` with the link's own kubeconfig against east: whether the API server allows it.
async fn as_link(
    east: &Cluster,
    kubeconfig: &std::path::Path,
    args: &[&str],
) -> Result<String, String> {
    let kubectl = east.assets().kubectl.clone().unwrap();
    let out = tokio::process::Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .await
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Replaces the trust anchors the control plane of `c` publishes.
async fn set_anchors(c: &Cluster, pem: &str) {
    let patch = serde_json::json!({"data": {"ca-bundle.crt": pem}}).to_string();
    c.kubectl(&[
        "-n",
        "strait",
        "patch",
        "configmap",
        "strait-identity-trust-roots",
        "--type=merge",
        "-p",
        &patch,
    ])
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strait_multicluster_link_mirrors_through_the_gateway_with_limited_credentials() {
    // West renews the link's token at a tenth of its life, so the test sees a renewal.
    let pair = Pair::start().await;
    pair.install(&["mirror.credentialsRenewAtPercent=10"]).await;
    let (west, east) = (&pair.west, &pair.east);
    let home = tempfile::tempdir().unwrap();
    west.apply(&shop("shop", true)).await.unwrap();
    east.apply(&shop("shop", true)).await.unwrap();
    tokio::join!(
        rollout(west, "shop", "client"),
        rollout(east, "shop", "web"),
    );

    // Export in east; link against east; apply in west.
    let out = strait_at(east, &["export", "web", "-n", "shop"])
        .await
        .unwrap();
    assert!(out.contains("service/web exported"), "{out}");
    let err = strait_at(east, &["export", "nosuch", "-n", "shop"])
        .await
        .unwrap_err();
    assert!(err.contains("no Service shop/nosuch"), "{err}");
    let err = strait_at(east, &["multicluster", "link", "--cluster-name", "East_1"])
        .await
        .unwrap_err();
    assert!(err.contains("not a DNS label"), "{err}");
    let err = strait_at(
        east,
        &[
            "multicluster",
            "link",
            "--cluster-name",
            "east",
            "--service-account-name",
            "nobody",
        ],
    )
    .await
    .unwrap_err();
    assert!(
        err.contains("no ServiceAccount strait-multicluster/nobody") && err.contains("allow"),
        "{err}"
    );
    let link = strait_at(
        east,
        &[
            "multicluster",
            "link",
            "--cluster-name",
            "east",
            "--token-lifetime",
            "10m",
            "-o",
            "json",
        ],
    )
    .await
    .unwrap();
    let objects: Value = serde_json::from_str(&link).unwrap();
    let spec = &objects["items"][1]["spec"];
    let gateway_ip = load_balancer_ip(east, MC, "strait-gateway").await;
    assert_eq!(spec["gatewayAddress"], gateway_ip.as_str(), "{spec}");
    assert_eq!(spec["gatewayPort"], 4143);
    assert!(
        spec.get("remoteDiscoverySelector").is_none(),
        "east's account may not read Pods, so remote discovery is off: {spec}"
    );
    assert_eq!(spec["gatewayIdentity"], id("strait-gateway", MC).as_str());
    use base64::Engine as _;
    let kubeconfig = base64::engine::general_purpose::STANDARD
        .decode(objects["items"][0]["data"]["kubeconfig"].as_str().unwrap())
        .unwrap();
    let kc_path = home.path().join("link-kubeconfig");
    std::fs::write(&kc_path, &kubeconfig).unwrap();
    let kc_text = String::from_utf8(kubeconfig).unwrap();
    assert!(kc_text.contains(&east.server_url()), "{kc_text}");
    assert!(
        !kc_text.contains("client-key-data"),
        "only a token, no admin key"
    );

    // The link's credentials read what mirroring needs and nothing else.
    as_link(east, &kc_path, &["get", "services", "-A"])
        .await
        .expect("the link lists Services");
    let secrets = as_link(east, &kc_path, &["-n", MC, "get", "secrets"])
        .await
        .unwrap_err();
    assert!(
        secrets.contains("Forbidden") || secrets.contains("forbidden"),
        "{secrets}"
    );
    let write = as_link(
        east,
        &kc_path,
        &[
            "-n",
            "shop",
            "create",
            "service",
            "clusterip",
            "intruder",
            "--tcp=80",
        ],
    )
    .await
    .unwrap_err();
    assert!(write.contains("forbidden"), "{write}");

    west.apply(&link).await.unwrap();

    // West's client reaches east's web by the mirror's DNS name, through east's gateway.
    let east_web: Vec<String> = pods(east, "shop", "app=web")
        .await
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    let body = sample_eventually(
        (west, east),
        "shop",
        "client",
        &["get", "web-east.shop.svc.cluster.local:80"],
    )
    .await;
    assert!(
        east_web.iter().any(|p| body.contains(p.as_str())),
        "east's web pod answers ({east_web:?}): {body}"
    );
    let metrics = proxy_metrics(&pods(east, "shop", "app=web").await[0]).await;
    let gateway_client = format!("client_id=\"{}\"", id("strait-gateway", MC));
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("direction=\"inbound\"") && l.contains(&gateway_client)),
        "east's web proxy saw the request come from east's gateway over mTLS:\n{metrics}"
    );

    check_passes(west, "after linking").await;
    // The Link's status shows the first probes and the mirror within a few periods.
    let gateways = eventually(CONVERGE, || async {
        let out = strait_at(west, &["multicluster", "gateways", "-o", "json"])
            .await
            .ok()?;
        let rows: Value = serde_json::from_str(&out).unwrap();
        (rows[0]["alive"] == true && rows[0]["numSvc"] == 1).then_some(rows)
    })
    .await;
    let Some(gateways) = gateways else {
        panic!(
            "gateways never showed east alive with 1 service:\n{}",
            diagnose(west, east).await
        );
    };
    assert_eq!(gateways[0]["cluster"], "east", "{gateways}");
    assert!(gateways[0]["latencyMs"].is_u64(), "{gateways}");
    let table = strait_at(west, &["multicluster", "gateways"])
        .await
        .unwrap();
    assert!(
        table.starts_with("CLUSTER") && table.contains("east") && table.contains("True"),
        "{table}"
    );

    // The token is renewed before it expires (at 10% of its 10 minutes here).
    let (_, first) = stored_credentials(west, "cluster-credentials-east")
        .await
        .unwrap();
    assert_eq!(
        (first.namespace.as_str(), first.name.as_str()),
        (MC, "strait-service-mirror-remote-access")
    );
    let renewed = eventually(Duration::from_secs(150), || async {
        let (_, t) = stored_credentials(west, "cluster-credentials-east").await?;
        (t.issued_at > first.issued_at).then_some(t)
    })
    .await
    .expect("the mirror controller renews the link's token");
    assert!(renewed.expires_at > first.expires_at);
    assert_eq!(
        renewed.lifetime(),
        first.lifetime(),
        "renewed for the same lifetime"
    );

    // Faults, each with its own message, each repaired.
    west.apply(
        r#"apiVersion: v1
kind: Service
metadata:
  name: ghost-gone
  namespace: shop
  labels: {mirror.strait.dev/mirrored-service: "true", mirror.strait.dev/cluster-name: gone}
spec:
  ports: [{port: 80}]
"#,
    )
    .await
    .unwrap();
    check_fails(
        west,
        "no mirror is orphaned",
        "shop/ghost-gone (no Link to cluster \"gone\")",
    )
    .await;
    west.kubectl(&["-n", "shop", "delete", "service", "ghost-gone"])
        .await
        .unwrap();

    scale(east, "shop", "web", 0).await;
    check_fails(west, "every mirror has ready endpoints", "shop/web-east").await;
    scale(east, "shop", "web", 1).await;
    check_passes(west, "once east's web is back").await;

    scale(east, MC, "strait-gateway", 0).await;
    check_fails(west, "east's gateway is alive", &gateway_ip).await;
    scale(east, MC, "strait-gateway", 1).await;
    check_passes(west, "once east's gateway is back").await;

    let roots = json(
        east,
        &[
            "-n",
            "strait",
            "get",
            "configmap",
            "strait-identity-trust-roots",
        ],
    )
    .await;
    let original = roots["data"]["ca-bundle.crt"].as_str().unwrap().to_owned();
    set_anchors(east, &TestPki::new().anchors.to_pem()).await;
    check_fails(west, "the trust anchors match this cluster's", "differ").await;
    set_anchors(east, &original).await;

    west.kubectl(&["-n", MC, "delete", "secret", "cluster-credentials-east"])
        .await
        .unwrap();
    check_fails(
        west,
        "the credentials Secret is present",
        "cluster-credentials-east",
    )
    .await;
    // The hint's repair: link again.
    let relink = strait_at(east, &["multicluster", "link", "--cluster-name", "east"])
        .await
        .unwrap();
    west.apply(&relink).await.unwrap();
    check_passes(west, "after linking again").await;

    // A second consumer with its own account; deleting the account revokes it.
    let allow = strait_at(
        east,
        &["multicluster", "allow", "--service-account-name", "west-2"],
    )
    .await
    .unwrap();
    east.apply(&allow).await.unwrap();
    let link2 = strait_at(
        east,
        &[
            "multicluster",
            "link",
            "--cluster-name",
            "east2",
            "--service-account-name",
            "west-2",
        ],
    )
    .await
    .unwrap();
    west.apply(&link2).await.unwrap();
    eventually(CONVERGE, || async {
        mirrors_of(west, "east2")
            .await
            .contains(&"web-east2".to_string())
            .then_some(())
    })
    .await
    .expect("the second Link mirrors web as web-east2");
    east.kubectl(&["-n", MC, "delete", "serviceaccount", "west-2"])
        .await
        .unwrap();
    let status = eventually(CONVERGE, || async {
        let link = json(west, &["-n", MC, "get", "link", "east2"]).await;
        (link["status"]["remoteApi"]["reachable"] == false).then_some(link["status"].clone())
    })
    .await
    .expect("the Link whose account was deleted reports it in status");
    let message = status["remoteApi"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("401") || message.contains("Unauthorized"),
        "{status}"
    );
    assert!(
        mirrors_of(west, "east2")
            .await
            .contains(&"web-east2".to_string()),
        "a Link that cannot read its cluster deletes nothing"
    );

    // Unexport removes the mirror; unlink removes every mirror of the Link.
    strait_at(east, &["unexport", "web", "-n", "shop"])
        .await
        .unwrap();
    eventually(CONVERGE, || async {
        mirrors_of(west, "east").await.is_empty().then_some(())
    })
    .await
    .expect("unexport removes web-east");
    strait_at(east, &["export", "web", "-n", "shop"])
        .await
        .unwrap();
    eventually(CONVERGE, || async {
        (!mirrors_of(west, "east").await.is_empty()).then_some(())
    })
    .await
    .expect("export brings web-east back");
    for cluster in ["east", "east2"] {
        unlink(west, cluster).await;
        assert!(
            mirrors_of(west, cluster).await.is_empty(),
            "unlink removed every mirror of {cluster}"
        );
    }
    let err = strait_at(west, &["multicluster", "unlink", "--cluster-name", "east"])
        .await
        .unwrap_err();
    assert!(
        err.contains("no Link in strait-multicluster targets cluster \"east\""),
        "{err}"
    );
}
