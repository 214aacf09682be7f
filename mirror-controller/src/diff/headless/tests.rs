//! The diff of headless mirrors, with plain values: a StatefulSet's Service and its pods'
//! hostnames, as the remote slices show them.

#![allow(clippy::unwrap_used)]
use super::super::tests::{World, key, mirrored, plan, remote, summaries, summary_of};
use super::super::{Memory, Op, Shape, status};
use std::collections::HashMap;
use std::time::Instant;
use strait_k8s_api::link::Reason;
use strait_k8s_api::relist::Store;

/// East exports headless `db` whose slice lists these pods (hostname, ready).
fn statefulset(w: &World, svc: &str, pods: &[(&str, bool)]) {
    w.select(&remote(
        &w.plan,
        "shop",
        svc,
        "1",
        serde_json::json!({"clusterIP": "None"}),
    ));
    w.view.slices.clone().upsert(
        key("shop", &format!("{svc}-x1")),
        summary_of(svc, false, pods),
    );
}

/// The headless slice's endpoints of an op of `d`: (hostname, ip, ready).
fn headless_endpoints(d: &super::super::Diff) -> Vec<(String, String, bool)> {
    d.ops
        .iter()
        .find_map(|op| match op {
            Op::Mirror {
                shape: Shape::Headless(eps),
                ..
            } => Some(
                eps.iter()
                    .map(|e| (e.hostname.to_string(), e.ip.to_string(), e.ready))
                    .collect(),
            ),
            _ => None,
        })
        .unwrap_or_default()
}

#[test]
fn a_statefulset_gets_a_headless_mirror_and_one_mirror_per_pod() {
    let w = World::new(plan(serde_json::json!({})));
    let mut m = Memory::default();
    let now = Instant::now();
    statefulset(&w, "db", &[("db-0", true), ("db-1", true), ("db-2", false)]);
    let d = w.diff(&mut m, now);
    // Every pod gets its mirror, the not-ready one too (so its cluster IP stays while it
    // restarts); the headless slice waits for their cluster IPs.
    assert_eq!(
        summaries(&d),
        [
            "pod shop/db-0-east svc=true/true slice=true/true",
            "pod shop/db-1-east svc=true/true slice=true/true",
            "pod shop/db-2-east svc=true/true slice=true/true",
            "headless shop/db-east svc=true/true slice=true/true eps=0",
        ]
    );
    assert!(d.not_mirrored.is_empty(), "{:?}", d.not_mirrored);
    let Some(Op::Mirror { remote_ready, .. }) = d.ops.get(2) else {
        panic!("{:?}", summaries(&d));
    };
    assert!(!remote_ready, "db-2's mirror is not ready");
    w.apply(&d.ops);
    // The per-pod mirrors have cluster IPs now: the headless slice lists them, by hostname.
    let d = w.diff(&mut m, now);
    assert_eq!(
        summaries(&d),
        ["headless shop/db-east svc=false/false slice=true/false eps=3"]
    );
    assert_eq!(
        headless_endpoints(&d),
        [
            ("db-0".into(), "198.19.0.1".into(), true),
            ("db-1".into(), "198.19.0.2".into(), true),
            ("db-2".into(), "198.19.0.3".into(), false),
        ]
    );
    w.apply(&d.ops);
    let d = w.diff(&mut m, now);
    assert!(d.ops.is_empty(), "{:?}", summaries(&d));
    let s = status(d.not_mirrored, &d.mirrored, &HashMap::new());
    assert_eq!(
        (
            s.services.mirrored,
            s.services.headless,
            s.services.pod_mirrors,
            s.services.through_gateway
        ),
        (1, 1, 3, 0)
    );
}

#[test]
fn per_pod_mirrors_follow_the_statefulset_and_go_with_their_parent() {
    let w = World::new(plan(serde_json::json!({})));
    let mut m = Memory::default();
    let now = Instant::now();
    statefulset(&w, "db", &[("db-0", true), ("db-1", true), ("db-2", true)]);
    for _ in 0..2 {
        let d = w.diff(&mut m, now);
        w.apply(&d.ops);
    }
    // Scale 3 → 2: db-2's mirror goes, the others stay as they are.
    statefulset(&w, "db", &[("db-0", true), ("db-1", true)]);
    let d = w.diff(&mut m, now);
    assert_eq!(
        without_uids(&d),
        [
            "delete slice shop/db-2-east",
            "delete svc shop/db-2-east",
            "headless shop/db-east svc=false/false slice=true/false eps=2",
        ]
    );
    w.apply(&d.ops);
    // A pod that is not ready keeps its mirror, not ready.
    statefulset(&w, "db", &[("db-0", false), ("db-1", true)]);
    let d = w.diff(&mut m, now);
    assert_eq!(
        summaries(&d),
        [
            "pod shop/db-0-east svc=false/false slice=true/false",
            "headless shop/db-east svc=false/false slice=true/false eps=2",
        ]
    );
    w.apply(&d.ops);
    // Unexported: the headless mirror and every per-pod mirror go, Services and slices.
    w.view.services.clone().remove(&key("shop", "db"));
    let d = w.diff(&mut m, now);
    assert_eq!(
        without_uids(&d),
        [
            "delete slice shop/db-0-east",
            "delete slice shop/db-1-east",
            "delete slice shop/db-east",
            "delete svc shop/db-0-east",
            "delete svc shop/db-1-east",
            "delete svc shop/db-east",
        ]
    );
    assert!(d.mirrored.is_empty());
}

