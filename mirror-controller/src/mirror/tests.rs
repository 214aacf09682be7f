use super::*;
use crate::plan::tests::plan;

fn remote() -> Service {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "42",
            "labels": {"app": "web", "mirror.strait.dev/exported": "true", "secret.io/x": "1"},
            "annotations": {"keep": "1", "drop-me": "1", "service.kubernetes.io/topology-mode": "Auto"}},
        "spec": {"selector": {"app": "web"}, "clusterIP": "10.1.1.1",
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    }))
    .expect("svc")
}

#[test]
fn mirror_copies_what_it_should() {
    let m = service(&remote(), &plan(), Via::Gateway).expect("valid");
    assert_eq!(m.metadata.name.as_deref(), Some("web-east"));
    let l = m.metadata.labels.clone().unwrap_or_default();
    assert_eq!(l.get("app").map(String::as_str), Some("web"));
    assert!(!l.contains_key("mirror.strait.dev/exported"));
    assert!(!l.contains_key("secret.io/x"));
    assert_eq!(
        l.get(labels::MIRRORED_SERVICE).map(String::as_str),
        Some("true")
    );
    let a = m.metadata.annotations.clone().unwrap_or_default();
    assert!(a.contains_key("keep") && !a.contains_key("drop-me"));
    assert!(!a.contains_key("service.kubernetes.io/topology-mode"));
    assert_eq!(
        a.get(labels::REMOTE_SVC_FQ_NAME).map(String::as_str),
        Some("web.shop.svc.cluster.local")
    );
    let spec = m.spec.clone().unwrap_or_default();
    assert!(spec.selector.is_none());
    let ports = spec.ports.unwrap_or_default();
    assert_eq!(ports[0].port, 80);
    assert!(ports[0].target_port.is_none());
    assert!(is_ours(&m.metadata, "east") && !is_ours(&m.metadata, "west"));
}

#[test]
fn hash_tracks_changes() {
    let a = service(&remote(), &plan(), Via::Gateway).expect("valid");
    let b = service(&remote(), &plan(), Via::Gateway).expect("valid");
    assert!(up_to_date(&a.metadata, &b.metadata));
    let mut r = remote();
    r.metadata.resource_version = Some("43".into());
    let c = service(&r, &plan(), Via::Gateway).expect("valid");
    assert!(!up_to_date(&a.metadata, &c.metadata));
}

#[test]
fn slice_follows_gateway_and_readiness() {
    let m = service(&remote(), &plan(), Via::Gateway).expect("valid");
    let gw = GatewayView {
        addrs: vec!["10.0.0.1".parse().expect("ip")],
        alive: true,
    };
    let s = slice(&m, &plan(), &gw, true);
    assert_eq!(s.endpoints.len(), 1);
    assert_eq!(
        s.endpoints[0].conditions.as_ref().and_then(|c| c.ready),
        Some(true)
    );
    assert_eq!(s.ports.as_ref().map(|p| p[0].port), Some(Some(4143)));
    let down = slice(
        &m,
        &plan(),
        &GatewayView {
            alive: false,
            ..gw.clone()
        },
        true,
    );
    assert_eq!(
        down.endpoints[0].conditions.as_ref().and_then(|c| c.ready),
        Some(false)
    );
    assert!(!up_to_date(&s.metadata, &down.metadata));
    let unready = slice(&m, &plan(), &gw, false);
    assert_eq!(
        unready.endpoints[0]
            .conditions
            .as_ref()
            .and_then(|c| c.ready),
        Some(false)
    );
}

#[test]
fn invalid_services() {
    let mut r = remote();
    if let Some(s) = r.spec.as_mut() {
        s.cluster_ip = Some("None".into());
    }
    assert!(service(&r, &plan(), Via::Gateway).is_ok());
    assert_eq!(
        service(&r, &plan(), Via::RemoteDiscovery),
        Err(InvalidService::HeadlessRemoteDiscovery)
    );
    let off = crate::plan::Plan {
        mirror_headless: false,
        ..plan()
    };
    assert_eq!(
        service(&r, &off, Via::Gateway),
        Err(InvalidService::HeadlessOff)
    );
    let mut r = remote();
    if let Some(s) = r.spec.as_mut() {
        s.ports = None;
    }
    assert_eq!(
        service(&r, &plan(), Via::Gateway),
        Err(InvalidService::NoPorts)
    );
}

