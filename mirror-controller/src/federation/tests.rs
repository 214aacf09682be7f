//! What a federation decides, from members written by hand.

#![allow(clippy::unwrap_used)]
use super::*;

fn port(name: &str, port: i32) -> FedPort {
    FedPort {
        name: Some(name.into()),
        port,
        protocol: "TCP".into(),
        app_protocol: None,
    }
}

fn member(created: i64, ports: &[(&str, i32)]) -> MemberInfo {
    MemberInfo {
        ports: ports.iter().map(|(n, p)| port(n, *p)).collect(),
        created: Some(created),
        headless: false,
        labels: BTreeMap::from([("app".into(), format!("web-{created}"))]),
        annotations: BTreeMap::new(),
    }
}

fn key() -> FedKey {
    ("shop".into(), "web".into())
}

fn report(cluster: &str, m: Option<MemberInfo>) -> Report {
    Report {
        cluster: cluster.into(),
        selector: Some("mirror.strait.dev/federated=member".into()),
        members: m.into_iter().map(|m| (key(), m)).collect(),
    }
}

fn cluster(c: &str) -> Source {
    Source::Cluster(c.into())
}

/// (what, reports, the local member, the oldest, its ports)
type Case = (
    &'static str,
    Vec<Report>,
    Option<MemberInfo>,
    Source,
    &'static [(&'static str, i32)],
);

#[test]
fn the_oldest_member_gives_the_ports() {
    const HTTP: &[(&str, i32)] = &[("http", 80)];
    let http = HTTP;
    let cases: Vec<Case> = vec![
        (
            "one remote member",
            vec![report("east", Some(member(10, http)))],
            None,
            cluster("east"),
            HTTP,
        ),
        (
            "the local member is older",
            vec![report("east", Some(member(10, http)))],
            Some(member(5, &[("http", 81)])),
            Source::Local,
            &[("http", 81)],
        ),
        (
            "a younger member's ports do not count",
            vec![
                report("east", Some(member(10, http))),
                report("north", Some(member(20, &[("http", 8080)]))),
            ],
            None,
            cluster("east"),
            HTTP,
        ),
    ];
    for (what, reports, local, oldest, ports) in cases {
        let local: BTreeMap<FedKey, MemberInfo> = local.into_iter().map(|m| (key(), m)).collect();
        let d = decide(&reports, &local);
        let f = d
            .get(&key())
            .unwrap_or_else(|| panic!("{what}: a federation"));
        assert_eq!(f.oldest, oldest, "{what}");
        let want: Vec<FedPort> = ports.iter().map(|(n, p)| port(n, *p)).collect();
        assert_eq!(f.ports, want, "{what}");
    }
}

#[test]
fn members_are_accepted_or_refused_with_a_reason() {
    let reports = vec![
        report("east", Some(member(10, &[("http", 80)]))),
        report("north", Some(member(20, &[("http", 8080)]))),
        report("south", Some(member(30, &[("http", 80)]))),
        report("west2", None),
    ];
    let mut headless = member(1, &[("http", 80)]);
    headless.headless = true;
    let local = BTreeMap::from([(key(), headless)]);
    let d = decide(&reports, &local);
    let f = &d[&key()];
    // The headless local member is older but gives nothing: it is refused.
    assert_eq!(f.oldest, cluster("east"));
    assert_eq!(
        f.accepted,
        BTreeSet::from([cluster("east"), cluster("south")])
    );
    assert!(f.refused[&Source::Local].contains("headless"));
    let why = &f.refused[&cluster("north")];
    assert!(
        why.contains("[http:8080/TCP]") && why.contains("[http:80/TCP]") && why.contains("east"),
        "{why}"
    );
    assert_eq!(verdict(&d, &key(), "east"), Verdict::Accepted);
    assert!(matches!(verdict(&d, &key(), "north"), Verdict::Refused(_)));
    // A Link with no member here, and a federation nobody reported.
    assert_eq!(verdict(&d, &key(), "west2"), Verdict::Pending);
    assert_eq!(
        verdict(&d, &("shop".into(), "api".into()), "east"),
        Verdict::Pending
    );
}

