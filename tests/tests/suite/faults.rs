//! The suite's faults, each with the outcome a user would see: east's gateway gone, east's
//! API server stopped, west's mirror leader deleted, east's kubelet restarted, east's trust
//! anchor replaced.

use crate::install_support::*;
use crate::linked_support::*;
use crate::nodes_support::eventually;
use crate::{ECHO, NS, WEB, pod_names, running_pods, set};
use serde_json::Value;
use strait_localcluster::Cluster;
use strait_tls::testing::TestPki;

/// East's gateway scaled to zero: west's mirrors turn not ready and a call is refused at
/// once (503, not a timeout); back, the same client pod is served again.
pub async fn gateway_gone(pair: &Pair) {
    let (west, east) = (&pair.west, &pair.east);
    let client = running_pod(west, NS, "app=client").await.unwrap();
    scale(east, MC, "strait-gateway", 0).await;
    let not_ready = eventually(CONVERGE, || async {
        let slices = json(
            west,
            &[
                "-n",
                NS,
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=web-east",
            ],
        )
        .await;
        let ready: Vec<bool> = slices["items"]
            .as_array()?
            .iter()
            .flat_map(|s| s["endpoints"].as_array().into_iter().flatten())
            .map(|e| e["conditions"]["ready"] == true)
            .collect();
        (!ready.is_empty() && ready.iter().all(|r| !r)).then_some(())
    })
    .await;
    assert!(
        not_ready.is_some(),
        "web-east's endpoints never turned not ready:\n{}",
        diagnose(west, east).await
    );
    let refused = eventually(CONVERGE, || async {
        let err = sample(west, NS, "client", &["get", WEB]).await.err()?;
        err.contains("503").then_some(err)
    })
    .await;
    assert!(
        refused.is_some(),
        "calls to web-east are refused with 503 while the gateway is gone:\n{}",
        diagnose(west, east).await
    );
    scale(east, MC, "strait-gateway", 1).await;
    rollout(east, MC, "strait-gateway").await;
    sample_eventually((west, east), NS, "client", &["get", WEB]).await;
    let now = pods(west, NS, "app=client").await;
    assert_eq!(now.len(), 1);
    assert_eq!(now[0]["metadata"]["name"], client.as_str());
    assert_eq!(
        now[0]["status"]["containerStatuses"][0]["restartCount"], 0,
        "served again without a client restart"
    );
}

/// East's API server stops right after web-v2 is exported and echo unexported: west deletes
/// nothing while it cannot read east, reports it in the Link's status, and traffic through
/// the gateway keeps flowing; once the server is back the mirrors converge.
pub async fn api_server_outage(pair: &mut Pair) {
    strait_at(&pair.east, &["export", "web-v2", "-n", NS])
        .await
        .unwrap();
    strait_at(&pair.east, &["unexport", "echo", "-n", NS])
        .await
        .unwrap();
    pair.east.stop_api_server();
    let west = &pair.west;
    let status = eventually(CONVERGE, || async {
        let link = json(west, &["-n", MC, "get", "link", "east"]).await;
        (link["status"]["remoteApi"]["reachable"] == false).then_some(link["status"].clone())
    })
    .await;
    assert!(
        status.is_some(),
        "the Link reports east's API unreachable:\n{}",
        json(west, &["-n", MC, "get", "link", "east"]).await
    );
    let mirrors = set(mirrors_of(west, "east").await);
    assert!(
        mirrors.contains("web-east") && mirrors.contains("greeter-east"),
        "nothing is deleted while east cannot be read: {mirrors:?}"
    );
    let body = sample(west, NS, "client", &["get", WEB]).await;
    assert!(
        body.is_ok(),
        "east's gateway serves while east's API server is down: {body:?}"
    );
    pair.east.start_api_server().await.unwrap();
    let (west, east) = (&pair.west, &pair.east);
    mirrors_converge(
        (west, east),
        &["web-east", "greeter-east", "web-v2-east"],
        "once east's API server is back",
    )
    .await;
    sample_eventually(
        (west, east),
        NS,
        "client",
        &["get", "web-v2-east.shop.svc.cluster.local:80"],
    )
    .await;
}

