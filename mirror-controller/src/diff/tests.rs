//! The diff with plain values: a remote view and local stores filled by hand, no cluster.

#![allow(clippy::unwrap_used)]
use super::*;
use crate::store::Meta;
use strait_k8s_api::relist::Store;

const EAST: &str = "east";

pub(super) fn plan(extra: serde_json::Value) -> Plan {
    let mut spec = serde_json::json!({
        "targetClusterName": EAST,
        "clusterCredentialsSecret": "c",
        "gatewayAddress": "198.18.0.10",
        "gatewayPort": 4143,
        "gatewayIdentity": "strait-gateway.strait-multicluster.serviceaccount.identity.strait.cluster.local",
        "selector": {"matchLabels": {"mirror.strait.dev/exported": "true"}},
        "remoteDiscoverySelector": {"matchLabels": {"mirror.strait.dev/exported": "remote-discovery"}},
        "excludedLabels": ["secret.io/*"],
        "excludedAnnotations": ["drop-me"],
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    Plan::new(&serde_json::from_value(spec).unwrap()).unwrap()
}

/// A remote Service `ns/name` at resourceVersion `rv`, with `spec` (ports 80 by default).
pub(super) fn remote(
    plan: &Plan,
    ns: &str,
    name: &str,
    rv: &str,
    spec: serde_json::Value,
) -> Arc<RemoteSvc> {
    let mut s = serde_json::json!({"ports": [{"name": "http", "port": 80}]});
    if let (Some(s), Some(e)) = (s.as_object_mut(), spec.as_object()) {
        s.extend(e.clone());
    }
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": ns, "resourceVersion": rv,
            "labels": {"app": name, "secret.io/token": "x"},
            "annotations": {"keep": "1", "drop-me": "1"}},
        "spec": s,
    }))
    .unwrap();
    Arc::new(RemoteSvc::compact(&svc, plan).unwrap())
}

pub(super) fn key(ns: &str, name: &str) -> Key {
    (ns.to_string(), name.to_string())
}

pub(super) fn ours(hash: &str) -> Meta {
    Meta {
        uid: Some(format!("uid-{hash}")),
        cluster: Some(EAST.into()),
        hash: Some(hash.into()),
        cluster_ip: None,
        headless: false,
    }
}

/// The keys of what a pass counts mirrored.
pub(super) fn mirrored(d: &Diff) -> Vec<Key> {
    d.mirrored.iter().map(|m| m.key.clone()).collect()
}

/// The remote view and the local stores of one test.
pub(super) struct World {
    pub plan: Plan,
    pub view: RemoteView,
    pub services: Compact,
    pub slices: Compact,
    pub namespaces: Compact,
    pub gateway: GatewayView,
    pub decision: Decision,
}

impl World {
    pub fn new(plan: Plan) -> Self {
        Self {
            plan,
            view: RemoteView::listed(true),
            services: Compact::default(),
            slices: Compact::default(),
            namespaces: [("shop", Meta::default())]
                .into_iter()
                .map(|(n, m)| (key("", n), m))
                .collect(),
            gateway: GatewayView {
                addrs: vec!["198.18.0.10".parse().unwrap()],
                alive: true,
            },
            decision: Decision::new(),
        }
    }

    /// Selected by the Link's `selector` (in the store its watch feeds).
    pub fn select(&self, s: &Arc<RemoteSvc>) {
        self.view.services.clone().upsert(s.key(), s.clone());
    }

    /// Kept by the all-Services watch, exported by a `ServiceExport` or not.
    pub fn kept_for_export(&self, s: &Arc<RemoteSvc>, exported: bool) {
        self.view.exported.clone().upsert(s.key(), s.clone());
        if exported {
            self.view.exports.clone().upsert(s.key(), ());
        }
    }

    pub fn remote_discovery(&self, s: &Arc<RemoteSvc>) {
        self.view.rd_services.clone().upsert(s.key(), s.clone());
    }

