use super::*;
use crate::mirror;
use crate::plan::tests::plan;
use kube::runtime::watcher::Event;

fn full(name: &str, exported: bool) -> Service {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "shop", "resourceVersion": "42",
            "labels": {"app": "web", "mirror.strait.dev/exported": exported.to_string(), "secret.io/x": "1"},
            "annotations": {"keep": "1", "drop-me": "1",
                "service.kubernetes.io/topology-mode": "Auto",
                "kubectl.kubernetes.io/last-applied-configuration": "{}"},
            "managedFields": [{"manager": "m", "operation": "Update"}]},
        "spec": {"selector": {"app": "web"}, "clusterIP": "10.1.1.1", "clusterIPs": ["10.1.1.1"],
            "sessionAffinity": "None",
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "appProtocol": "http"},
                      {"port": 53, "protocol": "UDP"}]},
        "status": {"loadBalancer": {}},
    }))
    .expect("svc")
}

#[test]
fn compact_keeps_the_mirror_identical() {
    let plan = plan();
    let f = full("web", true);
    let c = RemoteSvc::of(&f, &plan).expect("selected");
    assert_eq!(c.labels.len(), 1, "only what the mirror copies");
    assert_eq!(c.annotations.len(), 1);
    assert_eq!(
        mirror::service(&f, &plan, mirror::Via::Gateway),
        mirror::service(&c.to_service(), &plan, mirror::Via::Gateway)
    );
    for edit in [
        |s: &mut ServiceSpec| s.cluster_ip = Some("None".into()),
        |s: &mut ServiceSpec| s.type_ = Some("ExternalName".into()),
        |s: &mut ServiceSpec| s.ports = None,
    ] {
        let mut f = full("web", true);
        edit(f.spec.as_mut().expect("spec"));
        let c = RemoteSvc::of(&f, &plan).expect("selected");
        assert_eq!(
            mirror::service(&f, &plan, mirror::Via::Gateway),
            mirror::service(&c.to_service(), &plan, mirror::Via::Gateway)
        );
    }
    assert!(RemoteSvc::of(&full("web", false), &plan).is_none());
}

#[test]
fn relist_replaces_and_unselected_drops() {
    let store = Services::default();
    let mut w = services_writer(store.clone(), Arc::new(plan()));
    w.apply(&Event::Init);
    w.apply(&Event::InitApply(full("a", true)));
    w.apply(&Event::InitApply(full("b", true)));
    w.apply(&Event::InitApply(full("c", false)));
    assert!(store.is_empty(), "not visible before InitDone");
    w.apply(&Event::InitDone);
    assert_eq!(store.len(), 2);
    w.apply(&Event::Apply(full("a", false)));
    assert_eq!(store.len(), 1);
    w.apply(&Event::Delete(full("b", true)));
    assert!(store.is_empty());
    w.apply(&Event::Apply(full("c", true)));
    assert_eq!(store.values()[0].key(), ("shop".into(), "c".into()));
    w.apply(&Event::Apply(full("c", true)));
    assert_eq!(store.len(), 1);
    w.apply(&Event::Init);
    w.apply(&Event::InitDone);
    assert!(store.is_empty());
}

fn export(name: &str) -> PartialObjectMeta<ServiceExport> {
    use kube::core::PartialObjectMetaExt;
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some("shop".into()),
        ..Default::default()
    }
    .into_response_partial()
}

