//! A federated Service with a member in each cluster: `front` in east (on web's pods) and
//! `front` in west (on users' pods), both labelled `mirror.strait.dev/federated=member`, form
//! west's `front-federated`. West's client, calling it by DNS name, is answered by both
//! clusters' pods (east's through east's gateway, west's directly): its proxy balances over
//! one endpoint set holding every member's. East's member leaving takes its endpoints (every
//! answer is west's again); the last member leaving takes the Service.

use crate::install_support::*;
use crate::linked_support::*;
use crate::nodes_support::eventually;
use crate::{NS, set};
use serde_json::Value;
use std::collections::BTreeSet;
use strait_core::labels;
use strait_e2e::samples;
use strait_localcluster::Cluster;

const FRONT: &str = "front-federated.shop.svc.cluster.local:80";

/// `kubectl label` for membership: `member` sets it, `None` removes it.
async fn member(c: &Cluster, joins: bool) {
    let label = if joins {
        format!("{}={}", labels::FEDERATED, labels::FEDERATED_MEMBER)
    } else {
        format!("{}-", labels::FEDERATED)
    };
    c.kubectl(&["-n", NS, "label", "service", "front", &label, "--overwrite"])
        .await
        .unwrap();
}

/// The pods that answered 20 calls to `front-federated` from west's client (4 at a time),
/// by the `pod=` in each answer's body; `None` when a call failed.
async fn answered_by(west: &Cluster) -> Option<BTreeSet<String>> {
    let out = crate::linked_support::sample(west, NS, "client", &["load", FRONT, "20", "4"])
        .await
        .ok()?;
    let report: Value = serde_json::from_str(out.trim()).ok()?;
    Some(set(report["by_body"].as_object()?.keys().filter_map(|b| {
        b.split_whitespace()
            .find_map(|w| w.strip_prefix("pod="))
            .map(str::to_owned)
    })))
}

/// West's `front-federated` and its slices' names, or `None` while it does not exist.
async fn federated(west: &Cluster) -> Option<(Value, BTreeSet<String>)> {
    let svc = west
        .kubectl(&["-n", NS, "get", "service", "front-federated", "-o", "json"])
        .await
        .ok()?;
    let slices = json(
        west,
        &[
            "-n",
            NS,
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=front-federated",
        ],
    )
    .await;
    let names = set(slices["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["metadata"]["name"].as_str()));
    Some((serde_json::from_str(&svc).ok()?, names))
}

pub async fn across_clusters(pair: &Pair) {
    let (west, east) = (&pair.west, &pair.east);
    let east_pod = running_pod(east, NS, "app=web").await.unwrap();
    let west_pod = running_pod(west, NS, "app=users").await.unwrap();
    east.apply(&samples::service_of(
        NS,
        "front",
        "web",
        &[("http", 80, "http")],
    ))
    .await
    .unwrap();
    west.apply(&samples::service_of(
        NS,
        "front",
        "users",
        &[("http", 80, "http")],
    ))
    .await
    .unwrap();
    member(east, true).await;
    member(west, true).await;

    // The Service is the controller's (no Link's), and names both members.
    let formed = eventually(CONVERGE, || async {
        let (svc, slices) = federated(west).await?;
        let notes = &svc["metadata"]["annotations"];
        let members = set(notes[labels::FEDERATED_MEMBERS].as_str()?.split(','));
        (members == set(["east", "local"])
            && notes[labels::FEDERATED_LOCAL_MEMBER] == "front"
            && !slices.is_empty())
        .then_some(svc)
    })
    .await;
    let svc = formed.unwrap_or_else(|| panic!("front-federated never named both members"));
    assert_eq!(
        svc["metadata"]["labels"][labels::CLUSTER_NAME],
        labels::FEDERATED_OWNER,
        "{svc}"
    );

    // Every member answers west's client: the union over a few rounds of calls (the balancer
    // prefers the nearer pod, and sends to the other as its latency estimate decays or the
    // near one queues).
    let both = set([east_pod.clone(), west_pod.clone()]);
    let seen = std::sync::Mutex::new(BTreeSet::new());
    let all = eventually(CONVERGE, || async {
        let by = answered_by(west).await?;
        let mut seen = seen.lock().unwrap();
        seen.extend(by);
        (*seen == both).then_some(())
    })
    .await;
    if all.is_none() {
        let seen = seen.into_inner().unwrap();
        panic!(
            "front-federated is answered by east's {east_pod} and west's {west_pod}, saw {seen:?}\n{}",
            diagnose(west, east).await
        );
    }
    // West's Link to east counts east's member (the status is written after the pass).
    let counted = eventually(CONVERGE, || async {
        let link = json(west, &["-n", "strait-multicluster", "get", "link", "east"]).await;
        (link["status"]["services"]["federated"] == 1).then_some(())
    })
    .await;
    assert!(
        counted.is_some(),
        "west's Link counts one federated member: {}",
        json(west, &["-n", "strait-multicluster", "get", "link", "east"]).await["status"]
    );

    // East leaves: its slice goes, and every answer is west's pod's.
    member(east, false).await;
    let shrunk = eventually(CONVERGE, || async {
        let (_, slices) = federated(west).await?;
        if slices.iter().any(|s| s.ends_with("-east")) {
            return None;
        }
        (answered_by(west).await? == set([west_pod.clone()])).then_some(())
    })
    .await;
    assert!(
        shrunk.is_some(),
        "east's member left: only {west_pod} answers, slices {:?}",
        federated(west).await.map(|(_, s)| s)
    );

    // The last member leaves: the Service goes.
    member(west, false).await;
    let gone = eventually(CONVERGE, || async {
        federated(west).await.is_none().then_some(())
    })
    .await;
    assert!(gone.is_some(), "front-federated outlived its last member");
    for c in [west, east] {
        c.kubectl(&["-n", NS, "delete", "service", "front"])
            .await
            .unwrap();
    }
}