    pub fn local(&self) -> Local<'_> {
        Local {
            services: &self.services,
            slices: &self.slices,
            namespaces: &self.namespaces,
        }
    }

    pub fn diff(&self, memory: &mut Memory, now: Instant) -> Diff {
        memory
            .diff(
                &self.plan,
                &self.view,
                self.local(),
                &self.gateway,
                &self.decision,
                now,
            )
            .expect("a complete view")
    }

    /// What the API server would hold after `ops` succeeded: the local stores updated as
    /// the reflectors would show them.
    pub fn apply(&self, ops: &[Op]) {
        for op in ops {
            match op {
                Op::Mirror {
                    key,
                    remote,
                    shape,
                    remote_ready,
                    ..
                } => {
                    let parent = derive(remote, &self.plan, Via::Gateway);
                    let svc = match shape {
                        Shape::Pod { hostname } => mirror::headless::pod_service(
                            &parent,
                            hostname,
                            key.1.clone(),
                            &self.plan,
                        ),
                        _ => parent,
                    };
                    let es = match shape {
                        Shape::Headless(eps) => {
                            mirror::headless::headless_slice(&svc, &self.plan, eps)
                        }
                        _ => mirror::slice(&svc, &self.plan, &self.gateway, *remote_ready),
                    };
                    // A Service created gets a cluster IP, 198.19.0.<n>, in creation order;
                    // a headless one none.
                    let ip = match self.services.get(&key.0, &key.1) {
                        Some(m) => m.cluster_ip,
                        None => format!("198.19.0.{}", self.services.len() + 1).parse().ok(),
                    };
                    let headless = mirror::is_headless(&svc);
                    self.services.clone().upsert(
                        key.clone(),
                        Meta {
                            cluster_ip: ip.filter(|_| !headless),
                            headless,
                            ..ours(&mirror::spec_hash(&svc.metadata))
                        },
                    );
                    self.slices
                        .clone()
                        .upsert(key.clone(), ours(&mirror::spec_hash(&es.metadata)));
                }
                Op::RdMirror {
                    key,
                    remote,
                    groups,
                    ..
                } => {
                    let svc = derive(remote, &self.plan, Via::RemoteDiscovery);
                    self.services
                        .clone()
                        .upsert(key.clone(), ours(&mirror::spec_hash(&svc.metadata)));
                    for es in mirror::rd_slices(&svc, &self.plan, groups) {
                        let k = key_of(&es.metadata);
                        self.slices
                            .clone()
                            .upsert(k, ours(&mirror::spec_hash(&es.metadata)));
                    }
                }
                Op::FederatedSlices {
                    remote,
                    remote_ready,
                    remote_discovery,
                    ..
                } => {
                    let slices = match remote_discovery {
                        Some(groups) => mirror::federated_rd_slices(remote, &self.plan, groups),
                        None => vec![mirror::federated_slice(
                            remote,
                            &self.plan,
                            &self.gateway,
                            *remote_ready,
                        )],
                    };
                    for es in slices {
                        self.slices
                            .clone()
                            .upsert(key_of(&es.metadata), ours(&mirror::spec_hash(&es.metadata)));
                    }
                }
                Op::DeleteService(k, _) => self.services.clone().remove(k),
                Op::DeleteSlice(k, _) => self.slices.clone().remove(k),
                Op::CreateNamespace(ns) => {
                    self.namespaces.clone().upsert(key("", ns), Meta::default())
                }
            }
        }
    }
}

/// A remote slice of Service `svc`, ready or not, with endpoints of these (hostname, ready).
pub(super) fn summary_of(
    svc: &str,
    ready: bool,
    hosts: &[(&str, bool)],
) -> Arc<crate::remote::SliceSummary> {
    Arc::new(crate::remote::SliceSummary {
        service: svc.into(),
        ready: ready || hosts.iter().any(|(_, r)| *r),
        hostnames: hosts.iter().map(|(h, r)| (Box::from(*h), *r)).collect(),
    })
}

