//! What the destination service keeps of each Kubernetes object: small projections, built once
//! per watch event, so the cache holds a few strings and addresses per object instead of the
//! whole object (no managedFields, no pod spec, no status history).

use super::authority::ServiceKey;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::BTreeMap;
use std::net::IpAddr;
use strait_core::labels;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A named port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortInfo {
    pub name: String,
    pub port: u16,
}

/// What a mirror Service says about where its traffic goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirrorInfo {
    /// The remote gateway's TLS identity.
    pub gateway_identity: Option<String>,
    /// `<svc>.<ns>.svc.<remote-cluster-domain>` of the exported Service.
    pub remote_fq_name: Option<String>,
    /// Labelled [`labels::REMOTE_DISCOVERY`]: its endpoints are the remote pods themselves,
    /// reached directly (flat network), not a gateway.
    pub remote_discovery: bool,
}

/// A Service, as far as discovery cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    pub cluster_ips: Vec<IpAddr>,
    pub ports: Vec<PortInfo>,
    pub external_name: bool,
    pub mirror: Option<MirrorInfo>,
    pub opaque_ports: Vec<u16>,
    /// A federated Service's local member (a Service in the same namespace), whose pods it
    /// lists beside the remote members' slices.
    pub federated_local_member: Option<String>,
}

/// One endpoint of a slice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceEndpoint {
    pub ips: Vec<IpAddr>,
    pub ready: bool,
    /// The pod behind the address, when the slice names one.
    pub pod: Option<String>,
    /// The endpoint's hostname (a StatefulSet's pod: `<hostname>.<svc>.<ns>.svc...`).
    pub hostname: Option<String>,
}

/// An EndpointSlice, as far as discovery cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceInfo {
    pub service: ServiceKey,
    pub ports: Vec<PortInfo>,
    pub endpoints: Vec<SliceEndpoint>,
    /// The TLS identity of every endpoint of a mirror's slice, as the mirror controller set
    /// it: [`labels::REMOTE_IDENTITY`] (remote pods of a remote-discovery mirror), else
    /// [`labels::REMOTE_GATEWAY_IDENTITY`] (the remote gateway).
    pub identity: Option<String>,
    /// Labelled [`labels::REMOTE_DISCOVERY`]: it lists remote pods, reached directly.
    pub remote_discovery: bool,
    /// [`labels::REMOTE_SVC_FQ_NAME`] on the slice: the remote Service its gateway endpoint
    /// leads to (a federated Service's slices each name their own).
    pub remote_fq_name: Option<String>,
}

/// A pod, as far as discovery cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub ips: Vec<IpAddr>,
    pub service_account: String,
    /// The pod carries the proxy annotation.
    pub meshed: bool,
    pub opaque_ports: Vec<u16>,
}

/// `(namespace, name)` of a namespaced object.
pub type ObjKey = (String, String);

fn obj_key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<ObjKey> {
    Some((meta.namespace.clone()?, meta.name.clone()?))
}

fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

fn port_u16(p: i32) -> Option<u16> {
    u16::try_from(p).ok().filter(|p| *p != 0)
}