#[test]
fn equal_ages_are_ordered_local_first_then_by_cluster() {
    let reports = vec![
        report("north", Some(member(10, &[("http", 81)]))),
        report("east", Some(member(10, &[("http", 80)]))),
    ];
    let d = decide(&reports, &BTreeMap::new());
    assert_eq!(d[&key()].oldest, cluster("east"));
    let local = BTreeMap::from([(key(), member(10, &[("http", 82)]))]);
    let d = decide(&reports, &local);
    assert_eq!(d[&key()].oldest, Source::Local);
    assert_eq!(d[&key()].accepted, BTreeSet::from([Source::Local]));
}

#[test]
fn the_federated_service_lists_its_members_and_is_ours() {
    let reports = vec![report("east", Some(member(10, &[("http", 80)])))];
    let local = BTreeMap::from([(key(), member(20, &[("http", 80)]))]);
    let d = decide(&reports, &local);
    let svc = service(&key(), &d[&key()]).unwrap();
    assert_eq!(svc.metadata.name.as_deref(), Some("web-federated"));
    let l = svc.metadata.labels.as_ref().unwrap();
    assert_eq!(l[labels::MIRRORED_SERVICE], "true");
    assert_eq!(l[labels::CLUSTER_NAME], labels::FEDERATED_OWNER);
    assert_eq!(l[labels::FEDERATED_SERVICE], "true");
    // Metadata from the oldest member.
    assert_eq!(l["app"], "web-10");
    let a = svc.metadata.annotations.as_ref().unwrap();
    assert_eq!(a[labels::FEDERATED_MEMBERS], "local,east");
    assert_eq!(a[labels::FEDERATED_LOCAL_MEMBER], "web");
    assert!(a.contains_key(crate::mirror::SPEC_HASH));
    let spec = svc.spec.unwrap();
    assert_eq!(spec.cluster_ip, None);
    let ports = spec.ports.unwrap();
    assert_eq!(
        (ports[0].name.as_deref(), ports[0].port),
        (Some("http"), 80)
    );

    // Only refused members: no Service, but the refusals stay for the status.
    let mut h = member(1, &[("http", 80)]);
    h.headless = true;
    let d = decide(&[report("east", Some(h))], &BTreeMap::new());
    assert!(service(&key(), &d[&key()]).is_none());
    assert!(matches!(verdict(&d, &key(), "east"), Verdict::Refused(_)));
}

#[test]
fn strait_labels_and_last_applied_are_not_copied_from_a_local_member() {
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "shop", "creationTimestamp": "2026-12-01T00:00:00Z",
            "labels": {"app": "web", labels::FEDERATED: "member"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "team": "a"}},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }))
    .unwrap();
    let m = MemberInfo::of_local(&svc);
    assert_eq!(m.labels, BTreeMap::from([("app".into(), "web".into())]));
    assert_eq!(m.annotations, BTreeMap::from([("team".into(), "a".into())]));
    assert_eq!(m.ports, vec![port("http", 80)]);
    assert!(m.created.is_some());
}

#[tokio::test]
async fn the_hub_holds_deletes_until_every_worker_reported() {
    let hub = Hub::default();
    hub.expect("east");
    hub.expect("north");
    let (reports, complete) = hub.snapshot();
    assert!(reports.is_empty() && !complete);
    hub.report("east", report("east", None));
    assert!(!hub.snapshot().1);
    hub.report("north", report("north", None));
    assert!(hub.snapshot().1);
    // A Link that goes takes its members with it.
    hub.report("north", report("north", Some(member(1, &[("http", 80)]))));
    assert_eq!(decide(&hub.snapshot().0, &BTreeMap::new()).len(), 1);
    hub.forget("north");
    assert!(decide(&hub.snapshot().0, &BTreeMap::new()).is_empty());
}