#[test]
fn exported_keeps_only_services_with_an_export() {
    let exports = Exports::default();
    let mut ew = exports_writer(exports.clone());
    let store = Services::default();
    let mut w = exported_writer(store.clone(), Arc::new(plan()), exports.clone());
    ew.apply(&Event::Apply(export("a")));
    ew.apply(&Event::Apply(export("labelled")));
    assert!(exports.contains(&("shop".into(), "a".into())));
    w.apply(&Event::Init);
    w.apply(&Event::InitApply(full("a", false)));
    w.apply(&Event::InitApply(full("b", false)));
    // Also selected by labels: the label store keeps it, not this one.
    w.apply(&Event::InitApply(full("labelled", true)));
    w.apply(&Event::InitDone);
    assert_eq!(
        store.keys(),
        HashSet::from([("shop".to_string(), "a".to_string())])
    );
    // The mirror derived from an exported entry is the same as from a labelled one.
    let c = store.values()[0].clone();
    let mut labelled = full("a", true);
    labelled.metadata.labels = full("a", false).metadata.labels;
    assert_eq!(
        mirror::service(&c.to_service(), &plan(), mirror::Via::Gateway),
        mirror::service(&labelled, &plan(), mirror::Via::Gateway)
    );
    // An export that arrives after its Service's last event is seen only by a re-list.
    ew.apply(&Event::Apply(export("b")));
    assert!(!store.contains(&("shop".into(), "b".into())));
    w.apply(&Event::Init);
    w.apply(&Event::InitApply(full("a", false)));
    w.apply(&Event::InitApply(full("b", false)));
    w.apply(&Event::InitDone);
    assert_eq!(store.len(), 2);
    // Unexported: the next event drops it.
    ew.apply(&Event::Delete(export("a")));
    w.apply(&Event::Apply(full("a", false)));
    assert!(!store.contains(&("shop".into(), "a".into())));
}

#[test]
fn slices_keep_only_ready_services() {
    let slice = |name: &str, svc: Option<&str>, ready: Option<bool>| -> EndpointSlice {
        let labels = svc.map(|s| serde_json::json!({SERVICE_NAME_LABEL: s, "other": "x"}));
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "shop", "labels": labels},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": false}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": ready}},
            ],
        }))
        .expect("slice")
    };
    let store = Slices::default();
    let mut w = slices_writer(store.clone());
    w.apply(&Event::Init);
    w.apply(&Event::InitApply(slice("web-a", Some("web"), None)));
    w.apply(&Event::InitApply(slice("web-b", Some("web"), Some(false))));
    w.apply(&Event::InitApply(slice("db-a", Some("db"), Some(false))));
    w.apply(&Event::InitApply(slice("x", None, Some(true))));
    w.apply(&Event::InitDone);
    assert_eq!(
        ready(&store),
        HashSet::from([("shop".to_string(), "web".to_string())])
    );
    w.apply(&Event::Apply(slice("web-a", Some("web"), Some(false))));
    w.apply(&Event::Apply(slice("db-a", Some("db"), Some(true))));
    assert_eq!(
        ready(&store),
        HashSet::from([("shop".to_string(), "db".to_string())])
    );
    w.apply(&Event::Delete(slice("db-a", Some("db"), Some(true))));
    assert!(ready(&store).is_empty());
}

#[test]
fn slices_keep_hostnames_ready_or_not() {
    let slice = |name: &str, eps: serde_json::Value| -> EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "shop", "labels": {SERVICE_NAME_LABEL: "db"}},
            "addressType": "IPv4",
            "endpoints": eps,
        }))
        .expect("slice")
    };
    let store = Slices::default();
    let mut w = slices_writer(store.clone());
    w.apply(&Event::Init);
    w.apply(&Event::InitApply(slice(
        "db-a",
        serde_json::json!([
            {"addresses": ["10.0.0.1"], "hostname": "db-0"},
            {"addresses": ["10.0.0.2"], "hostname": "db-1", "conditions": {"ready": false}},
        ]),
    )));
    // Not ready and no hostname: nothing a mirror reads, so not kept.
    w.apply(&Event::InitApply(slice(
        "db-b",
        serde_json::json!([{"addresses": ["10.0.0.3"], "conditions": {"ready": false}}]),
    )));
    w.apply(&Event::InitDone);
    assert_eq!(store.len(), 1);
    let key = ("shop".to_string(), "db".to_string());
    let hosts = hostnames(&store);
    assert_eq!(
        hosts[&key],
        BTreeMap::from([("db-0".into(), true), ("db-1".into(), false)])
    );
    // A not-ready pod is still listed, so its mirror stays while it restarts.
    w.apply(&Event::Apply(slice(
        "db-a",
        serde_json::json!([
            {"addresses": ["10.0.0.1"], "hostname": "db-0", "conditions": {"ready": false}},
        ]),
    )));
    assert_eq!(
        hostnames(&store)[&key],
        BTreeMap::from([("db-0".into(), false)])
    );
    assert!(ready(&store).is_empty());
    w.apply(&Event::Delete(slice("db-a", serde_json::json!([]))));
    assert!(hostnames(&store).is_empty());
}

