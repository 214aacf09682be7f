//! A headless Service with hostnames, as a StatefulSet's looks: east's `db` (headless) with
//! an EndpointSlice listing db-0, db-1 and db-2 by hostname (written here as the
//! controller-manager would write a StatefulSet's; the process pods have no StatefulSet). West
//! gets the headless mirror `db-east` and one ClusterIP mirror per pod, through the gateway,
//! each naming its pod; the headless mirror's slice lists each hostname at its pod mirror's
//! cluster IP (what DNS answers for `db-0.db-east...`). Scale-down removes one per-pod mirror
//! and keeps the others; unexport removes them all. Traffic by pod hostname runs on real nodes
//! (the suite).

use crate::mirror_support::*;
use crate::start_controller;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::collections::BTreeMap;
use strait_core::labels;
use strait_localcluster::PodSpec;

/// East's EndpointSlice of `db`, listing these pods (hostname, address, ready).
fn db_slice(pods: &[(&str, &str, bool)]) -> Res<EndpointSlice> {
    let endpoints: Vec<_> = pods
        .iter()
        .map(|(host, ip, ready)| {
            serde_json::json!({"addresses": [ip], "hostname": host,
                "conditions": {"ready": ready},
                "targetRef": {"kind": "Pod", "namespace": "shop", "name": host}})
        })
        .collect();
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "db-abcde", "namespace": "shop",
            "labels": {"kubernetes.io/service-name": "db",
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
    }))?)
}

async fn put_db_slice(e: &Client, pods: &[(&str, &str, bool)]) -> Res {
    Api::<EndpointSlice>::namespaced(e.clone(), "shop")
        .patch(
            "db-abcde",
            &PatchParams::apply("test").force(),
            &Patch::Apply(&db_slice(pods)?),
        )
        .await?;
    Ok(())
}

/// West's per-pod mirrors of `db-east`, by name, with their cluster IPs.
async fn pod_mirrors(w: &Client) -> Res<BTreeMap<String, (String, Service)>> {
    let lp = kube::api::ListParams::default()
        .labels(&format!("{}=db-east", labels::HEADLESS_MIRROR_SVC_NAME));
    let list = Api::<Service>::namespaced(w.clone(), "shop")
        .list(&lp)
        .await?;
    Ok(list
        .items
        .into_iter()
        .map(|s| {
            let ip = s
                .spec
                .as_ref()
                .and_then(|s| s.cluster_ip.clone())
                .unwrap_or_default();
            (s.metadata.name.clone().unwrap_or_default(), (ip, s))
        })
        .collect())
}

