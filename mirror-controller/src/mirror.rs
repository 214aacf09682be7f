//! The mirror of a remote Service, as a pure function of the remote Service, the Link and the
//! gateway's state. The controller compares these with what exists and writes only differences.

use crate::plan::{Plan, excluded};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use kube::api::ObjectMeta;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use strait_core::labels;

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "strait-mirror";
/// On mirrors and their slices: a hash of what we last wrote, so an unchanged mirror costs no write.
pub const SPEC_HASH: &str = "mirror.strait.dev/spec-hash";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Topology hints are about the remote cluster's zones; they mean nothing here.
const TOPOLOGY: [&str; 2] = [
    "service.kubernetes.io/topology-aware-hints",
    "service.kubernetes.io/topology-mode",
];

/// Why a remote Service cannot be mirrored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidService {
    #[error("type ExternalName cannot be mirrored")]
    ExternalName,
    #[error("headless Services are not mirrored through a gateway")]
    Headless,
    #[error("the Service has no ports")]
    NoPorts,
    #[error("mirror name {0:?} is longer than 63 characters")]
    NameTooLong(String),
}

/// The gateway as the mirrors see it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct GatewayView {
    pub addrs: Vec<IpAddr>,
    /// `false` after `failureThreshold` failed probes; unknown counts as alive.
    pub alive: bool,
}

/// Whether this object carries the labels that make it ours for this cluster.
pub fn is_ours(meta: &ObjectMeta, cluster: &str) -> bool {
    meta.labels.as_ref().is_some_and(|l| {
        l.get(labels::MIRRORED_SERVICE).map(String::as_str) == Some("true")
            && l.get(labels::CLUSTER_NAME).map(String::as_str) == Some(cluster)
    })
}

fn keep(k: &str, patterns: &[String]) -> bool {
    !k.starts_with(labels::PREFIX) && !TOPOLOGY.contains(&k) && !excluded(patterns, k)
}

/// Whether the mirror copies the remote label `k`.
pub fn copies_label(plan: &Plan, k: &str) -> bool {
    keep(k, &plan.excluded_labels)
}

/// Whether the mirror copies the remote annotation `k`.
pub fn copies_annotation(plan: &Plan, k: &str) -> bool {
    keep(k, &plan.excluded_annotations) && k != "kubectl.kubernetes.io/last-applied-configuration"
}

/// The mirror Service for `remote`.
pub fn service(remote: &Service, plan: &Plan) -> Result<Service, InvalidService> {
    let name = remote.metadata.name.as_deref().unwrap_or_default();
    let ns = remote.metadata.namespace.as_deref().unwrap_or_default();
    let spec = remote.spec.clone().unwrap_or_default();
    if spec.type_.as_deref() == Some("ExternalName") {
        return Err(InvalidService::ExternalName);
    }
    if spec.cluster_ip.as_deref() == Some("None") {
        return Err(InvalidService::Headless);
    }
    let ports: Vec<ServicePort> = spec
        .ports
        .unwrap_or_default()
        .into_iter()
        .map(|p| ServicePort {
            name: p.name,
            port: p.port,
            protocol: p.protocol.or_else(|| Some("TCP".into())),
            app_protocol: p.app_protocol,
            ..Default::default()
        })
        .collect();
    if ports.is_empty() {
        return Err(InvalidService::NoPorts);
    }
    let mirror = labels::mirror_name(name, &plan.cluster);
    if mirror.len() > 63 {
        return Err(InvalidService::NameTooLong(mirror));
    }
    let mut lbls: BTreeMap<String, String> = remote
        .metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| copies_label(plan, k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    lbls.insert(labels::MIRRORED_SERVICE.into(), "true".into());
    lbls.insert(labels::CLUSTER_NAME.into(), plan.cluster.clone());
    let mut annos: BTreeMap<String, String> = remote
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| copies_annotation(plan, k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    annos.insert(
        labels::REMOTE_SVC_FQ_NAME.into(),
        labels::service_fqdn(name, ns, &plan.cluster_domain),
    );
    annos.insert(
        labels::REMOTE_RESOURCE_VERSION.into(),
        remote.metadata.resource_version.clone().unwrap_or_default(),
    );
    annos.insert(
        labels::REMOTE_GATEWAY_IDENTITY.into(),
        plan.gateway_identity.clone(),
    );
    let mut svc = Service {
        metadata: ObjectMeta {
            name: Some(mirror),
            namespace: Some(ns.to_string()),
            labels: Some(lbls),
            annotations: Some(annos),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            ports: Some(ports),
            ..Default::default()
        }),
        status: None,
    };
    stamp(&mut svc.metadata, &svc.spec);
    Ok(svc)
}

/// The EndpointSlice of mirror `mirror`: the gateway's addresses at the gateway port.
pub fn slice(
    mirror: &Service,
    plan: &Plan,
    gateway: &GatewayView,
    remote_ready: bool,
) -> EndpointSlice {
    let name = mirror.metadata.name.clone().unwrap_or_default();
    let ready = gateway.alive && remote_ready;
    let v4 = gateway.addrs.iter().any(IpAddr::is_ipv4) || gateway.addrs.is_empty();
    let endpoints = gateway
        .addrs
        .iter()
        .filter(|a| a.is_ipv4() == v4)
        .map(|a| Endpoint {
            addresses: vec![a.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                serving: Some(ready),
                terminating: Some(false),
            }),
            ..Default::default()
        })
        .collect();
    let ports = mirror
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .map(|p| EndpointPort {
            name: Some(p.name.clone().unwrap_or_default()),
            port: Some(i32::from(plan.gateway_port)),
            protocol: p.protocol.clone(),
            app_protocol: None,
        })
        .collect();
    let mut labels_: BTreeMap<String, String> = BTreeMap::new();
    labels_.insert(SERVICE_NAME_LABEL.into(), name.clone());
    labels_.insert(MANAGED_BY_LABEL.into(), FIELD_MANAGER.into());
    labels_.insert(labels::MIRRORED_SERVICE.into(), "true".into());
    labels_.insert(labels::CLUSTER_NAME.into(), plan.cluster.clone());
    let mut annos = BTreeMap::new();
    annos.insert(
        labels::REMOTE_GATEWAY_IDENTITY.into(),
        plan.gateway_identity.clone(),
    );
    let mut es = EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: mirror.metadata.namespace.clone(),
            labels: Some(labels_),
            annotations: Some(annos),
            ..Default::default()
        },
        address_type: if v4 { "IPv4" } else { "IPv6" }.into(),
        endpoints,
        ports: Some(ports),
    };
    let body = (&es.address_type, &es.endpoints, &es.ports);
    stamp_with(&mut es.metadata, &body);
    es
}