fn key_of(m: &kube::api::ObjectMeta) -> Key {
    key(
        m.namespace.as_deref().unwrap_or_default(),
        m.name.as_deref().unwrap_or_default(),
    )
}

/// A one-line summary of an op, for table asserts.
pub(super) fn summary(op: &Op) -> String {
    match op {
        Op::Mirror {
            key,
            shape,
            write_svc,
            claim_svc,
            write_slice,
            claim_slice,
            ..
        } => {
            let (kind, eps) = match shape {
                Shape::Plain => ("mirror", String::new()),
                Shape::Headless(e) => ("headless", format!(" eps={}", e.len())),
                Shape::Pod { .. } => ("pod", String::new()),
            };
            format!(
                "{kind} {}/{} svc={write_svc}/{claim_svc} slice={write_slice}/{claim_slice}{eps}",
                key.0, key.1
            )
        }
        Op::RdMirror {
            key,
            write_svc,
            slices,
            ..
        } => {
            format!(
                "rd {}/{} svc={write_svc} slices={}",
                key.0,
                key.1,
                slices.len()
            )
        }
        Op::FederatedSlices {
            key,
            remote_discovery,
            slices,
            ..
        } => {
            let mode = if remote_discovery.is_some() {
                "rd"
            } else {
                "gateway"
            };
            let names: Vec<String> = slices
                .iter()
                .map(|(n, new)| format!("{n}{}", if *new { "+" } else { "" }))
                .collect();
            format!("federated {mode} {}/{} {}", key.0, key.1, names.join(","))
        }
        Op::DeleteService(k, uid) => format!("delete svc {}/{} {uid:?}", k.0, k.1),
        Op::DeleteSlice(k, uid) => format!("delete slice {}/{} {uid:?}", k.0, k.1),
        Op::CreateNamespace(ns) => format!("create ns {ns}"),
    }
}

pub(super) fn summaries(d: &Diff) -> Vec<String> {
    d.ops.iter().map(summary).collect()
}

#[test]
fn a_new_export_is_created_then_costs_nothing() {
    let w = World::new(plan(serde_json::json!({})));
    let mut m = Memory::default();
    let now = Instant::now();
    w.select(&remote(&w.plan, "shop", "web", "1", serde_json::json!({})));
    let d = w.diff(&mut m, now);
    assert_eq!(
        summaries(&d),
        ["mirror shop/web-east svc=true/true slice=true/true"]
    );
    assert_eq!(mirrored(&d), [key("shop", "web-east")]);
    assert!(d.not_mirrored.is_empty());
    w.apply(&d.ops);
    // Level-triggered: the store shows what was written, so nothing is written again.
    let d = w.diff(&mut m, now);
    assert!(d.ops.is_empty(), "{:?}", summaries(&d));
    assert_eq!(mirrored(&d), [key("shop", "web-east")]);
    // A new remote version is an update of the Service alone (the slice does not carry
    // it), and the name is ours now: no claim.
    w.select(&remote(&w.plan, "shop", "web", "2", serde_json::json!({})));
    let d = w.diff(&mut m, now);
    assert_eq!(
        summaries(&d),
        ["mirror shop/web-east svc=true/false slice=false/false"]
    );
}

#[test]
fn a_write_is_trusted_for_the_grace_while_the_store_lags() {
    let w = World::new(plan(serde_json::json!({})));
    let mut m = Memory::default();
    let now = Instant::now();
    let web = remote(&w.plan, "shop", "web", "1", serde_json::json!({}));
    w.select(&web);
    let d = w.diff(&mut m, now);
    assert_eq!(d.ops.len(), 1);
    let svc = derive(&web, &w.plan, Via::Gateway);
    let es = mirror::slice(&svc, &w.plan, &w.gateway, false);
    m.wrote(
        true,
        key("shop", "web-east"),
        mirror::spec_hash(&svc.metadata),
        now,
    );
    m.wrote(
        false,
        key("shop", "web-east"),
        mirror::spec_hash(&es.metadata),
        now,
    );
    assert!(w.diff(&mut m, now + WRITE_GRACE / 2).ops.is_empty());
    // The store never showed it: after the grace it is written again.
    let later = now + WRITE_GRACE * 2;
    m.expire(later);
    assert_eq!(w.diff(&mut m, later).ops.len(), 1);
}