/// West's mirror leader is deleted while east exports echo again and unexports web-v2:
/// another replica takes the Lease, and the mirrors converge with no orphan and no duplicate.
pub async fn leader_deleted(pair: &Pair) {
    let (west, east) = (&pair.west, &pair.east);
    let lease = || async {
        json(west, &["-n", MC, "get", "lease", "strait-mirror"]).await["spec"]["holderIdentity"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let leader = lease().await;
    let replicas = running_pods(west, MC, "app.kubernetes.io/name=strait-mirror").await;
    assert_eq!(replicas.len(), 2, "{replicas:?}");
    assert!(replicas.contains(&leader), "{leader} of {replicas:?}");
    west.kubectl(&["-n", MC, "delete", "pod", &leader, "--wait=false"])
        .await
        .unwrap();
    strait_at(east, &["export", "echo", "-n", NS])
        .await
        .unwrap();
    strait_at(east, &["unexport", "web-v2", "-n", NS])
        .await
        .unwrap();
    // The standby or the Deployment's replacement pod, whichever asks first once the deleted
    // leader has released the Lease.
    let took = eventually(CONVERGE, || async {
        let holder = lease().await;
        let running = running_pods(west, MC, "app.kubernetes.io/name=strait-mirror").await;
        (holder != leader && running.contains(&holder)).then_some(holder)
    })
    .await;
    assert!(
        took.is_some(),
        "a running replica takes the Lease from the deleted {leader}:\n{}\n{}",
        json(west, &["-n", MC, "get", "lease", "strait-mirror"]).await,
        west.kubectl(&[
            "-n",
            MC,
            "logs",
            "-l",
            "app.kubernetes.io/name=strait-mirror",
            "--tail=20",
            "--prefix"
        ])
        .await
        .unwrap_or_else(|e| e.to_string())
    );
    let want = ["web-east", "greeter-east", "echo-east"];
    mirrors_converge((west, east), &want, "under the new leader").await;
    for mirror in &want {
        let slices = json(
            west,
            &[
                "-n",
                NS,
                "get",
                "endpointslices",
                "-l",
                &format!("kubernetes.io/service-name={mirror}"),
            ],
        )
        .await;
        assert_eq!(
            slices["items"].as_array().map(Vec::len),
            Some(1),
            "one EndpointSlice for {mirror}: {slices}"
        );
    }
    check_passes(west, "after the leader changed").await;
    sample_eventually(
        (west, east),
        NS,
        "client",
        &["tcp", ECHO, "after the handover"],
    )
    .await;
}

/// East's kubelet restarts: its pods keep running (the same pods), the new kubelet reports
/// the node and starts a new pod, and traffic through the gateway carries on.
pub async fn kubelet_restarted(pair: &mut Pair) {
    let heartbeat = |nodes: Value| {
        nodes["items"][0]["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready" && c["status"] == "True")
            .map(|c| c["lastHeartbeatTime"].clone())
    };
    let before = pod_names(&pair.east).await;
    let beat = heartbeat(json(&pair.east, &["get", "nodes"]).await);
    assert!(beat.is_some(), "east's node is Ready before");
    pair.east.restart_kubelet(0).unwrap();
    let (west, east) = (&pair.west, &pair.east);
    let reported = eventually(CONVERGE, || async {
        let now = heartbeat(json(east, &["get", "nodes"]).await)?;
        (Some(&now) != beat.as_ref()).then_some(())
    })
    .await;
    assert!(
        reported.is_some(),
        "the restarted kubelet reports east's node Ready:\n{}",
        east.log_tails(20)
    );
    scale(east, NS, "web", 2).await;
    rollout(east, NS, "web").await;
    let load = sample_eventually((west, east), NS, "client", &["load", WEB, "20"]).await;
    let load: Value = serde_json::from_str(load.trim()).unwrap();
    assert_eq!(load["ok"], 20, "{load}");
    check_passes(west, "after east's kubelet restarted").await;
    let after = pod_names(east).await;
    assert!(
        before.is_subset(&after) && after.len() == before.len() + 1,
        "the same pods run on, and the new kubelet started one more: {before:?} → {after:?}"
    );
}

/// East moves to a trust anchor of its own (helm upgrade, pods restarted): west's calls to
/// east are refused, and west's `check` says the anchors differ.
pub async fn anchor_replaced(pair: &Pair) {
    let (west, east) = (&pair.west, &pair.east);
    let other = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, pem: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, pem).unwrap();
        p.display().to_string()
    };
    let ca = file("ca.crt", other.anchors.to_pem());
    let crt = file("issuer.crt", other.issuer.cert_pem());
    let key = file("issuer.key", other.issuer.key_pem().to_owned());
    let cp = charts().join("strait-control-plane");
    let mc = charts().join("strait-multicluster");
    for (release, chart, sets) in [
        (
            "strait-control-plane",
            &cp,
            vec![
                format!("identityTrustAnchorsPEM={ca}"),
                format!("identity.issuer.tls.crtPEM={crt}"),
                format!("identity.issuer.tls.keyPEM={key}"),
            ],
        ),
        (
            "strait-multicluster",
            &mc,
            vec![format!("identityTrustAnchorsPEM={ca}")],
        ),
    ] {
        let mut args = vec![
            "upgrade",
            release,
            chart.to_str().unwrap(),
            "--reuse-values",
        ];
        for s in &sets {
            args.extend(["--set-file", s]);
        }
        helm(east, &pair.east_home, &args)
            .await
            .unwrap_or_else(|e| panic!("helm upgrade {release}: {e}"));
    }
    east.kubectl(&["-n", "strait", "rollout", "restart", "deployment"])
        .await
        .unwrap();
    rollout(east, "strait", "strait-control-plane").await;
    for ns in [MC, NS] {
        east.kubectl(&["-n", ns, "rollout", "restart", "deployment"])
            .await
            .unwrap();
    }
    control_plane_ready(east).await;
    rollout(east, NS, "web").await;

    check_fails(west, "the trust anchors match this cluster's", "differ").await;
    let refused = eventually(CONVERGE, || async {
        let err = sample(west, NS, "client", &["get", WEB]).await.err()?;
        (err.contains("502") || err.contains("503")).then_some(err)
    })
    .await;
    assert!(
        refused.is_some(),
        "west's calls to east are refused once east trusts another anchor:\n{}",
        diagnose(west, east).await
    );
    eprintln!(
        "suite: with east on another anchor, west's call: {}",
        refused.unwrap().trim()
    );
}

/// Waits until west's mirrors of east are exactly `want`.
async fn mirrors_converge((west, east): (&Cluster, &Cluster), want: &[&str], when: &str) {
    let want = set(want.iter().copied());
    let converged = eventually(CONVERGE, || async {
        (set(mirrors_of(west, "east").await) == want).then_some(())
    })
    .await;
    assert!(
        converged.is_some(),
        "west's mirrors of east converge to {want:?} {when}:\n{}",
        diagnose(west, east).await
    );
}