fn rd_slice(eps: &[(&str, Option<&str>)], ports: &[(&str, i32)], ipv6: bool) -> Arc<RdSlice> {
    Arc::new(RdSlice {
        service: "web".into(),
        ipv6,
        ports: ports
            .iter()
            .map(|(n, p)| SlicePort {
                name: Some((*n).into()),
                port: *p,
                protocol: Some("TCP".into()),
                app_protocol: None,
            })
            .collect(),
        endpoints: eps
            .iter()
            .map(|(a, pod)| crate::remote::ReadyEndpoint {
                addr: a.parse().expect("ip"),
                pod: pod.map(Box::from),
            })
            .collect(),
    })
}

fn pods(name: &str) -> Option<PodMeta> {
    match name {
        "web-1" | "web-2" => Some(PodMeta {
            service_account: "web".into(),
            meshed: true,
        }),
        "admin-1" => Some(PodMeta {
            service_account: "admin".into(),
            meshed: true,
        }),
        "plain-1" => Some(PodMeta {
            service_account: "web".into(),
            meshed: false,
        }),
        "bad-sa" => Some(PodMeta {
            service_account: "Bad_SA".into(),
            meshed: true,
        }),
        _ => None,
    }
}

const WEB_ID: &str = "web.shop.serviceaccount.identity.strait.cluster.local";

#[test]
fn remote_discovery_mirror_names_no_gateway() {
    let m = service(&remote(), &plan(), Via::RemoteDiscovery).expect("valid");
    let l = m.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        l.get(labels::REMOTE_DISCOVERY).map(String::as_str),
        Some("east")
    );
    assert!(is_ours(&m.metadata, "east"));
    let a = m.metadata.annotations.clone().unwrap_or_default();
    assert!(!a.contains_key(labels::REMOTE_GATEWAY_IDENTITY));
    assert_eq!(
        a.get(labels::REMOTE_SVC_FQ_NAME).map(String::as_str),
        Some("web.shop.svc.cluster.local")
    );
    let g = service(&remote(), &plan(), Via::Gateway).expect("valid");
    assert!(
        !up_to_date(&m.metadata, &g.metadata),
        "switching ways rewrites it"
    );
    assert!(
        !g.metadata
            .labels
            .unwrap_or_default()
            .contains_key(labels::REMOTE_DISCOVERY)
    );
}

#[test]
fn remote_endpoints_group_by_identity() {
    let http = [("http", 8080)];
    let remote = [
        rd_slice(
            &[
                ("198.18.64.3", Some("web-2")),
                ("198.18.64.2", Some("web-1")),
                ("198.18.64.4", Some("plain-1")),
                ("198.18.64.5", Some("admin-1")),
                ("198.18.64.6", None),
                ("198.18.64.7", Some("unknown")),
                ("198.18.64.8", Some("bad-sa")),
            ],
            &http,
            false,
        ),
        // Another slice of the same Service, same pod again: one address.
        rd_slice(&[("198.18.64.2", Some("web-1"))], &http, false),
    ];
    let groups = rd_groups(&remote, "shop", &plan(), pods);
    let by_id: BTreeMap<Option<&str>, Vec<String>> = groups
        .iter()
        .map(|g| {
            (
                g.identity.as_deref(),
                g.addrs.iter().map(|a| a.to_string()).collect(),
            )
        })
        .collect();
    assert_eq!(by_id.len(), 3, "{groups:?}");
    assert_eq!(by_id[&Some(WEB_ID)], vec!["198.18.64.2", "198.18.64.3"]);
    assert_eq!(
        by_id[&Some("admin.shop.serviceaccount.identity.strait.cluster.local")],
        vec!["198.18.64.5"]
    );
    // Unmeshed pods and endpoints without a pod: no identity. Unknown pods and service
    // accounts that are no identity: left out.
    assert_eq!(by_id[&None], vec!["198.18.64.4", "198.18.64.6"]);
    // Deterministic: the same input gives the same groups in the same order.
    assert_eq!(groups, rd_groups(&remote, "shop", &plan(), pods));
    // Other ports (or another family) make another group.
    let more = [
        rd_slice(&[("198.18.64.2", Some("web-1"))], &http, false),
        rd_slice(&[("198.18.64.9", Some("web-2"))], &[("http", 9090)], false),
    ];
    assert_eq!(rd_groups(&more, "shop", &plan(), pods).len(), 2);
}

