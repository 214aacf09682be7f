//! One Link's whole life, on one pair of clusters: an export mirrored with its ports, labels
//! and annotations (exclusions honoured), names taken by someone else and namespaces missing
//! reported and not written, remote readiness and the gateway's liveness (down, wrong
//! identity) carried to the endpoints, unexport, the remote API cut and back, credentials
//! rotated, east's API server restarted, the controller restarted, and the Link deleted
//! removing its mirrors and nothing else.

use crate::mirror_support::*;
use crate::relay::{Relay, kubeconfig_via, upstream_of};
use crate::start_controller;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use strait_core::labels;
use strait_localcluster::PodSpec;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mirror_lifecycle() -> Res {
    init("info,kube=warn,strait_mirror=debug");
    let web = PodSpec::new("shop", "web").label("app", "web");
    let (west, east, Linked { pki, gw, links }, [web_pod]) =
        linked_pair(&["shop"], &["shop", "billing"], [web]).await?;
    let (w, e) = (west.client(), east.client());
    let gw_ip = IpAddr::V4(east.host_addr());
    let relay = Relay::start(upstream_of(&east)?).await?;

    // East: exported web (with a pod), exported orders in a namespace west lacks, an exported
    // api whose mirror name is taken in west by someone else's Service, one not exported.
    let esvc = |ns: &str| Api::<Service>::namespaced(e.clone(), ns);
    let pp = PostParams::default();
    esvc("shop")
        .create(
            &pp,
            &service(
                "shop",
                "web",
                80,
                &[EXPORTED, ("app", "web"), ("secret.example.com/team", "x")],
                Some("web"),
            )?,
        )
        .await?;
    esvc("billing")
        .create(&pp, &service("billing", "orders", 81, &[EXPORTED], None)?)
        .await?;
    esvc("shop")
        .create(&pp, &service("shop", "api", 82, &[EXPORTED], None)?)
        .await?;
    esvc("shop")
        .create(&pp, &service("shop", "private", 83, &[], None)?)
        .await?;
    let foreign = Api::<Service>::namespaced(w.clone(), "shop")
        .create(
            &pp,
            &service("shop", "api-east", 9, &[("owner", "someone-else")], None)?,
        )
        .await?;
    // And pay, whose mirror's EndpointSlice name is taken by someone else's slice (no Service):
    // invisible to a controller that watches only its own labels, so it must ask first.
    esvc("shop")
        .create(&pp, &service("shop", "pay", 88, &[EXPORTED], None)?)
        .await?;
    let foreign_slice: EndpointSlice = serde_json::from_value(serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "pay-east", "namespace": "shop",
            "labels": {"kubernetes.io/service-name": "pay-east", "owner": "someone-else"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["198.18.0.9"]}],
        "ports": [{"name": "http", "port": 9, "protocol": "TCP"}],
    }))?;
    let foreign_slice = Api::<EndpointSlice>::namespaced(w.clone(), "shop")
        .create(&pp, &foreign_slice)
        .await?;

    // The controller is to reach east through the relay, which the test can cut: the pair's
    // Secret is rewritten before the controller starts.
    put_secret(&w, "east-credentials", &kubeconfig_via(&east, relay.addr)?).await?;
    let mut ctl = start_controller(w.clone(), &pki.anchor_pem);

    // Export → mirror with the right ports, labels and annotations; exclusions honoured.
    let m = wait_for("web-east", T, || get_svc(&w, "shop", "web-east")).await?;
    let l = m.metadata.labels.clone().unwrap_or_default();
    let a = m.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        l.get(labels::MIRRORED_SERVICE).map(String::as_str),
        Some("true")
    );
    assert_eq!(
        l.get(labels::CLUSTER_NAME).map(String::as_str),
        Some("east")
    );
    assert_eq!(l.get("app").map(String::as_str), Some("web"));
    assert!(
        !l.contains_key(labels::EXPORTED),
        "mirror.strait.dev/* is not copied"
    );
    assert!(
        !l.contains_key("secret.example.com/team"),
        "excluded label prefix"
    );
    assert_eq!(a.get("keep-me").map(String::as_str), Some("yes"));
    assert!(!a.contains_key("drop-me"), "excluded annotation");
    assert!(
        !a.contains_key("service.kubernetes.io/topology-mode"),
        "topology hints dropped"
    );
    assert_eq!(
        a.get(labels::REMOTE_SVC_FQ_NAME).map(String::as_str),
        Some("web.shop.svc.cluster.local")
    );
    assert_eq!(
        a.get(labels::REMOTE_GATEWAY_IDENTITY).map(String::as_str),
        Some(GW_ID)
    );
    assert!(a.contains_key(labels::REMOTE_RESOURCE_VERSION));
    let spec = m.spec.clone().unwrap_or_default();
    assert!(spec.selector.is_none());
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(
        spec.ports
            .unwrap_or_default()
            .iter()
            .map(|p| p.port)
            .collect::<Vec<_>>(),
        vec![80]
    );
    let es = wait_for("web-east slice ready", T, || async {
        get_slice(&w, "shop", "web-east")
            .await
            .filter(|s| slice_ready(s) == Some(true))
    })
    .await?;
    assert_eq!(es.endpoints[0].addresses, vec![gw_ip.to_string()]);
    assert_eq!(es.ports.as_ref().and_then(|p| p[0].port), Some(4143));
    assert!(
        get_svc(&w, "shop", "private-east").await.is_none(),
        "not exported, not mirrored"
    );

    // Missing namespace and names taken by someone else: in status, not mirrored.
    let st = wait_for("status with MissingNamespace and Error", T, || async {
        status(&w, "east").await.filter(|s| {
            s.services.missing_namespace == 1
                && s.services.error == 2
                && s.services.mirrored == 1
                && s.gateway_alive.is_some()
        })
    })
    .await?;
    assert!(
        st.not_mirrored
            .iter()
            .any(|n| n.name == "orders" && n.reason.as_str() == "MissingNamespace")
    );
    for name in ["api", "pay"] {
        assert!(
            st.not_mirrored.iter().any(|n| n.name == name
                && n.reason.as_str() == "Error"
                && n.message.starts_with("conflict:")),
            "{name} reported as a conflict: {:?}",
            st.not_mirrored
        );
    }
    // Neither half of pay's mirror was written: no Service to put behind someone's slice.
    assert!(get_svc(&w, "shop", "pay-east").await.is_none());
    // A conflict is counted once, however many passes see it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let conflicts: u64 = ctl
        .metrics
        .encode()
        .lines()
        .filter(|l| l.contains("reconcile_errors") && l.contains("reason=\"conflict\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(conflicts, 2, "{}", ctl.metrics.encode());
    assert_eq!(st.gateway_alive, Some(true));
    assert!(st.gateway_latency_ms.is_some());
    west.ensure_namespace("billing").await?;
    wait_for("orders-east after its namespace appears", T, || {
        get_svc(&w, "billing", "orders-east")
    })
    .await?;

    // Port change propagates.
    esvc("shop").patch("web", &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"ports": [{"name": "http", "port": 8080, "targetPort": 8080}]}}))).await?;
    wait_for("web-east port 8080", T, || async {
        get_svc(&w, "shop", "web-east").await.filter(|s| {
            s.spec
                .as_ref()
                .and_then(|s| s.ports.as_ref())
                .is_some_and(|p| p.len() == 1 && p[0].port == 8080)
        })
    })
    .await?;

    // Remote readiness: no ready endpoint in east → mirror endpoints not ready, and back.
    web_pod.set_ready(false).await?;
    wait_for("web-east not ready (remote pod)", T, || async {
        get_slice(&w, "shop", "web-east")
            .await
            .filter(|s| slice_ready(s) == Some(false))
    })
    .await?;
    web_pod.set_ready(true).await?;
    wait_for("web-east ready again", T, || async {
        get_slice(&w, "shop", "web-east")
            .await
            .filter(|s| slice_ready(s) == Some(true))
    })
    .await?;

    // Gateway down → not ready within period × threshold + period (+ margin); back when it returns.
    gw.up.store(false, Ordering::SeqCst);
    let down_at = Instant::now();
    wait_for("endpoints not ready with the gateway down", T, || async {
        get_slice(&w, "shop", "web-east")
            .await
            .filter(|s| slice_ready(s) == Some(false))
    })
    .await?;
    println!(
        "gateway down → endpoints not ready after {:?} (period 1s, threshold 2)",
        down_at.elapsed()
    );
    wait_for("status gatewayAlive=false", T, || async {
        status(&w, "east")
            .await
            .filter(|s| s.gateway_alive == Some(false))
    })
    .await?;
    gw.up.store(true, Ordering::SeqCst);
    wait_for("endpoints ready with the gateway back", T, || async {
        get_slice(&w, "shop", "web-east")
            .await
            .filter(|s| slice_ready(s) == Some(true))
    })
    .await?;

    // A gateway presenting a certificate for another identity is not alive.
    let impostor = gateway(gw_ip, &pki.wrong).await?;
    links
        .patch(
            "east",
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"spec": {"probeSpec": {"port": impostor.addr.port()}}}),
            ),
        )
        .await?;
    wait_for("wrong identity → not alive", T, || async {
        status(&w, "east")
            .await
            .filter(|s| s.gateway_alive == Some(false))
    })
    .await?;
    wait_for("wrong identity → endpoints not ready", T, || async {
        get_slice(&w, "shop", "web-east")
            .await
            .filter(|s| slice_ready(s) == Some(false))
    })
    .await?;
    links
        .patch(
            "east",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"probeSpec": {"port": gw.addr.port()}}})),
        )
        .await?;
    wait_for("right identity → ready", T, || async {
        get_slice(&w, "shop", "web-east")
            .await
            .filter(|s| slice_ready(s) == Some(true))
    })
    .await?;
    drop(impostor);

    // Unexport → mirror (and its slice) gone.
    set_labels(
        &e,
        "shop",
        "web",
        serde_json::json!({labels::EXPORTED: null}),
    )
    .await?;
    wait_for("web-east removed", T, || async {
        get_svc(&w, "shop", "web-east")
            .await
            .is_none()
            .then_some(())
    })
    .await?;
    wait_for("web-east slice removed", T, || async {
        get_slice(&w, "shop", "web-east")
            .await
            .is_none()
            .then_some(())
    })
    .await?;
    set_labels(
        &e,
        "shop",
        "web",
        serde_json::json!({labels::EXPORTED: "true"}),
    )
    .await?;
    wait_for("web-east back", T, || get_svc(&w, "shop", "web-east")).await?;

    // Remote API unreachable: export one, delete another meanwhile; mirrors kept, then converge.
    relay.cut();
    wait_for("status remoteApi unreachable", T, || async {
        status(&w, "east")
            .await
            .filter(|s| s.remote_api.as_ref().is_some_and(|r| !r.reachable))
    })
    .await?;
    esvc("shop")
        .create(&pp, &service("shop", "cart", 84, &[EXPORTED], None)?)
        .await?;
    esvc("billing")
        .delete("orders", &DeleteParams::default())
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        get_svc(&w, "billing", "orders-east").await.is_some(),
        "mirrors are kept while the remote API is down"
    );
    relay.restore();
    wait_for(
        "cart-east after the remote API returns",
        Duration::from_secs(60),
        || get_svc(&w, "shop", "cart-east"),
    )
    .await?;
    wait_for(
        "orders-east removed after the remote API returns",
        Duration::from_secs(60),
        || async {
            get_svc(&w, "billing", "orders-east")
                .await
                .is_none()
                .then_some(())
        },
    )
    .await?;
    wait_for("status remoteApi reachable", T, || async {
        status(&w, "east")
            .await
            .filter(|s| s.remote_api.as_ref().is_some_and(|r| r.reachable))
    })
    .await?;
    let restarts = ctl.metrics.encode();
    assert!(
        restarts.contains("strait_mirror_remote_watch_restarts_total"),
        "{restarts}"
    );

    // Credentials rotate: the Secret now points at another route to east; the old one dies.
    let relay2 = Relay::start(upstream_of(&east)?).await?;
    put_secret(&w, "east-credentials", &kubeconfig_via(&east, relay2.addr)?).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    relay.cut();
    esvc("shop")
        .create(&pp, &service("shop", "rotated", 87, &[EXPORTED], None)?)
        .await?;
    wait_for("rotated-east through the new credentials", T, || {
        get_svc(&w, "shop", "rotated-east")
    })
    .await?;
    esvc("shop")
        .delete("rotated", &DeleteParams::default())
        .await?;
    wait_for("rotated-east removed", T, || async {
        get_svc(&w, "shop", "rotated-east")
            .await
            .is_none()
            .then_some(())
    })
    .await?;
    put_secret(
        &w,
        "east-credentials",
        &std::fs::read_to_string(east.kubeconfig_path())?,
    )
    .await?;
    drop(relay2);

    // The real thing: east's API server stops and starts again.
    let mut east = east;
    east.stop_api_server();
    wait_for("status unreachable (API server stopped)", T, || async {
        status(&w, "east")
            .await
            .filter(|s| s.remote_api.as_ref().is_some_and(|r| !r.reachable))
    })
    .await?;
    east.start_api_server().await?;
    let e = east.client();
    let esvc = |ns: &str| Api::<Service>::namespaced(e.clone(), ns);
    esvc("shop")
        .create(
            &pp,
            &service("shop", "after-restart", 85, &[EXPORTED], None)?,
        )
        .await?;
    wait_for("after-restart-east", Duration::from_secs(60), || {
        get_svc(&w, "shop", "after-restart-east")
    })
    .await?;

    // Controller restarted mid-run, with changes while it was away: converge, no orphan, no duplicate.
    drop(ctl);
    tokio::time::sleep(Duration::from_millis(500)).await;
    esvc("shop")
        .delete("cart", &DeleteParams::default())
        .await?;
    esvc("shop")
        .create(&pp, &service("shop", "late", 86, &[EXPORTED], None)?)
        .await?;
    ctl = start_controller(w.clone(), &pki.anchor_pem);
    let want: BTreeSet<String> = [
        "billing/orders-east",
        "shop/after-restart-east",
        "shop/late-east",
        "shop/web-east",
    ]
    .into_iter()
    .filter(|k| *k != "billing/orders-east")
    .map(String::from)
    .collect();
    wait_for(
        "exactly the expected mirrors after a controller restart",
        T,
        || async {
            let (svcs, slices) = our_mirrors(&w).await.ok()?;
            (svcs == want && slices == want).then_some(())
        },
    )
    .await?;

    // Someone else's Service with a mirror-like name was never touched.
    let f = get_svc(&w, "shop", "api-east")
        .await
        .ok_or("foreign api-east vanished")?;
    assert_eq!(
        f.metadata.resource_version, foreign.metadata.resource_version,
        "foreign Service untouched"
    );
    let fs = get_slice(&w, "shop", "pay-east")
        .await
        .ok_or("foreign pay-east slice vanished")?;
    assert_eq!(
        fs.metadata.resource_version, foreign_slice.metadata.resource_version,
        "foreign EndpointSlice untouched"
    );
    assert_eq!(fs.endpoints, foreign_slice.endpoints);
    assert_eq!(fs.metadata.labels, foreign_slice.metadata.labels);

    // Deleting the Link removes its mirrors (finalizer) and nothing else.
    links.delete("east", &DeleteParams::default()).await?;
    wait_for("Link gone", T, || async {
        links
            .get_opt("east")
            .await
            .ok()
            .flatten()
            .is_none()
            .then_some(())
    })
    .await?;
    let (svcs, slices) = our_mirrors(&w).await?;
    assert!(
        svcs.is_empty() && slices.is_empty(),
        "mirrors left: {svcs:?} {slices:?}"
    );
    let f = get_svc(&w, "shop", "api-east")
        .await
        .ok_or("foreign api-east vanished")?;
    assert_eq!(
        f.metadata.resource_version,
        foreign.metadata.resource_version
    );
    let fs = get_slice(&w, "shop", "pay-east")
        .await
        .ok_or("foreign pay-east slice vanished")?;
    assert_eq!(
        fs.metadata.resource_version,
        foreign_slice.metadata.resource_version
    );
    println!("{}", ctl.metrics.encode());
    drop(ctl);
    drop(web_pod);
    Ok(())
}
