//! Mirrors of a headless remote Service whose endpoints have hostnames (a StatefulSet's pods).
//!
//! ```text
//!  remote: web (headless)          local: web-east (headless)       EndpointSlice web-east
//!    web-0  web-1  web-2    ──►      web-0-east  web-1-east  ...  ◄─  web-0 → 198.19.0.7 (web-0-east's
//!                                    (ClusterIP mirrors through       web-1 → 198.19.0.9  cluster IP)
//!                                     the gateway, one per pod)
//! ```
//!
//! DNS answers `web-0.web-east.<ns>.svc.<domain>` from the headless mirror's slice with the
//! cluster IP of `web-0-east`, the pod's own mirror; that one is an ordinary mirror through the
//! gateway whose remote name is `web-0.web.<ns>.svc.<remote-domain>`, so the transport header
//! names the pod and the remote gateway resolves that name to that pod alone. Per-pod mirrors
//! carry [`labels::HEADLESS_MIRROR_SVC_NAME`], naming their parent.

use super::{
    InvalidService, Plan, SPEC_HASH, endpoint, ports_of, slice_labels, stamp_with, stamped_slice,
};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use kube::api::ObjectMeta;
use std::net::IpAddr;
use strait_core::labels;

/// One endpoint of a headless mirror's slice: a remote pod's hostname, its mirror's cluster IP
/// and whether it takes traffic (the remote pod is ready and the gateway alive).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodEndpoint {
    pub hostname: Box<str>,
    pub ip: IpAddr,
    pub ready: bool,
}

/// The name of the mirror of the pod with `hostname`: `<hostname>-<cluster>`, as Linkerd
/// names it.
pub fn pod_mirror_name(hostname: &str, plan: &Plan) -> Result<String, InvalidService> {
    let name = labels::mirror_name(hostname, &plan.cluster);
    if name.len() > 63 || !strait_core::identity::is_dns_label(&name) {
        return Err(InvalidService::NameTooLong(name));
    }
    Ok(name)
}

/// The mirror of the pod with `hostname` behind headless mirror `parent`, named `name` (its
/// [`pod_mirror_name`]): a ClusterIP Service with the parent's ports, labels and annotations,
/// reached through the gateway, whose remote name is the pod's own
/// (`<hostname>.<svc>.<ns>.svc.<domain>`).
pub fn pod_service(parent: &Service, hostname: &str, name: String, plan: &Plan) -> Service {
    let parent_name = parent.metadata.name.clone().unwrap_or_default();
    let mut meta = ObjectMeta {
        name: Some(name),
        namespace: parent.metadata.namespace.clone(),
        labels: parent.metadata.labels.clone(),
        annotations: parent.metadata.annotations.clone(),
        ..Default::default()
    };
    meta.labels
        .get_or_insert_with(Default::default)
        .insert(labels::HEADLESS_MIRROR_SVC_NAME.into(), parent_name);
    let annos = meta.annotations.get_or_insert_with(Default::default);
    annos.remove(SPEC_HASH);
    if let Some(fq) = annos.get_mut(labels::REMOTE_SVC_FQ_NAME) {
        *fq = format!("{hostname}.{fq}");
    }
    annos.insert(
        labels::REMOTE_GATEWAY_IDENTITY.into(),
        plan.gateway_identity.clone(),
    );
    let mut spec = parent.spec.clone().unwrap_or_default();
    spec.cluster_ip = None;
    let mut svc = Service {
        metadata: meta,
        spec: Some(spec),
        status: None,
    };
    stamp_with(&mut svc.metadata, &svc.spec);
    svc
}

