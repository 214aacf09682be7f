//! Federated Services: `web` labelled as a member in east and in west forms west's
//! `web-federated`, owned by the controller (not by any Link), whose endpoints are east's
//! gateway (east's slice, with the gateway identity and east's FQDN on it) and west's own
//! `web` (named on the Service, read by destination). A member whose ports differ from the
//! oldest member's is refused in the Link status; a member leaving takes its endpoints, the
//! last one the Service. Traffic to both members runs on real nodes (the suite).

use crate::mirror_support::*;
use crate::start_controller;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use strait_core::labels;
use strait_k8s_api::link::Reason;
use strait_localcluster::PodSpec;

const MEMBER: (&str, &str) = (labels::FEDERATED, labels::FEDERATED_MEMBER);

/// East's EndpointSlice of `svc`, one ready endpoint (as the controller-manager writes one).
fn ready_slice(svc: &str, port: i32) -> Res<EndpointSlice> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{svc}-abcde"), "namespace": "shop",
            "labels": {"kubernetes.io/service-name": svc,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["198.18.200.20"], "conditions": {"ready": true}}],
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
    }))?)
}

async fn label(client: &Client, name: &str, member: bool) -> Res {
    let value = member.then_some(labels::FEDERATED_MEMBER);
    Api::<Service>::namespaced(client.clone(), "shop")
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {labels::FEDERATED: value}}})),
        )
        .await?;
    Ok(())
}

fn annotation(svc: &Service, key: &str) -> Option<String> {
    svc.metadata.annotations.as_ref()?.get(key).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mirror_federated() -> Res {
    init("info,kube=warn,strait_mirror=debug");
    let anchor_pod = PodSpec::new("shop", "anchor");
    let (west, east, Linked { pki, gw: _gw, .. }, [_anchor]) =
        linked_pair_with(&["shop"], &["shop"], [anchor_pod], |link| {
            link.spec.federated_service_selector = Some(serde_json::from_value(
                serde_json::json!({"matchLabels": {labels::FEDERATED: labels::FEDERATED_MEMBER}}),
            )?);
            Ok(())
        })
        .await?;
    let (w, e) = (west.client(), east.client());
    let pp = PostParams::default();
    let (wsvc, esvc) = (
        Api::<Service>::namespaced(w.clone(), "shop"),
        Api::<Service>::namespaced(e.clone(), "shop"),
    );
    // `web` in both; `api` in west on 80, in east on 81 (west's is older: it wins).
    wsvc.create(&pp, &service("shop", "web", 80, &[MEMBER], Some("web"))?)
        .await?;
    wsvc.create(&pp, &service("shop", "api", 80, &[MEMBER], Some("api"))?)
        .await?;
    esvc.create(&pp, &service("shop", "web", 80, &[MEMBER], None)?)
        .await?;
    esvc.create(&pp, &service("shop", "api", 81, &[MEMBER], None)?)
        .await?;
    Api::<EndpointSlice>::namespaced(e.clone(), "shop")
        .create(&pp, &ready_slice("web", 80)?)
        .await?;
    let _ctl = start_controller(w.clone(), &pki.anchor_pem);

    // west's web-federated: ours (no Link's), naming both members and its local one.
    let fed = wait_for("web-federated with both members", T, || async {
        get_svc(&w, "shop", "web-federated")
            .await
            .filter(|s| annotation(s, labels::FEDERATED_MEMBERS).as_deref() == Some("local,east"))
    })
    .await?;
    let l = fed.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        l.get(labels::MIRRORED_SERVICE).map(String::as_str),
        Some("true")
    );
    assert_eq!(l.get(labels::CLUSTER_NAME).map(String::as_str), Some(""));
    assert_eq!(
        l.get(labels::FEDERATED_SERVICE).map(String::as_str),
        Some("true")
    );
    assert!(
        !l.contains_key(labels::FEDERATED),
        "the member label is not copied"
    );
    assert_eq!(
        annotation(&fed, labels::FEDERATED_LOCAL_MEMBER).as_deref(),
        Some("web")
    );
    let ports = fed
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    assert_eq!(
        (ports[0].name.as_deref(), ports[0].port),
        (Some("http"), 80)
    );

    // East's slice: the gateway, ready, with its identity and east's FQDN for web.
    let es = wait_for("web-federated-east, ready", T, || async {
        get_slice(&w, "shop", "web-federated-east")
            .await
            .filter(|es| slice_ready(es) == Some(true))
    })
    .await?;
    assert_eq!(es.endpoints[0].addresses, [east.host_addr().to_string()]);
    assert_eq!(es.ports.as_ref().and_then(|p| p[0].port), Some(4143));
    let a = es.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        a.get(labels::REMOTE_SVC_FQ_NAME).map(String::as_str),
        Some("web.shop.svc.cluster.local")
    );
    assert_eq!(
        a.get(labels::REMOTE_GATEWAY_IDENTITY).map(String::as_str),
        Some(GW_ID)
    );
    let l = es.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        l.get("kubernetes.io/service-name").map(String::as_str),
        Some("web-federated")
    );
    assert_eq!(
        l.get(labels::CLUSTER_NAME).map(String::as_str),
        Some("east")
    );

    // east's api conflicts: refused in the Link's status, api-federated has west's alone.
    let st = wait_for("the conflict in status", T, || async {
        status(&w, "east")
            .await
            .filter(|s| s.services.federated == 1 && s.services.federation_conflict == 1)
    })
    .await?;
    let refused = st
        .not_mirrored
        .iter()
        .find(|n| n.name == "api")
        .expect("api is reported");
    assert_eq!(refused.reason, Reason::FederationConflict);
    assert!(
        refused.message.contains("[http:81/TCP]") && refused.message.contains("[http:80/TCP]"),
        "{}",
        refused.message
    );
    let api = wait_for("api-federated", T, || get_svc(&w, "shop", "api-federated")).await?;
    assert_eq!(
        annotation(&api, labels::FEDERATED_MEMBERS).as_deref(),
        Some("local")
    );
    assert!(get_slice(&w, "shop", "api-federated-east").await.is_none());

    // east's web leaves: its slice goes at once; the Service stays for west's member.
    label(&e, "web", false).await?;
    wait_for("web-federated-east gone", T, || async {
        get_slice(&w, "shop", "web-federated-east")
            .await
            .is_none()
            .then_some(())
    })
    .await?;
    let fed = get_svc(&w, "shop", "web-federated")
        .await
        .expect("web-federated stays while west's member does");
    wait_for("web-federated names only local", T, || async {
        get_svc(&w, "shop", "web-federated")
            .await
            .filter(|s| annotation(s, labels::FEDERATED_MEMBERS).as_deref() == Some("local"))
    })
    .await?;
    // The last member leaves: the Service goes; a user's Service of another name stays.
    label(&w, "web", false).await?;
    wait_for("web-federated gone", T, || async {
        get_svc(&w, "shop", "web-federated")
            .await
            .is_none()
            .then_some(())
    })
    .await?;
    assert!(get_svc(&w, "shop", "web").await.is_some());
    assert!(fed.metadata.uid.is_some());
    Ok(())
}
