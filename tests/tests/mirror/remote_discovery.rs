//! Remote discovery: a Service exported for it is mirrored with the remote pods themselves as
//! endpoints (one slice an identity, ready pods only, the gateway's liveness no concern of
//! theirs) instead of the gateway, across namespaces; unexported, every slice goes; a bad
//! selector is reported in the Link status, and the Link is served again once fixed.

use crate::mirror_support::*;
use crate::start_controller;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use strait_core::labels;
use strait_localcluster::PodSpec;

/// The slices of mirror `ns/name` in west, by name.
async fn mirror_slices(
    client: &Client,
    ns: &str,
    name: &str,
) -> Option<std::collections::BTreeMap<String, EndpointSlice>> {
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={name}"));
    let list = Api::<EndpointSlice>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .ok()?;
    Some(
        list.items
            .into_iter()
            .map(|s| (s.metadata.name.clone().unwrap_or_default(), s))
            .collect(),
    )
}

/// (identity annotation, ready addresses, ports) of each slice, sorted.
fn slice_summary(
    slices: &std::collections::BTreeMap<String, EndpointSlice>,
) -> Vec<(Option<String>, Vec<String>, Vec<i32>)> {
    let mut out: Vec<_> = slices
        .values()
        .map(|s| {
            let id = s
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(labels::REMOTE_IDENTITY).cloned());
            let addrs = s
                .endpoints
                .iter()
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                .flat_map(|e| e.addresses.clone())
                .collect();
            let ports = s.ports.iter().flatten().filter_map(|p| p.port).collect();
            (id, addrs, ports)
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mirror_remote_discovery() -> Res {
    init("info,kube=warn,strait_mirror=debug");
    // Two pods behind one Service: one meshed (service account `web`), one without a proxy.
    let meshed = PodSpec::new("shop", "web-meshed")
        .label("app", "web")
        .service_account("web")
        .annotation(labels::PROXY_VERSION, "test");
    let plain = PodSpec::new("shop", "web-plain").label("app", "web");
    let (west, east, Linked { pki, gw, links }, [meshed, plain]) =
        linked_pair_with(&["shop"], &["shop"], [meshed, plain], |l| {
            l.spec.remote_discovery_selector = Some(serde_json::from_value(serde_json::json!({
                "matchLabels": {labels::EXPORTED: labels::EXPORTED_REMOTE_DISCOVERY}
            }))?);
            Ok(())
        })
        .await?;
    let (w, e) = (west.client(), east.client());
    let pp = PostParams::default();
    // Exported through the gateway at first; `web` targets port 8080 of its pods.
    let mut web = service("shop", "web", 80, &[EXPORTED], Some("web"))?;
    if let Some(p) = web.spec.as_mut().and_then(|s| s.ports.as_mut()) {
        p[0].target_port =
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8080));
    }
    let esvc = Api::<Service>::namespaced(e.clone(), "shop");
    esvc.create(&pp, &web).await?;
    esvc.create(&pp, &service("shop", "api", 81, &[EXPORTED], None)?)
        .await?;
    let ctl = start_controller(w.clone(), &pki.anchor_pem);
    wait_for("web-east through the gateway", T, || async {
        get_slice(&w, "shop", "web-east")
            .await
            .filter(|s| slice_ready(s) == Some(true))
    })
    .await?;

    // Relabelled for remote discovery: the same mirror, now listing the pods themselves in
    // one slice per identity; the gateway slice goes.
    set_labels(
        &e,
        "shop",
        "web",
        serde_json::json!({labels::EXPORTED: labels::EXPORTED_REMOTE_DISCOVERY}),
    )
    .await?;
    let web_id = "web.shop.serviceaccount.identity.strait.cluster.local".to_string();
    let both = vec![
        (None, vec![plain.ip().to_string()], vec![8080]),
        (
            Some(web_id.clone()),
            vec![meshed.ip().to_string()],
            vec![8080],
        ),
    ];
    let slices = wait_for("web-east lists the remote pods", T, || async {
        mirror_slices(&w, "shop", "web-east")
            .await
            .filter(|s| slice_summary(s) == both)
    })
    .await?;
    assert!(
        !slices.contains_key("web-east"),
        "the gateway slice is gone: {:?}",
        slices.keys()
    );
    for (name, s) in &slices {
        assert!(name.starts_with("web-east-"), "{name}");
        let l = s.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            l.get(labels::MIRRORED_SERVICE).map(String::as_str),
            Some("true")
        );
        assert_eq!(
            l.get(labels::CLUSTER_NAME).map(String::as_str),
            Some("east")
        );
        let a = s.metadata.annotations.clone().unwrap_or_default();
        assert!(!a.contains_key(labels::REMOTE_GATEWAY_IDENTITY));
    }
    let m = get_svc(&w, "shop", "web-east").await.ok_or("web-east")?;
    let ml = m.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        ml.get(labels::REMOTE_DISCOVERY).map(String::as_str),
        Some("east")
    );
    let ma = m.metadata.annotations.clone().unwrap_or_default();
    assert!(!ma.contains_key(labels::REMOTE_GATEWAY_IDENTITY), "{ma:?}");
    assert_eq!(
        ma.get(labels::REMOTE_SVC_FQ_NAME).map(String::as_str),
        Some("web.shop.svc.cluster.local")
    );
    let spec = m.spec.clone().unwrap_or_default();
    assert_eq!(spec.ports.unwrap_or_default()[0].port, 80);

    // A pod that is not ready is not listed; its slice goes while it has no ready pod.
    meshed.set_ready(false).await?;
    let only_plain = vec![both[0].clone()];
    wait_for("the meshed pod's address removed", T, || async {
        mirror_slices(&w, "shop", "web-east")
            .await
            .filter(|s| slice_summary(s) == only_plain)
    })
    .await?;
    meshed.set_ready(true).await?;
    wait_for("the meshed pod listed again", T, || async {
        mirror_slices(&w, "shop", "web-east")
            .await
            .filter(|s| slice_summary(s) == both)
    })
    .await?;

    // The gateway's liveness is not theirs: down, the gateway mirror goes not ready and the
    // remote-discovery mirror keeps its endpoints.
    gw.up.store(false, Ordering::SeqCst);
    wait_for("api-east not ready with the gateway down", T, || async {
        get_slice(&w, "shop", "api-east")
            .await
            .filter(|s| slice_ready(s) == Some(false))
    })
    .await?;
    let s = mirror_slices(&w, "shop", "web-east")
        .await
        .ok_or("web-east slices")?;
    assert_eq!(slice_summary(&s), both);
    gw.up.store(true, Ordering::SeqCst);

    // A second remote-discovery Service in another namespace: its slices are watched too.
    east.ensure_namespace("billing").await?;
    west.ensure_namespace("billing").await?;
    let billing = east
        .pod(PodSpec::new("billing", "orders-0").label("app", "orders"))
        .await?;
    Api::<Service>::namespaced(e.clone(), "billing")
        .create(
            &pp,
            &service(
                "billing",
                "orders",
                82,
                &[(labels::EXPORTED, labels::EXPORTED_REMOTE_DISCOVERY)],
                Some("orders"),
            )?,
        )
        .await?;
    wait_for("orders-east lists its pod", T, || async {
        mirror_slices(&w, "billing", "orders-east")
            .await
            .filter(|s| slice_summary(s) == vec![(None, vec![billing.ip().to_string()], vec![82])])
    })
    .await?;
    let st = wait_for("status: 3 mirrored", T, || async {
        status(&w, "east")
            .await
            .filter(|s| s.services.mirrored == 3)
    })
    .await?;
    assert!(st.not_mirrored.is_empty(), "{st:?}");

    // Unexported: the mirror and every slice of it go; nothing else.
    set_labels(
        &e,
        "shop",
        "web",
        serde_json::json!({labels::EXPORTED: null}),
    )
    .await?;
    wait_for("web-east and its slices removed", T, || async {
        let (svcs, slices) = our_mirrors(&w).await.ok()?;
        let want = BTreeSet::from([
            "billing/orders-east".to_string(),
            "shop/api-east".to_string(),
        ]);
        (svcs == want && slices.iter().all(|s| !s.starts_with("shop/web-east"))).then_some(())
    })
    .await?;

    // A bad remoteDiscoverySelector is reported in the Link status.
    links
        .patch(
            "east",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"remoteDiscoverySelector": {
                "matchExpressions": [{"key": "a", "operator": "In"}]}}})),
        )
        .await?;
    wait_for("remoteDiscoverySelector error in status", T, || async {
        status(&w, "east")
            .await?
            .link_error
            .filter(|e| e.starts_with("remoteDiscoverySelector does not parse"))
    })
    .await?;

    // A Link that fixes its selector and asks for federated members too is served again.
    links
        .patch(
            "east",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {
                "remoteDiscoverySelector": {"matchExpressions": null,
                    "matchLabels": {labels::EXPORTED: "remote-discovery"}},
                "federatedServiceSelector": {"matchLabels": {labels::FEDERATED: "member"}}}})),
        )
        .await?;
    let st = wait_for("the Link served again", T, || async {
        status(&w, "east").await.filter(|s| s.link_error.is_none())
    })
    .await?;
    assert!(st.warnings.is_empty(), "{:?}", st.warnings);
    drop(ctl);
    drop(gw);
    drop((meshed, plain, billing));
    Ok(())
}