#[test]
fn the_gateway_and_remote_readiness_change_only_the_slice() {
    let mut w = World::new(plan(serde_json::json!({})));
    let mut m = Memory::default();
    let now = Instant::now();
    let web = remote(&w.plan, "shop", "web", "1", serde_json::json!({}));
    w.select(&web);
    w.apply(&w.diff(&mut m, now).ops);
    for change in ["remote ready", "gateway down", "gateway moved"] {
        match change {
            "remote ready" => w
                .view
                .slices
                .clone()
                .upsert(key("shop", "web-abc"), summary_of("web", true, &[])),
            "gateway down" => w.gateway.alive = false,
            _ => w.gateway.addrs = vec!["198.18.0.11".parse().unwrap()],
        }
        let d = w.diff(&mut m, now);
        assert_eq!(
            summaries(&d),
            ["mirror shop/web-east svc=false/false slice=true/false"],
            "{change}"
        );
        w.apply(&d.ops);
    }
}

#[test]
fn exclusions_never_reach_the_mirror() {
    let w = World::new(plan(serde_json::json!({})));
    let mut m = Memory::default();
    let web = remote(&w.plan, "shop", "web", "1", serde_json::json!({}));
    w.select(&web);
    let d = w.diff(&mut m, Instant::now());
    let Some(Op::Mirror { remote, .. }) = d.ops.first() else {
        panic!("{:?}", summaries(&d));
    };
    let svc = derive(remote, &w.plan, Via::Gateway);
    let labels = svc.metadata.labels.unwrap();
    let annotations = svc.metadata.annotations.unwrap();
    assert_eq!(labels.get("app").map(String::as_str), Some("web"));
    assert!(!labels.contains_key("secret.io/token"), "prefix exclusion");
    assert_eq!(annotations.get("keep").map(String::as_str), Some("1"));
    assert!(!annotations.contains_key("drop-me"), "exact exclusion");
}

#[test]
fn invalid_services_are_refused_with_their_reason() {
    let long = "a".repeat(60);
    let table = [
        (
            "headless",
            serde_json::json!({"clusterIP": "None"}),
            "mirrored only while its endpoints have hostnames",
        ),
        (
            "dns",
            serde_json::json!({"type": "ExternalName"}),
            "type ExternalName cannot be mirrored",
        ),
        (
            "portless",
            serde_json::json!({"ports": []}),
            "the Service has no ports",
        ),
        (
            long.as_str(),
            serde_json::json!({}),
            "is longer than 63 characters",
        ),
    ];
    for (name, spec, why) in table {
        let w = World::new(plan(serde_json::json!({})));
        let mut m = Memory::default();
        w.select(&remote(&w.plan, "shop", name, "1", spec));
        let d = w.diff(&mut m, Instant::now());
        assert!(d.ops.is_empty(), "{name}: {:?}", summaries(&d));
        assert!(d.mirrored.is_empty(), "{name}");
        let [n] = d.not_mirrored.as_slice() else {
            panic!("{name}: {:?}", d.not_mirrored);
        };
        assert_eq!((n.namespace.as_str(), n.name.as_str()), ("shop", name));
        assert_eq!(n.reason, Reason::InvalidService, "{name}");
        assert!(n.message.contains(why), "{name}: {}", n.message);
    }
}

