//! A Link's members of federated Services, with a remote view and local stores by hand.

#![allow(clippy::unwrap_used)]
use super::super::Diff;
use super::super::tests::{World, key, ours, plan, remote, summary_of};
use crate::federation::{Decision, Federation, Source};
use crate::store::Meta;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;
use strait_core::labels;
use strait_k8s_api::link::Reason;
use strait_k8s_api::relist::Store;

fn world() -> World {
    World::new(plan(serde_json::json!({
        "federatedServiceSelector": {"matchLabels": {labels::FEDERATED: "member"}},
    })))
}

fn federation(accepted: &[&str], refused: &[(&str, &str)]) -> Decision {
    Decision::from([(
        key("shop", "web"),
        Federation {
            oldest: Source::Cluster("east".into()),
            ports: Vec::new(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            accepted: accepted
                .iter()
                .map(|c| Source::Cluster(c.to_string()))
                .collect::<BTreeSet<_>>(),
            refused: refused
                .iter()
                .map(|(c, why)| (Source::Cluster(c.to_string()), why.to_string()))
                .collect(),
        },
    )])
}

fn federated_service() -> Meta {
    Meta {
        cluster: Some(labels::FEDERATED_OWNER.into()),
        hash: Some("fed".into()),
        ..Meta::default()
    }
}

fn ops(d: &Diff) -> Vec<String> {
    d.ops.iter().map(super::super::tests::summary).collect()
}

#[test]
fn a_members_slice_waits_for_the_verdict_and_the_federated_service() {
    let mut w = world();
    let mut m = super::super::Memory::default();
    let now = Instant::now();
    let web = remote(&w.plan, "shop", "web", "1", serde_json::json!({}));
    w.view.fed_services.clone().upsert(web.key(), web.clone());
    w.view
        .slices
        .clone()
        .upsert(key("shop", "web-abcde"), summary_of("web", true, &[]));
    // Not decided: nothing written, and an existing slice of ours stays.
    w.slices
        .clone()
        .upsert(key("shop", "web-federated-east"), ours("old"));
    let d = w.diff(&mut m, now);
    assert!(ops(&d).is_empty(), "{:?}", ops(&d));
    // Accepted, but the reconciler has not written the Service yet.
    w.decision = federation(&["east"], &[]);
    w.slices.clone().remove(&key("shop", "web-federated-east"));
    let d = w.diff(&mut m, now);
    assert!(ops(&d).is_empty(), "{:?}", ops(&d));
    // It has: the slice is created, and the member counted.
    w.services
        .clone()
        .upsert(key("shop", "web-federated"), federated_service());
    let d = w.diff(&mut m, now);
    assert_eq!(
        ops(&d),
        vec!["federated gateway shop/web-federated-east web-federated-east+"]
    );
    assert_eq!(d.mirrored.len(), 1);
    w.apply(&d.ops);
    assert!(ops(&w.diff(&mut m, now)).is_empty());
    // The gateway dies: the slice is rewritten (its endpoint not ready).
    w.gateway.alive = false;
    assert_eq!(
        ops(&w.diff(&mut m, now)),
        vec!["federated gateway shop/web-federated-east web-federated-east"]
    );
}

#[test]
fn a_refused_or_departed_member_loses_its_slice() {
    let mut w = world();
    let mut m = super::super::Memory::default();
    let now = Instant::now();
    let web = remote(&w.plan, "shop", "web", "1", serde_json::json!({}));
    w.view.fed_services.clone().upsert(web.key(), web.clone());
    w.services
        .clone()
        .upsert(key("shop", "web-federated"), federated_service());
    w.slices
        .clone()
        .upsert(key("shop", "web-federated-east"), ours("old"));
    w.decision = federation(&["north"], &[("east", "ports differ")]);
    let d = w.diff(&mut m, now);
    assert_eq!(
        ops(&d),
        vec!["delete slice shop/web-federated-east Some(\"uid-old\")"]
    );
    assert_eq!(d.not_mirrored.len(), 1);
    assert_eq!(d.not_mirrored[0].reason, Reason::FederationConflict);
    assert_eq!(d.not_mirrored[0].message, "ports differ");

    // Accepted again, then unlabelled in the remote cluster: its slice goes.
    w.decision = federation(&["east"], &[]);
    let d = w.diff(&mut m, now);
    w.apply(&d.ops);
    w.view.fed_services.clone().remove(&web.key());
    let gone = ops(&w.diff(&mut m, now));
    assert_eq!(gone.len(), 1, "{gone:?}");
    assert!(
        gone[0].starts_with("delete slice shop/web-federated-east "),
        "{gone:?}"
    );
}

#[test]
fn a_name_held_by_someone_else_is_reported_not_written() {
    let mut w = world();
    let mut m = super::super::Memory::default();
    let now = Instant::now();
    let web = remote(&w.plan, "shop", "web", "1", serde_json::json!({}));
    w.view.fed_services.clone().upsert(web.key(), web.clone());
    w.decision = federation(&["east"], &[]);
    // A user's own Service named web-federated.
    w.services
        .clone()
        .upsert(key("shop", "web-federated"), Meta::default());
    let d = w.diff(&mut m, now);
    assert!(ops(&d).is_empty());
    assert_eq!(d.not_mirrored[0].reason, Reason::Error);
    assert!(
        d.not_mirrored[0]
            .message
            .contains("not a federated Service of Strait's")
    );
    // Strait's Service, but someone else's slice of the member's name.
    w.services
        .clone()
        .upsert(key("shop", "web-federated"), federated_service());
    w.slices
        .clone()
        .upsert(key("shop", "web-federated-east"), Meta::default());
    let d = w.diff(&mut m, now);
    assert!(ops(&d).is_empty());
    assert_eq!(d.new_conflicts, 1);
    assert!(
        d.not_mirrored[0]
            .message
            .starts_with("conflict: EndpointSlice")
    );
}

#[test]
fn a_member_selected_for_remote_discovery_lists_its_pods() {
    let mut w = world();
    let mut m = super::super::Memory::default();
    let now = Instant::now();
    let web = remote(&w.plan, "shop", "web", "1", serde_json::json!({}));
    w.view.fed_services.clone().upsert(web.key(), web.clone());
    w.remote_discovery(&web);
    w.view.rd_slices.clone().upsert(
        key("shop", "web-abcde"),
        std::sync::Arc::new(crate::remote::RdSlice {
            service: "web".into(),
            ipv6: false,
            ports: Box::new([crate::remote::SlicePort {
                name: Some("http".into()),
                port: 8080,
                protocol: Some("TCP".into()),
                app_protocol: None,
            }]),
            endpoints: Box::new([crate::remote::ReadyEndpoint {
                addr: "198.18.1.5".parse().unwrap(),
                pod: None,
            }]),
        }),
    );
    w.decision = federation(&["east"], &[]);
    w.services
        .clone()
        .upsert(key("shop", "web-federated"), federated_service());
    let d = w.diff(&mut m, now);
    let federated: Vec<String> = ops(&d)
        .into_iter()
        .filter(|o| o.starts_with("federated"))
        .collect();
    assert_eq!(federated.len(), 1, "{federated:?}");
    assert!(
        federated[0].starts_with("federated rd shop/web-federated-east web-federated-east-"),
        "{federated:?}"
    );
}