impl ServiceInfo {
    pub fn from_object(svc: &Service) -> Option<(ServiceKey, Self)> {
        let (ns, name) = obj_key(&svc.metadata)?;
        let spec = svc.spec.as_ref();
        let mut cluster_ips: Vec<IpAddr> = spec
            .and_then(|s| s.cluster_ips.clone())
            .unwrap_or_default()
            .iter()
            .chain(spec.and_then(|s| s.cluster_ip.as_ref()))
            .filter_map(|ip| ip.parse().ok())
            .collect();
        cluster_ips.sort();
        cluster_ips.dedup();
        let ports = spec
            .and_then(|s| s.ports.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|p| {
                Some(PortInfo {
                    name: p.name.clone().unwrap_or_default(),
                    port: port_u16(p.port)?,
                })
            })
            .collect();
        let mirrored = svc
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::MIRRORED_SERVICE))
            .is_some_and(|v| v == "true");
        let mirror = mirrored.then(|| MirrorInfo {
            gateway_identity: annotation(&svc.metadata, labels::REMOTE_GATEWAY_IDENTITY)
                .map(str::to_owned),
            remote_fq_name: annotation(&svc.metadata, labels::REMOTE_SVC_FQ_NAME)
                .map(str::to_owned),
            remote_discovery: svc
                .metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(labels::REMOTE_DISCOVERY)),
        });
        let federated = mirrored
            && svc
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(labels::FEDERATED_SERVICE))
                .is_some_and(|v| v == "true");
        let info = Self {
            cluster_ips,
            ports,
            external_name: spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName"),
            mirror,
            opaque_ports: parse_ports(annotation(&svc.metadata, labels::OPAQUE_PORTS)),
            federated_local_member: annotation(&svc.metadata, labels::FEDERATED_LOCAL_MEMBER)
                .filter(|_| federated)
                .filter(|m| !m.is_empty())
                .map(str::to_owned),
        };
        Some((ServiceKey::new(ns, name), info))
    }

    /// The key of the local member of federated Service `key` (this one), if it has one.
    pub fn local_member(&self, key: &ServiceKey) -> Option<ServiceKey> {
        let m = self.federated_local_member.as_ref()?;
        (*m != key.name).then(|| ServiceKey::new(key.namespace.clone(), m.clone()))
    }

    /// The Service port numbered `port`.
    pub fn port(&self, port: u16) -> Option<&PortInfo> {
        self.ports.iter().find(|p| p.port == port)
    }
}

impl SliceInfo {
    pub fn from_object(slice: &EndpointSlice) -> Option<(ObjKey, Self)> {
        let key = obj_key(&slice.metadata)?;
        let svc = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
        let ports = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(PortInfo {
                    name: p.name.clone().unwrap_or_default(),
                    port: port_u16(p.port?)?,
                })
            })
            .collect();
        let endpoints = slice
            .endpoints
            .iter()
            .map(|e| SliceEndpoint {
                ips: e.addresses.iter().filter_map(|a| a.parse().ok()).collect(),
                // The API says an unset `ready` means "unknown; treat as ready".
                ready: e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true),
                pod: e
                    .target_ref
                    .as_ref()
                    .filter(|r| r.kind.as_deref() == Some("Pod"))
                    .and_then(|r| r.name.clone()),
                hostname: e.hostname.clone(),
            })
            .collect();
        let info = Self {
            service: ServiceKey::new(key.0.clone(), svc.clone()),
            ports,
            endpoints,
            identity: annotation(&slice.metadata, labels::REMOTE_IDENTITY)
                .or_else(|| annotation(&slice.metadata, labels::REMOTE_GATEWAY_IDENTITY))
                .map(str::to_owned),
            remote_discovery: slice
                .metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(labels::REMOTE_DISCOVERY)),
            remote_fq_name: annotation(&slice.metadata, labels::REMOTE_SVC_FQ_NAME)
                .map(str::to_owned),
        };
        Some((key, info))
    }

    /// The slice port carrying the Service port named `name`.
    pub fn port(&self, name: &str) -> Option<u16> {
        self.ports.iter().find(|p| p.name == name).map(|p| p.port)
    }
}

impl PodInfo {
    pub fn from_object(pod: &Pod) -> Option<(ObjKey, Self)> {
        let key = obj_key(&pod.metadata)?;
        let status = pod.status.as_ref();
        let mut ips: Vec<IpAddr> = status
            .and_then(|s| s.pod_ips.as_ref())
            .into_iter()
            .flatten()
            .map(|p| p.ip.as_str())
            .chain(status.and_then(|s| s.pod_ip.as_deref()))
            .filter_map(|ip| ip.parse().ok())
            .collect();
        ips.sort();
        ips.dedup();
        let info = Self {
            ips,
            service_account: pod
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".to_owned()),
            meshed: annotation(&pod.metadata, labels::PROXY_VERSION).is_some(),
            opaque_ports: parse_ports(annotation(&pod.metadata, labels::OPAQUE_PORTS)),
        };
        Some((key, info))
    }
}