#[test]
fn remote_discovery_wins_then_selector_then_export() {
    // (in the selector's store, kept for export, has a ServiceExport, in the remote-
    // discovery store) -> what the pass does
    let table = [
        ((true, false, false, false), Some("mirror")),
        ((false, true, true, false), Some("mirror")),
        ((false, true, false, false), None),
        ((true, true, true, false), Some("mirror")),
        ((false, false, false, true), Some("rd")),
        ((true, false, false, true), Some("rd")),
        ((true, true, true, true), Some("rd")),
    ];
    for ((selected, kept, exported, rd), want) in table {
        let w = World::new(plan(serde_json::json!({})));
        let mut m = Memory::default();
        let web = remote(&w.plan, "shop", "web", "1", serde_json::json!({}));
        if selected {
            w.select(&web);
        }
        if kept {
            w.kept_for_export(&web, exported);
        }
        if rd {
            w.remote_discovery(&web);
        }
        let d = w.diff(&mut m, Instant::now());
        let got: Vec<String> = summaries(&d)
            .iter()
            .map(|s| s.split(' ').next().unwrap_or_default().to_string())
            .collect();
        let case = format!("selected={selected} kept={kept} exported={exported} rd={rd}");
        assert_eq!(got, want.into_iter().collect::<Vec<_>>(), "{case}");
        // Whichever way in, one mirror.
        assert_eq!(d.mirrored.len(), usize::from(want.is_some()), "{case}");
    }
}

#[test]
fn a_remote_discovery_mirror_lists_the_remote_pods_per_identity() {
    let w = World::new(plan(serde_json::json!({})));
    let mut m = Memory::default();
    let now = Instant::now();
    let web = remote(&w.plan, "shop", "web", "1", serde_json::json!({}));
    w.remote_discovery(&web);
    let es: k8s_openapi::api::discovery::v1::EndpointSlice = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web-abc", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [
            {"addresses": ["198.18.64.2"], "targetRef": {"kind": "Pod", "name": "web-1"}},
            {"addresses": ["198.18.64.3"]},
        ],
    }))
    .unwrap();
    w.view.rd_slices.clone().upsert(
        key("shop", "web-abc"),
        Arc::new(crate::remote::RdSlice::of(&es).unwrap()),
    );
    w.view.pods.clone().upsert(
        key("shop", "web-1"),
        crate::remote::PodMeta {
            service_account: "web".into(),
            meshed: true,
        },
    );
    let d = w.diff(&mut m, now);
    // One slice for the meshed pod's identity, one for the endpoint without a pod.
    assert_eq!(summaries(&d), ["rd shop/web-east svc=true slices=2"]);
    w.apply(&d.ops);
    assert!(w.diff(&mut m, now).ops.is_empty());
    // The pod went: its slice is an orphan of ours.
    w.view.pods.clone().remove(&key("shop", "web-1"));
    let d = w.diff(&mut m, now);
    let s = summaries(&d);
    assert_eq!(s.len(), 1, "{s:?}");
    assert!(s[0].starts_with("delete slice shop/web-east-"), "{s:?}");
}