/// The EndpointSlice of headless mirror `parent`: each pod's hostname at its mirror's cluster
/// IP, on the Service's own ports (a client connects to that cluster IP, not to the gateway).
/// Only the family of the first endpoint is listed (a slice holds one); pods whose mirror has
/// no cluster IP yet are left out until it has.
pub fn headless_slice(parent: &Service, plan: &Plan, endpoints: &[PodEndpoint]) -> EndpointSlice {
    let name = parent.metadata.name.clone().unwrap_or_default();
    let v4 = endpoints.first().is_none_or(|e| e.ip.is_ipv4());
    let endpoints = endpoints
        .iter()
        .filter(|e| e.ip.is_ipv4() == v4)
        .map(|e| Endpoint {
            hostname: Some(e.hostname.to_string()),
            ..endpoint(e.ip, e.ready)
        })
        .collect();
    let ports = ports_of(parent)
        .map(|p| EndpointPort {
            name: Some(p.name.clone().unwrap_or_default()),
            port: Some(p.port),
            protocol: p.protocol.clone(),
            app_protocol: p.app_protocol.clone(),
        })
        .collect();
    let meta = ObjectMeta {
        name: Some(name.clone()),
        namespace: parent.metadata.namespace.clone(),
        labels: Some(slice_labels(&name, plan)),
        ..Default::default()
    };
    stamped_slice(meta, v4, endpoints, ports)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::{GatewayView, Via, is_ours, service, slice};
    use crate::plan::tests::plan;

    fn remote() -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db", "namespace": "shop", "resourceVersion": "7",
                "labels": {"app": "db"}, "annotations": {"keep": "1"}},
            "spec": {"clusterIP": "None", "selector": {"app": "db"},
                "ports": [{"name": "pg", "port": 5432, "targetPort": 5433}]}
        }))
        .expect("svc")
    }

    #[test]
    fn a_headless_service_gets_a_headless_mirror_without_a_gateway_identity() {
        let m = service(&remote(), &plan(), Via::Gateway).expect("valid");
        assert_eq!(m.metadata.name.as_deref(), Some("db-east"));
        assert!(crate::mirror::is_headless(&m));
        let a = m.metadata.annotations.clone().unwrap_or_default();
        assert!(!a.contains_key(labels::REMOTE_GATEWAY_IDENTITY));
        assert_eq!(
            a.get(labels::REMOTE_SVC_FQ_NAME).map(String::as_str),
            Some("db.shop.svc.cluster.local")
        );
    }

    #[test]
    fn a_pod_mirror_names_the_pod_and_goes_through_the_gateway() {
        let p = plan();
        let parent = service(&remote(), &p, Via::Gateway).expect("valid");
        let name = pod_mirror_name("db-0", &p).expect("valid");
        let m = pod_service(&parent, "db-0", name, &p);
        assert_eq!(m.metadata.name.as_deref(), Some("db-0-east"));
        assert!(is_ours(&m.metadata, "east"));
        assert!(!crate::mirror::is_headless(&m));
        let l = m.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            l.get(labels::HEADLESS_MIRROR_SVC_NAME).map(String::as_str),
            Some("db-east")
        );
        assert_eq!(l.get("app").map(String::as_str), Some("db"));
        let a = m.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            a.get(labels::REMOTE_SVC_FQ_NAME).map(String::as_str),
            Some("db-0.db.shop.svc.cluster.local")
        );
        assert_eq!(
            a.get(labels::REMOTE_GATEWAY_IDENTITY),
            Some(&p.gateway_identity)
        );
        assert_ne!(
            a.get(SPEC_HASH),
            parent
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(SPEC_HASH))
        );
        let ports = m
            .spec
            .as_ref()
            .and_then(|s| s.ports.clone())
            .unwrap_or_default();
        assert_eq!((ports[0].port, ports[0].target_port.as_ref()), (5432, None));
        // Its slice is an ordinary mirror slice: the gateway at the gateway port.
        let gw = GatewayView {
            addrs: vec!["198.18.0.10".parse().expect("ip")],
            alive: true,
        };
        let es = slice(&m, &p, &gw, true);
        assert_eq!(es.endpoints[0].addresses, ["198.18.0.10"]);
        // Another pod's mirror differs; a hostname too long for a name is refused.
        let other = pod_service(&parent, "db-1", "db-1-east".into(), &p);
        assert_ne!(
            crate::mirror::spec_hash(&m.metadata),
            crate::mirror::spec_hash(&other.metadata)
        );
        assert!(matches!(
            pod_mirror_name(&"x".repeat(60), &p),
            Err(InvalidService::NameTooLong(_))
        ));
    }

    #[test]
    fn the_headless_slice_lists_hostnames_at_pod_mirror_addresses() {
        let p = plan();
        let parent = service(&remote(), &p, Via::Gateway).expect("valid");
        let ep = |h: &str, ip: &str, ready| PodEndpoint {
            hostname: h.into(),
            ip: ip.parse().expect("ip"),
            ready,
        };
        let es = headless_slice(
            &parent,
            &p,
            &[
                ep("db-0", "198.19.0.7", true),
                ep("db-1", "198.19.0.9", false),
            ],
        );
        assert_eq!(es.metadata.name.as_deref(), Some("db-east"));
        assert!(is_ours(&es.metadata, "east"));
        let got: Vec<_> = es
            .endpoints
            .iter()
            .map(|e| {
                (
                    e.hostname.as_deref(),
                    e.addresses[0].as_str(),
                    e.conditions.as_ref().and_then(|c| c.ready),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (Some("db-0"), "198.19.0.7", Some(true)),
                (Some("db-1"), "198.19.0.9", Some(false))
            ]
        );
        let port = &es.ports.as_ref().expect("ports")[0];
        assert_eq!((port.name.as_deref(), port.port), (Some("pg"), Some(5432)));
        let a = es.metadata.annotations.clone().unwrap_or_default();
        assert!(!a.contains_key(labels::REMOTE_GATEWAY_IDENTITY));
    }
}