fn stamp<T: serde::Serialize>(meta: &mut ObjectMeta, body: &T) {
    stamp_with(meta, body)
}

/// Writes [`SPEC_HASH`]: a hash of the metadata we set and the body.
fn stamp_with<T: serde::Serialize>(meta: &mut ObjectMeta, body: &T) {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&(&meta.labels, &meta.annotations, body))
        .unwrap_or_default()
        .hash(&mut h);
    meta.annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(SPEC_HASH.into(), format!("{:016x}", h.finish()));
}

/// Whether `actual` already carries what `desired` would write.
pub fn up_to_date(actual: &ObjectMeta, desired: &ObjectMeta) -> bool {
    let get = |m: &ObjectMeta| {
        m.annotations
            .as_ref()
            .and_then(|a| a.get(SPEC_HASH).cloned())
    };
    get(actual).is_some() && get(actual) == get(desired)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_k8s_api::LinkSpec;

    fn plan() -> Plan {
        let spec: LinkSpec = serde_json::from_value(serde_json::json!({
            "targetClusterName": "east",
            "clusterCredentialsSecret": "c",
            "gatewayAddress": "10.0.0.1",
            "gatewayPort": 4143,
            "gatewayIdentity": "strait-gateway.strait-multicluster.serviceaccount.identity.strait.cluster.local",
            "selector": {"matchLabels": {"mirror.strait.dev/exported": "true"}},
            "excludedLabels": ["secret.io/*"],
            "excludedAnnotations": ["drop-me"],
        }))
        .expect("spec");
        Plan::new(&spec).expect("plan")
    }

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
        let m = service(&remote(), &plan()).expect("valid");
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
        let a = service(&remote(), &plan()).expect("valid");
        let b = service(&remote(), &plan()).expect("valid");
        assert!(up_to_date(&a.metadata, &b.metadata));
        let mut r = remote();
        r.metadata.resource_version = Some("43".into());
        let c = service(&r, &plan()).expect("valid");
        assert!(!up_to_date(&a.metadata, &c.metadata));
    }

    #[test]
    fn slice_follows_gateway_and_readiness() {
        let m = service(&remote(), &plan()).expect("valid");
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
        assert_eq!(service(&r, &plan()), Err(InvalidService::Headless));
        let mut r = remote();
        if let Some(s) = r.spec.as_mut() {
            s.ports = None;
        }
        assert_eq!(service(&r, &plan()), Err(InvalidService::NoPorts));
    }
}