#[test]
fn a_name_taken_by_someone_else_is_left_alone_and_checked_again() {
    let foreign = |cluster: Option<&str>| Meta {
        uid: Some("theirs".into()),
        cluster: cluster.map(String::from),
        ..Meta::default()
    };
    // (whose object holds the name, which kind) -> the message
    let table = [
        (
            foreign(None),
            true,
            "conflict: Service shop/web-east exists and is not ours",
        ),
        (
            foreign(Some("west")),
            true,
            "conflict: Service shop/web-east exists and is not ours",
        ),
        (
            foreign(None),
            false,
            "conflict: EndpointSlice shop/web-east exists and is not ours",
        ),
    ];
    for (meta, is_svc, msg) in table {
        let w = World::new(plan(serde_json::json!({})));
        let mut m = Memory::default();
        let now = Instant::now();
        w.select(&remote(&w.plan, "shop", "web", "1", serde_json::json!({})));
        let store = if is_svc { &w.services } else { &w.slices };
        store.clone().upsert(key("shop", "web-east"), meta.clone());
        let d = w.diff(&mut m, now);
        assert!(
            d.ops.is_empty(),
            "{msg}: never written, never deleted: {:?}",
            summaries(&d)
        );
        assert_eq!(d.new_conflicts, 1, "{msg}");
        assert!(d.mirrored.is_empty());
        let [n] = d.not_mirrored.as_slice() else {
            panic!("{msg}")
        };
        assert_eq!((n.reason, n.name.as_str()), (Reason::Error, "web"));
        assert!(n.message.starts_with(msg), "{}", n.message);
        // Still taken: reported again, counted once.
        let d = w.diff(&mut m, now);
        assert_eq!((d.new_conflicts, d.not_mirrored.len()), (0, 1), "{msg}");
        // Freed: left alone until the recheck, then written (claimed first).
        store.clone().remove(&key("shop", "web-east"));
        let d = w.diff(&mut m, now + CONFLICT_RECHECK / 2);
        assert!(d.ops.is_empty() && d.not_mirrored.len() == 1, "{msg}");
        let d = w.diff(&mut m, now + CONFLICT_RECHECK * 2);
        assert_eq!(d.ops.len(), 1, "{msg}: {:?}", summaries(&d));
        assert!(summary(&d.ops[0]).contains("/true"), "{msg}: claimed");
    }
}

#[test]
fn a_missing_namespace_is_reported_or_created() {
    // (createNamespaces) -> ops
    for create in [false, true] {
        let w = World::new(plan(serde_json::json!({"createNamespaces": create})));
        let mut m = Memory::default();
        let now = Instant::now();
        w.select(&remote(
            &w.plan,
            "billing",
            "api",
            "1",
            serde_json::json!({}),
        ));
        w.select(&remote(&w.plan, "shop", "web", "1", serde_json::json!({})));
        let d = w.diff(&mut m, now);
        let mut want = vec!["mirror shop/web-east svc=true/true slice=true/true"];
        if create {
            want.insert(0, "create ns billing");
        }
        assert_eq!(summaries(&d), want, "createNamespaces={create}");
        let [n] = d.not_mirrored.as_slice() else {
            panic!()
        };
        assert_eq!(n.reason, Reason::MissingNamespace);
        assert_eq!(
            n.message,
            "namespace billing does not exist in this cluster"
        );
        w.apply(&d.ops);
        let d = w.diff(&mut m, now);
        assert_eq!(d.not_mirrored.is_empty(), create);
        assert_eq!(
            d.ops.len(),
            usize::from(create),
            "the mirror follows its namespace"
        );
    }
}

#[test]
fn orphans_are_collected_only_after_a_complete_list() {
    let mut w = World::new(plan(serde_json::json!({})));
    let mut m = Memory::default();
    let now = Instant::now();
    let gone = key("shop", "gone-east");
    w.services.clone().upsert(gone.clone(), ours("h"));
    w.slices.clone().upsert(gone.clone(), ours("h"));
    // Someone else's, and another Link's: never ours to delete.
    w.services
        .clone()
        .upsert(key("shop", "theirs"), Meta::default());
    let west = Meta {
        cluster: Some("west".into()),
        ..ours("h")
    };
    w.services.clone().upsert(key("shop", "gone-west"), west);
    w.view = RemoteView::listed(false);
    let view = &w.view;
    assert!(
        m.diff(&w.plan, view, w.local(), &w.gateway, &w.decision, now)
            .is_none(),
        "nothing is decided from a partial list"
    );
    w.view = RemoteView::listed(true);
    w.select(&remote(&w.plan, "shop", "web", "1", serde_json::json!({})));
    let d = w.diff(&mut m, now);
    assert_eq!(
        summaries(&d),
        [
            "mirror shop/web-east svc=true/true slice=true/true",
            "delete svc shop/gone-east Some(\"uid-h\")",
            "delete slice shop/gone-east Some(\"uid-h\")",
        ]
    );
}