/// (hostname, address, ready) of each endpoint of west's `db-east` slice, sorted.
async fn headless_endpoints(w: &Client) -> Vec<(String, String, bool)> {
    let Some(es) = get_slice(w, "shop", "db-east").await else {
        return Vec::new();
    };
    let mut out: Vec<_> = es
        .endpoints
        .iter()
        .map(|e| {
            (
                e.hostname.clone().unwrap_or_default(),
                e.addresses.first().cloned().unwrap_or_default(),
                e.conditions.as_ref().and_then(|c| c.ready) == Some(true),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mirror_headless() -> Res {
    init("info,kube=warn,strait_mirror=debug");
    let anchor_pod = PodSpec::new("shop", "anchor");
    let (west, east, Linked { pki, gw: _gw, .. }, [_anchor]) =
        linked_pair(&["shop"], &["shop"], [anchor_pod]).await?;
    let (w, e) = (west.client(), east.client());
    let mut db = service("shop", "db", 5432, &[EXPORTED], None)?;
    if let Some(spec) = db.spec.as_mut() {
        spec.cluster_ip = Some("None".into());
        if let Some(p) = spec.ports.as_mut() {
            p[0].name = Some("pg".into());
        }
    }
    Api::<Service>::namespaced(e.clone(), "shop")
        .create(&PostParams::default(), &db)
        .await?;
    put_db_slice(
        &e,
        &[
            ("db-0", "198.18.200.10", true),
            ("db-1", "198.18.200.11", true),
            ("db-2", "198.18.200.12", false),
        ],
    )
    .await?;
    let _ctl = start_controller(w.clone(), &pki.anchor_pem);

    // The headless mirror, and one mirror per pod through the gateway, naming its pod.
    let parent = wait_for("db-east", T, || get_svc(&w, "shop", "db-east")).await?;
    assert_eq!(
        parent.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()),
        Some("None"),
        "the mirror of a headless Service is headless"
    );
    let pods = wait_for("three per-pod mirrors", T, || async {
        pod_mirrors(&w).await.ok().filter(|m| m.len() == 3)
    })
    .await?;
    let names: Vec<&str> = pods.keys().map(String::as_str).collect();
    assert_eq!(names, ["db-0-east", "db-1-east", "db-2-east"]);
    for (name, (ip, svc)) in &pods {
        let host = name.trim_end_matches("-east");
        assert!(
            ip.parse::<std::net::IpAddr>().is_ok(),
            "{name} has a cluster IP: {ip}"
        );
        let a = svc.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            a.get(labels::REMOTE_SVC_FQ_NAME),
            Some(&format!("{host}.db.shop.svc.cluster.local")),
            "{name}"
        );
        assert_eq!(
            a.get(labels::REMOTE_GATEWAY_IDENTITY).map(String::as_str),
            Some(GW_ID)
        );
        let es = wait_for("a per-pod slice", T, || get_slice(&w, "shop", name)).await?;
        assert_eq!(es.endpoints[0].addresses, [east.host_addr().to_string()]);
        assert_eq!(es.ports.as_ref().and_then(|p| p[0].port), Some(4143));
    }
    // The headless slice lists each hostname at its pod mirror's cluster IP.
    let want: Vec<(String, String, bool)> = pods
        .iter()
        .map(|(n, (ip, _))| {
            let host = n.trim_end_matches("-east").to_string();
            let ready = host != "db-2";
            (host, ip.clone(), ready)
        })
        .collect();
    wait_for("db-east lists the pods' mirrors", T, || async {
        (headless_endpoints(&w).await == want).then_some(())
    })
    .await?;
    let st = wait_for("status counts by mode", T, || async {
        status(&w, "east")
            .await
            .filter(|s| s.services.pod_mirrors == 3)
    })
    .await?;
    assert_eq!(
        (
            st.services.mirrored,
            st.services.headless,
            st.services.through_gateway
        ),
        (1, 1, 0),
        "{st:?}"
    );

    // Scale 3 → 2: db-2's mirror goes; the others stay, with the same cluster IPs.
    put_db_slice(
        &e,
        &[
            ("db-0", "198.18.200.10", true),
            ("db-1", "198.18.200.11", true),
        ],
    )
    .await?;
    let after = wait_for("db-2-east gone", T, || async {
        pod_mirrors(&w).await.ok().filter(|m| m.len() == 2)
    })
    .await?;
    for (name, (ip, svc)) in &after {
        assert_eq!(&pods[name].0, ip, "{name} kept its cluster IP");
        assert_eq!(
            pods[name].1.metadata.uid, svc.metadata.uid,
            "{name} was not recreated"
        );
    }
    assert!(get_slice(&w, "shop", "db-2-east").await.is_none());
    wait_for("db-east lists two", T, || async {
        (headless_endpoints(&w).await.len() == 2).then_some(())
    })
    .await?;

    // Unexported: the headless mirror and every per-pod mirror go.
    set_labels(
        &e,
        "shop",
        "db",
        serde_json::json!({labels::EXPORTED: null}),
    )
    .await?;
    wait_for("every db mirror gone", T, || async {
        let (svcs, slices) = our_mirrors(&w).await.ok()?;
        (svcs.is_empty() && slices.is_empty()).then_some(())
    })
    .await?;
    Ok(())
}