/// Parses an opaque-ports annotation: `3306,5432` or ranges `4000-4010`. Invalid entries are
/// skipped; a range is capped so that an annotation cannot allocate without bound.
pub fn parse_ports(value: Option<&str>) -> Vec<u16> {
    const MAX: usize = 4096;
    let mut out = BTreeMap::new();
    for part in value.unwrap_or_default().split(',').map(str::trim) {
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (lo.trim().parse::<u16>(), hi.trim().parse::<u16>()),
            None => (part.parse::<u16>(), part.parse::<u16>()),
        };
        let (Ok(lo), Ok(hi)) = (lo, hi) else { continue };
        for p in lo.max(1)..=hi {
            if out.len() >= MAX {
                break;
            }
            out.insert(p, ());
        }
    }
    out.into_keys().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaque_ports() {
        assert_eq!(
            parse_ports(Some("3306, 5432,10-12,x,0")),
            vec![10, 11, 12, 3306, 5432]
        );
        assert!(parse_ports(None).is_empty());
        assert_eq!(parse_ports(Some("1-65535")).len(), 4096);
    }

    #[test]
    fn projects_a_mirror_service() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "web-east", "namespace": "shop",
                "labels": {labels::MIRRORED_SERVICE: "true"},
                "annotations": {
                    labels::REMOTE_GATEWAY_IDENTITY: "gw.id",
                    labels::REMOTE_SVC_FQ_NAME: "web.shop.svc.east.local",
                },
                "managedFields": [{"manager": "x"}],
            },
            "spec": {"clusterIP": "198.19.0.10", "ports": [{"name": "http", "port": 80}]},
        }))
        .unwrap();
        let (key, info) = ServiceInfo::from_object(&svc).unwrap();
        assert_eq!(key, ServiceKey::new("shop", "web-east"));
        assert_eq!(
            info.cluster_ips,
            vec!["198.19.0.10".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(info.port(80).unwrap().name, "http");
        let m = info.mirror.unwrap();
        assert_eq!(m.gateway_identity.as_deref(), Some("gw.id"));
        assert_eq!(m.remote_fq_name.as_deref(), Some("web.shop.svc.east.local"));
        assert!(!m.remote_discovery);
    }

    #[test]
    fn projects_a_remote_discovery_mirror_and_its_slices() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "web-east", "namespace": "shop",
                "labels": {labels::MIRRORED_SERVICE: "true", labels::REMOTE_DISCOVERY: "east"},
                "annotations": {labels::REMOTE_SVC_FQ_NAME: "web.shop.svc.cluster.local"},
            },
            "spec": {"clusterIP": "198.19.0.11", "ports": [{"name": "http", "port": 80}]},
        }))
        .unwrap();
        let m = ServiceInfo::from_object(&svc).unwrap().1.mirror.unwrap();
        assert!(m.remote_discovery && m.gateway_identity.is_none());
        let slice = |annotations: serde_json::Value| -> SliceInfo {
            let es: EndpointSlice = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "web-east-0123456789", "namespace": "shop",
                             "labels": {SERVICE_NAME_LABEL: "web-east"},
                             "annotations": annotations},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080}],
                "endpoints": [{"addresses": ["198.18.64.2"]}],
            }))
            .unwrap();
            SliceInfo::from_object(&es).unwrap().1
        };
        let pod_id = "web.shop.serviceaccount.identity.strait.cluster.local";
        assert_eq!(
            slice(serde_json::json!({labels::REMOTE_IDENTITY: pod_id}))
                .identity
                .as_deref(),
            Some(pod_id)
        );
        assert_eq!(
            slice(serde_json::json!({labels::REMOTE_GATEWAY_IDENTITY: "gw.id"}))
                .identity
                .as_deref(),
            Some("gw.id")
        );
        assert!(slice(serde_json::json!({})).identity.is_none());
    }

    #[test]
    fn projects_a_slice() {
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-abc", "namespace": "shop",
                         "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [
                {"addresses": ["198.18.0.1"], "conditions": {"ready": true},
                 "targetRef": {"kind": "Pod", "name": "web-1"}},
                {"addresses": ["198.18.0.2"], "conditions": {"ready": false}},
                {"addresses": ["198.18.0.3"]},
            ],
        }))
        .unwrap();
        let (key, info) = SliceInfo::from_object(&slice).unwrap();
        assert_eq!(key, ("shop".to_owned(), "web-abc".to_owned()));
        assert_eq!(info.service, ServiceKey::new("shop", "web"));
        assert_eq!(info.port("http"), Some(8080));
        let ready: Vec<_> = info.endpoints.iter().map(|e| e.ready).collect();
        assert_eq!(ready, vec![true, false, true]);
        assert_eq!(info.endpoints[0].pod.as_deref(), Some("web-1"));
    }
}