/// The summaries of `d`'s ops, sorted, deletes without their uids.
fn without_uids(d: &super::super::Diff) -> Vec<String> {
    let mut s: Vec<String> = summaries(d)
        .iter()
        .map(|s| s.split(" Some").next().unwrap_or_default().to_string())
        .collect();
    s.sort();
    s
}

#[test]
fn headless_services_without_pods_or_turned_off_are_refused_with_a_reason() {
    let table = [
        (
            serde_json::json!({}),
            vec![],
            "mirrored only while its endpoints have hostnames",
        ),
        (
            serde_json::json!({"mirrorHeadlessServices": false}),
            vec![("db-0", true)],
            "mirrorHeadlessServices: false",
        ),
    ];
    for (extra, pods, why) in table {
        let w = World::new(plan(extra));
        let mut m = Memory::default();
        statefulset(&w, "db", &pods);
        let d = w.diff(&mut m, Instant::now());
        assert!(d.ops.is_empty(), "{why}: {:?}", summaries(&d));
        let [n] = d.not_mirrored.as_slice() else {
            panic!("{why}: {:?}", d.not_mirrored);
        };
        assert_eq!((n.name.as_str(), n.reason), ("db", Reason::InvalidService));
        assert!(n.message.contains(why), "{}", n.message);
    }
    // Remote discovery has no per-pod mirrors: refused, saying how to get them.
    let w = World::new(plan(serde_json::json!({})));
    let mut m = Memory::default();
    w.remote_discovery(&remote(
        &w.plan,
        "shop",
        "db",
        "1",
        serde_json::json!({"clusterIP": "None"}),
    ));
    let d = w.diff(&mut m, Instant::now());
    assert!(d.ops.is_empty());
    assert!(d.not_mirrored[0].message.contains("through the gateway"));
}

#[test]
fn a_per_pod_name_that_is_taken_is_reported_and_the_other_pods_mirrored() {
    let w = World::new(plan(serde_json::json!({})));
    let mut m = Memory::default();
    let now = Instant::now();
    // `db-0-east` is the mirror of east's Service db-0 too; `db-1-east` would be a pod
    // mirror of both db and dz; `db-2-east` is someone else's Service here.
    w.select(&remote(&w.plan, "shop", "db-0", "1", serde_json::json!({})));
    statefulset(
        &w,
        "db",
        &[
            ("db-0", true),
            ("db-1", true),
            ("db-2", true),
            ("db-3", true),
        ],
    );
    statefulset(&w, "dz", &[("db-1", true)]);
    w.services.clone().upsert(
        key("shop", "db-2-east"),
        crate::store::Meta {
            uid: Some("theirs".into()),
            ..Default::default()
        },
    );
    let d = w.diff(&mut m, now);
    let mut got = summaries(&d);
    got.sort();
    assert_eq!(
        got,
        [
            "headless shop/db-east svc=true/true slice=true/true eps=0",
            "headless shop/dz-east svc=true/true slice=true/true eps=0",
            "mirror shop/db-0-east svc=true/true slice=true/true",
            "pod shop/db-1-east svc=true/true slice=true/true",
            "pod shop/db-3-east svc=true/true slice=true/true",
        ]
    );
    let mut why: Vec<(String, Reason, String)> = d
        .not_mirrored
        .iter()
        .map(|n| (n.name.clone(), n.reason, n.message.clone()))
        .collect();
    why.sort_by(|a, b| (&a.0, &a.2).cmp(&(&b.0, &b.2)));
    assert_eq!(
        why,
        [
            (
                "db".into(),
                Reason::Error,
                "pod db-0's mirror name db-0-east is the mirror of Service db-0".into()
            ),
            (
                "db".into(),
                Reason::Error,
                "pod db-2: conflict: Service shop/db-2-east exists and is not ours; left alone"
                    .into()
            ),
            (
                "dz".into(),
                Reason::Error,
                "pod db-1's mirror name db-1-east is taken by a pod of headless Service db".into()
            ),
        ]
    );
    assert_eq!(d.new_conflicts, 1);
    // Someone else's Service is never ours to delete, and the other mirrors stay wanted.
    w.apply(&d.ops);
    let d = w.diff(&mut m, now);
    assert!(
        summaries(&d).iter().all(|s| !s.starts_with("delete")),
        "{:?}",
        summaries(&d)
    );
    assert!(mirrored(&d).contains(&key("shop", "db-3-east")));
}

#[test]
fn a_mirror_that_turns_headless_is_replaced_not_patched() {
    let w = World::new(plan(serde_json::json!({})));
    let mut m = Memory::default();
    let now = Instant::now();
    // A ClusterIP mirror exists; east's Service is replaced by a headless one of that name.
    w.select(&remote(&w.plan, "shop", "db", "0", serde_json::json!({})));
    w.apply(&w.diff(&mut m, now).ops);
    assert!(!w.services.get("shop", "db-east").unwrap().headless);
    statefulset(&w, "db", &[("db-0", true)]);
    let d = w.diff(&mut m, now);
    assert_eq!(without_uids(&d), ["delete svc shop/db-east"]);
    w.apply(&d.ops);
    // Then created headless, with its pod's mirror.
    let d = w.diff(&mut m, now);
    assert_eq!(
        summaries(&d),
        [
            "pod shop/db-0-east svc=true/true slice=true/true",
            "headless shop/db-east svc=true/true slice=true/false eps=0",
        ]
    );
    w.apply(&d.ops);
    assert!(w.services.get("shop", "db-east").unwrap().headless);
}