#[test]
fn remote_discovery_slices() {
    let m = service(&remote(), &plan(), Via::RemoteDiscovery).expect("valid");
    let remote = [rd_slice(
        &[
            ("198.18.64.2", Some("web-1")),
            ("198.18.64.4", Some("plain-1")),
        ],
        &[("http", 8080)],
        false,
    )];
    let groups = rd_groups(&remote, "shop", &plan(), pods);
    let slices = rd_slices(&m, &plan(), &groups);
    assert_eq!(slices.len(), 2);
    for es in &slices {
        let name = es.metadata.name.clone().unwrap_or_default();
        assert!(name.starts_with("web-east-") && name.len() == "web-east-".len() + 10);
        let l = es.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            l.get(SERVICE_NAME_LABEL).map(String::as_str),
            Some("web-east")
        );
        assert!(is_ours(&es.metadata, "east"));
        assert_eq!(es.address_type, "IPv4");
        assert_eq!(es.ports.as_ref().and_then(|p| p[0].port), Some(8080));
        assert_eq!(
            es.ports.as_ref().and_then(|p| p[0].name.clone()).as_deref(),
            Some("http")
        );
        assert!(
            es.endpoints
                .iter()
                .all(|e| { e.conditions.as_ref().and_then(|c| c.ready) == Some(true) })
        );
        let a = es.metadata.annotations.clone().unwrap_or_default();
        assert!(!a.contains_key(labels::REMOTE_GATEWAY_IDENTITY));
    }
    let id = |es: &EndpointSlice| {
        es.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(labels::REMOTE_IDENTITY).cloned())
    };
    let meshed = slices.iter().find(|es| id(es).is_some()).expect("meshed");
    assert_eq!(id(meshed).as_deref(), Some(WEB_ID));
    assert_eq!(meshed.endpoints[0].addresses, vec!["198.18.64.2"]);
    let plain = slices.iter().find(|es| id(es).is_none()).expect("plain");
    assert_eq!(plain.endpoints[0].addresses, vec!["198.18.64.4"]);
    assert_ne!(meshed.metadata.name, plain.metadata.name);
    // A slice's name follows its identity, family and ports, not its addresses.
    let fewer = rd_slices(
        &m,
        &plan(),
        &rd_groups(&remote[..], "shop", &plan(), |n| {
            (n == "web-1").then(|| pods(n)).flatten()
        }),
    );
    assert_eq!(fewer.len(), 1);
    assert_eq!(fewer[0].metadata.name, meshed.metadata.name);
    assert!(!up_to_date(&fewer[0].metadata, &plain.metadata));
    // Past the API's limit, more slices for the same group.
    let many: Vec<IpAddr> = (0..2500u32)
        .map(|i| IpAddr::from([198, 18, (i / 250) as u8, (i % 250) as u8 + 1]))
        .collect();
    let big = RdGroup {
        identity: Some(WEB_ID.into()),
        ipv6: false,
        ports: remote[0].ports.clone(),
        addrs: many,
    };
    let split = rd_slices(&m, &plan(), &[big]);
    assert_eq!(
        split.iter().map(|s| s.endpoints.len()).collect::<Vec<_>>(),
        vec![1000, 1000, 500]
    );
    let names: BTreeSet<_> = split.iter().map(|s| s.metadata.name.clone()).collect();
    assert_eq!(names.len(), 3);
    assert_eq!(split[0].metadata.name, meshed.metadata.name);
}
