//! Exports through the Multi-Cluster Services API (`ServiceExport`): none while east lacks the
//! CRD (and no error for it), found once it is installed, mirrored like a labelled export,
//! in either order with its Service and both ways at once; mirrors go with their export and
//! with the CRD.

use crate::mirror_support::*;
use crate::{metric_sum, start_controller};
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;
use strait_core::labels;
use strait_k8s_api::ServiceExport;
use strait_localcluster::PodSpec;

/// Installs the Multi-Cluster Services `ServiceExport` CRD (the MCS project's, not Strait's).
async fn install_service_export_crd(client: &Client) -> Res {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let yaml = include_str!("../../crds/serviceexport.yaml");
    let crd: CustomResourceDefinition = serde_saphyr::from_str(yaml)?;
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &crd)
        .await?;
    let exports: Api<ServiceExport> = Api::all(client.clone());
    wait_for("the ServiceExport CRD to be served", T, || {
        let exports = exports.clone();
        async move { exports.list(&ListParams::default()).await.ok().map(|_| ()) }
    })
    .await
}

fn service_export(ns: &str, name: &str) -> Res<ServiceExport> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceExport",
        "metadata": {"name": name, "namespace": ns},
    }))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mirror_service_export() -> Res {
    init("info,kube=warn,strait_mirror=debug");
    let web = PodSpec::new("shop", "web").label("app", "web");
    let (west, east, Linked { pki, gw, .. }, [web_pod]) =
        linked_pair(&["shop"], &["shop"], [web]).await?;
    let (w, e) = (west.client(), east.client());
    let gw_ip = IpAddr::V4(east.host_addr());
    let pp = PostParams::default();
    let esvc = Api::<Service>::namespaced(e.clone(), "shop");
    esvc.create(&pp, &service("shop", "web", 80, &[EXPORTED], Some("web"))?)
        .await?;
    esvc.create(&pp, &service("shop", "api", 81, &[], Some("web"))?)
        .await?;
    let ctl = start_controller(w.clone(), &pki.anchor_pem);

    // East has no ServiceExport API: label exports still work, and the 404 is no error.
    wait_for("web-east (labelled) without the MCS API", T, || {
        get_svc(&w, "shop", "web-east")
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let m = ctl.metrics.encode();
    assert_eq!(
        metric_sum(&m, "strait_mirror_remote_watch_restarts", &[]),
        0,
        "a missing ServiceExport CRD is not a watch failure: {m}"
    );
    assert!(get_svc(&w, "shop", "api-east").await.is_none());
    let st = status(&w, "east").await.ok_or("status")?;
    assert!(
        st.remote_api.as_ref().is_some_and(|r| r.reachable),
        "{st:?}"
    );

    // The CRD is installed later: found without a restart; an export mirrors `api`.
    install_service_export_crd(&e).await?;
    let exports = Api::<ServiceExport>::namespaced(e.clone(), "shop");
    exports.create(&pp, &service_export("shop", "api")?).await?;
    let m = wait_for("api-east (ServiceExport)", T, || {
        get_svc(&w, "shop", "api-east")
    })
    .await?;
    let a = m.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        a.get(labels::REMOTE_GATEWAY_IDENTITY).map(String::as_str),
        Some(GW_ID)
    );
    assert_eq!(
        a.get(labels::REMOTE_SVC_FQ_NAME).map(String::as_str),
        Some("api.shop.svc.cluster.local")
    );
    let l = m.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        l.get(labels::CLUSTER_NAME).map(String::as_str),
        Some("east")
    );
    // The same gateway endpoints as a labelled export, ready like it.
    let es = wait_for("api-east slice ready", T, || async {
        get_slice(&w, "shop", "api-east")
            .await
            .filter(|s| slice_ready(s) == Some(true))
    })
    .await?;
    assert_eq!(es.endpoints[0].addresses, vec![gw_ip.to_string()]);
    assert_eq!(es.ports.as_ref().and_then(|p| p[0].port), Some(4143));

    // An export before its Service; and a Service whose export comes well after it (its
    // events were already dropped, so the controller must look again).
    exports
        .create(&pp, &service_export("shop", "late")?)
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    esvc.create(&pp, &service("shop", "late", 82, &[], None)?)
        .await?;
    esvc.create(&pp, &service("shop", "early", 83, &[], None)?)
        .await?;
    wait_for("late-east (export first)", T, || {
        get_svc(&w, "shop", "late-east")
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(get_svc(&w, "shop", "early-east").await.is_none());
    exports
        .create(&pp, &service_export("shop", "early")?)
        .await?;
    wait_for("early-east (export after the Service)", T, || {
        get_svc(&w, "shop", "early-east")
    })
    .await?;
    // Both ways at once: still one mirror.
    exports.create(&pp, &service_export("shop", "web")?).await?;
    let st = wait_for("status: 4 mirrored", T, || async {
        status(&w, "east")
            .await
            .filter(|s| s.services.mirrored == 4)
    })
    .await?;
    assert!(st.not_mirrored.is_empty(), "{st:?}");

    // Unexport: the mirror goes; the labelled one stays when its export goes.
    exports.delete("api", &DeleteParams::default()).await?;
    wait_for("api-east removed", T, || async {
        get_svc(&w, "shop", "api-east")
            .await
            .is_none()
            .then_some(())
    })
    .await?;
    exports.delete("web", &DeleteParams::default()).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(get_svc(&w, "shop", "web-east").await.is_some());
    assert!(get_svc(&w, "shop", "late-east").await.is_some());

    // The CRD goes away: its exports with it, and so do their mirrors.
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    Api::<CustomResourceDefinition>::all(e.clone())
        .delete(
            "serviceexports.multicluster.x-k8s.io",
            &DeleteParams::default(),
        )
        .await?;
    wait_for(
        "export-only mirrors removed with the CRD",
        Duration::from_secs(60),
        || async {
            let (svcs, slices) = our_mirrors(&w).await.ok()?;
            let want = BTreeSet::from(["shop/web-east".to_string()]);
            (svcs == want && slices == want).then_some(())
        },
    )
    .await?;
    // No errors but the first probe's, sent before the gateway address was resolved.
    let m = ctl.metrics.encode();
    assert_eq!(
        metric_sum(&m, "strait_mirror_reconcile_errors", &[])
            - metric_sum(&m, "strait_mirror_reconcile_errors", &["reason=\"probe\""]),
        0,
        "{m}"
    );
    drop(ctl);
    drop(gw);
    drop(web_pod);
    Ok(())
}