#[test]
fn remote_discovery_keeps_addresses_of_its_services_only() {
    let mut plan = plan();
    plan.remote_discovery = Some(kube::core::Selector::from_iter([(
        "mirror.strait.dev/exported".to_string(),
        "remote-discovery".to_string(),
    )]));
    let plan = Arc::new(plan);
    let rd = Services::default();
    let mut rw = remote_discovery_writer(rd.clone(), plan.clone());
    let mut svc = full("web", false);
    svc.metadata.labels = Some(BTreeMap::from([(
        "mirror.strait.dev/exported".to_string(),
        "remote-discovery".to_string(),
    )]));
    rw.apply(&Event::Apply(svc));
    rw.apply(&Event::Apply(full("db", true)));
    assert_eq!(rd.keys(), HashSet::from([("shop".into(), "web".into())]));
    let slice = |name: &str, svc: &str, ty: &str| -> EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "shop", "labels": {SERVICE_NAME_LABEL: svc}},
            "addressType": ty,
            "ports": [{"name": "metrics", "port": 9090}, {"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["198.18.64.2"], "conditions": {"ready": true},
                 "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "shop"}},
                {"addresses": ["198.18.64.3"], "conditions": {"ready": false},
                 "targetRef": {"kind": "Pod", "name": "web-2", "namespace": "shop"}},
                {"addresses": ["198.18.64.4"]},
            ],
        }))
        .expect("slice")
    };
    let store = RdSlices::default();
    let mut w = rd_slices_writer(store.clone(), rd.clone());
    w.apply(&Event::Apply(slice("web-a", "web", "IPv4")));
    w.apply(&Event::Apply(slice("db-a", "db", "IPv4")));
    w.apply(&Event::Apply(slice("web-f", "web", "FQDN")));
    assert_eq!(
        store.len(),
        1,
        "only remote-discovery Services, only IP slices"
    );
    let by = by_service(&store);
    let s = &by[&("shop".to_string(), "web".to_string())][0];
    // Only ready endpoints; unset means ready.
    let addrs: Vec<String> = s.endpoints.iter().map(|e| e.addr.to_string()).collect();
    assert_eq!(addrs, vec!["198.18.64.2", "198.18.64.4"]);
    assert_eq!(s.endpoints[0].pod.as_deref(), Some("web-1"));
    assert!(s.endpoints[1].pod.is_none());
    // Ports in a stable order.
    let ports: Vec<i32> = s.ports.iter().map(|p| p.port).collect();
    assert_eq!(ports, vec![8080, 9090]);
}

#[test]
fn pods_keep_service_account_and_mesh() {
    let pod = |name: &str, sa: Option<&str>, meshed: bool| -> Pod {
        let annotations =
            meshed.then(|| serde_json::json!({strait_core::labels::PROXY_VERSION: "v1"}));
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "shop", "annotations": annotations},
            "spec": {"serviceAccountName": sa, "containers": []},
        }))
        .expect("pod")
    };
    let store = Pods::default();
    let mut w = pods_writer(store.clone());
    w.apply(&Event::Apply(pod("a", Some("web"), true)));
    w.apply(&Event::Apply(pod("b", None, false)));
    let a = store.get(&("shop".into(), "a".into())).expect("a");
    assert_eq!((&*a.service_account, a.meshed), ("web", true));
    let b = store.get(&("shop".into(), "b".into())).expect("b");
    assert_eq!((&*b.service_account, b.meshed), ("default", false));
}
