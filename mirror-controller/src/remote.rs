//! Compact remote stores. Of each remote Service the Link exports, only what its mirror is
//! derived from (name, namespace, resourceVersion, the labels and annotations the mirror
//! copies, ports, and whether it is headless or ExternalName); of each remote EndpointSlice,
//! only its Service's name, whether it has a ready endpoint and its endpoints' hostnames
//! (kept only while it has either); of each remote
//! `ServiceExport`, only its key. Only for Services mirrored for remote discovery: the ready
//! addresses and ports of their EndpointSlices, and of every pod its service account and
//! whether it is meshed. A reflector of even trimmed `Service` objects costs a few
//! kilobytes each; these cost a few hundred bytes.
//!
//! The mirror itself is derived from [`RemoteSvc::to_service`] only when a pass needs it, and
//! is identical to the one derived from the full object (the filters are idempotent).
//!
//! Fed by a watcher's events through [`strait_k8s_api::relist`]: a (re-)list replaces the
//! whole map at `InitDone`, so a deletion missed during a watch outage disappears with the
//! re-list.

use crate::plan::{Plan, WayIn};
use k8s_openapi::api::core::v1::{Pod, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ObjectMeta, PartialObjectMeta};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use strait_k8s_api::{ServiceExport, relist};

/// (namespace, name).
pub type Key = (String, String);

type Pairs = Box<[(Box<str>, Box<str>)]>;

/// One port of a remote Service, as the mirror copies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    pub name: Option<Box<str>>,
    pub port: i32,
    pub protocol: Option<Box<str>>,
    pub app_protocol: Option<Box<str>>,
}

/// What a mirror is derived from, of one remote Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteSvc {
    pub namespace: Box<str>,
    pub name: Box<str>,
    pub resource_version: Option<Box<str>>,
    pub external_name: bool,
    pub headless: bool,
    /// Only the labels and annotations the mirror copies, sorted by key.
    pub labels: Pairs,
    pub annotations: Pairs,
    pub ports: Box<[Port]>,
    /// Its creationTimestamp, in seconds (a federated Service takes its ports and metadata
    /// from its oldest member).
    pub created: Option<i64>,
}

fn boxed(s: &Option<String>) -> Option<Box<str>> {
    s.as_deref().map(Box::from)
}

fn pairs(m: &Option<BTreeMap<String, String>>, keep: impl Fn(&str) -> bool) -> Pairs {
    m.iter()
        .flatten()
        .filter(|(k, _)| keep(k))
        .map(|(k, v)| (Box::from(k.as_str()), Box::from(v.as_str())))
        .collect()
}

fn map(p: &Pairs) -> Option<BTreeMap<String, String>> {
    Some(
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

impl RemoteSvc {
    /// The compact form of `svc`; `None` when it has no name or namespace, or `plan`'s
    /// `selector` does not select it (neither is mirrored through this store).
    pub fn of(svc: &Service, plan: &Plan) -> Option<Self> {
        let labels = svc.metadata.labels.as_ref();
        if !plan.selects(labels.unwrap_or(&BTreeMap::new())) {
            return None;
        }
        Self::compact(svc, plan)
    }

    /// The compact form of `svc`, whoever exports it; `None` when it has no name or namespace.
    pub fn compact(svc: &Service, plan: &Plan) -> Option<Self> {
        let m = &svc.metadata;
        let (namespace, name) = (m.namespace.as_deref()?, m.name.as_deref()?);
        let spec = svc.spec.as_ref();
        Some(Self {
            namespace: namespace.into(),
            name: name.into(),
            resource_version: boxed(&m.resource_version),
            external_name: spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName"),
            headless: spec.and_then(|s| s.cluster_ip.as_deref()) == Some("None"),
            labels: pairs(&m.labels, |k| plan.copies_label(k)),
            annotations: pairs(&m.annotations, |k| plan.copies_annotation(k)),
            ports: spec
                .and_then(|s| s.ports.as_ref())
                .into_iter()
                .flatten()
                .map(|p| Port {
                    name: boxed(&p.name),
                    port: p.port,
                    protocol: boxed(&p.protocol),
                    app_protocol: boxed(&p.app_protocol),
                })
                .collect(),
            created: m.creation_timestamp.as_ref().map(|t| t.0.as_second()),
        })
    }

    pub fn key(&self) -> Key {
        (self.namespace.to_string(), self.name.to_string())
    }

    /// A `Service` carrying everything the mirror is derived from.
    pub fn to_service(&self) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(self.name.to_string()),
                namespace: Some(self.namespace.to_string()),
                resource_version: self.resource_version.as_deref().map(String::from),
                labels: map(&self.labels),
                annotations: map(&self.annotations),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: self.external_name.then(|| "ExternalName".into()),
                cluster_ip: self.headless.then(|| "None".into()),
                ports: Some(
                    self.ports
                        .iter()
                        .map(|p| ServicePort {
                            name: p.name.as_deref().map(String::from),
                            port: p.port,
                            protocol: p.protocol.as_deref().map(String::from),
                            app_protocol: p.app_protocol.as_deref().map(String::from),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: None,
        }
    }
}

/// A shared map by (namespace, name) of what is kept of each remote object.
pub type Map<V> = relist::Shared<Key, V>;

/// Remote Services, compacted.
pub type Services = Map<Arc<RemoteSvc>>;
/// Remote EndpointSlices with a ready endpoint or a hostname, summarised.
pub type Slices = Map<Arc<SliceSummary>>;
/// The keys of remote `ServiceExport`s (each exports the Service with its key).
pub type Exports = Map<()>;

/// Of a remote EndpointSlice, what mirrors read: its Service, whether any endpoint is ready,
/// and its endpoints that have a hostname (a StatefulSet's pods), for headless mirrors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceSummary {
    pub service: Box<str>,
    pub ready: bool,
    /// Each endpoint's hostname and whether it is ready, in the slice's order.
    pub hostnames: Box<[(Box<str>, bool)]>,
}

impl SliceSummary {
    /// The summary of `es`; `None` without a Service label, or when no endpoint is ready and
    /// none has a hostname (nothing a mirror reads).
    pub fn of(es: &EndpointSlice) -> Option<Self> {
        let svc = es.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
        // Unset `ready` means ready, as the API says.
        let is_ready = |e: &k8s_openapi::api::discovery::v1::Endpoint| {
            e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true)
        };
        let hostnames: Box<[(Box<str>, bool)]> = es
            .endpoints
            .iter()
            .filter_map(|e| Some((Box::from(e.hostname.as_deref()?), is_ready(e))))
            .collect();
        let ready = es.endpoints.iter().any(is_ready);
        (ready || !hostnames.is_empty()).then(|| Self {
            service: svc.as_str().into(),
            ready,
            hostnames,
        })
    }
}

/// (namespace, Service name) of every remote Service with a ready endpoint.
pub fn ready(slices: &Slices) -> HashSet<Key> {
    slices
        .read()
        .iter()
        .filter(|(_, s)| s.ready)
        .map(|((ns, _), s)| (ns.clone(), s.service.to_string()))
        .collect()
}

/// The hostnames of each remote Service's endpoints, by (namespace, Service name), and
/// whether an endpoint of that hostname is ready. Only Services with hostnames appear.
pub fn hostnames(slices: &Slices) -> HashMap<Key, BTreeMap<Box<str>, bool>> {
    let mut out: HashMap<Key, BTreeMap<Box<str>, bool>> = HashMap::new();
    for ((ns, _), s) in slices.read().iter() {
        if s.hostnames.is_empty() {
            continue;
        }
        let hosts = out.entry((ns.clone(), s.service.to_string())).or_default();
        for (h, ready) in s.hostnames.iter() {
            *hosts.entry(h.clone()).or_default() |= *ready;
        }
    }
    out
}

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One port of a remote EndpointSlice: the remote pods' (target) port, named after the
/// Service port it serves.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlicePort {
    pub name: Option<Box<str>>,
    pub port: i32,
    pub protocol: Option<Box<str>>,
    pub app_protocol: Option<Box<str>>,
}

/// One ready endpoint of a remote EndpointSlice: its (first) address and its pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadyEndpoint {
    pub addr: std::net::IpAddr,
    pub pod: Option<Box<str>>,
}

/// What a remote-discovery mirror needs of one remote EndpointSlice of its Service: the
/// addresses of its ready endpoints (with their pods) and its ports. Kept only for Services
/// the Link mirrors for remote discovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RdSlice {
    pub service: Box<str>,
    pub ipv6: bool,
    pub ports: Box<[SlicePort]>,
    pub endpoints: Box<[ReadyEndpoint]>,
}

impl RdSlice {
    /// The compact form of `es`; `None` without a Service label or for FQDN slices.
    pub fn of(es: &EndpointSlice) -> Option<Self> {
        let service = es.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
        let ipv6 = match es.address_type.as_str() {
            "IPv4" => false,
            "IPv6" => true,
            _ => return None,
        };
        let endpoints = es
            .endpoints
            .iter()
            // Unset `ready` means ready, as the API says.
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
            .filter_map(|e| {
                // Consumers use the first address only (the API allows no more, in practice).
                let addr: std::net::IpAddr = e.addresses.first()?.parse().ok()?;
                (addr.is_ipv6() == ipv6).then(|| ReadyEndpoint {
                    addr,
                    pod: e
                        .target_ref
                        .as_ref()
                        .filter(|r| r.kind.as_deref() == Some("Pod"))
                        .and_then(|r| r.name.as_deref())
                        .map(Box::from),
                })
            })
            .collect();
        let mut ports: Vec<SlicePort> = es
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(SlicePort {
                    name: boxed(&p.name),
                    port: p.port?,
                    protocol: boxed(&p.protocol),
                    app_protocol: boxed(&p.app_protocol),
                })
            })
            .collect();
        // In a stable order: slices with the same ports share a mirror slice.
        ports.sort();
        Some(Self {
            service: service.as_str().into(),
            ipv6,
            ports: ports.into(),
            endpoints,
        })
    }
}

/// Remote EndpointSlices of remote-discovery Services, by slice key.
pub type RdSlices = Map<Arc<RdSlice>>;

/// The slices of each remote-discovery Service, by (namespace, Service name).
pub fn by_service(slices: &RdSlices) -> HashMap<Key, Vec<Arc<RdSlice>>> {
    let mut out: HashMap<Key, Vec<Arc<RdSlice>>> = HashMap::new();
    for ((ns, _), s) in slices.read().iter() {
        out.entry((ns.clone(), s.service.to_string()))
            .or_default()
            .push(s.clone());
    }
    out
}

/// A writer of the remote EndpointSlices of the Services in `rd` (remote-discovery ones).
pub fn rd_slices_writer(store: RdSlices, rd: Services) -> Writer<EndpointSlice, Arc<RdSlice>> {
    writer(store, move |es: &EndpointSlice| {
        let s = RdSlice::of(es)?;
        let ns = es.metadata.namespace.clone()?;
        rd.contains(&(ns, s.service.to_string()))
            .then(|| Arc::new(s))
    })
}

/// Of a remote pod, what a remote-discovery mirror needs: whose identity it has, if any.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodMeta {
    pub service_account: Box<str>,
    /// It carries the proxy annotation ([`strait_core::labels::PROXY_VERSION`]).
    pub meshed: bool,
}

impl PodMeta {
    pub fn of(pod: &Pod) -> Self {
        Self {
            service_account: pod
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.as_deref())
                .unwrap_or("default")
                .into(),
            meshed: pod
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(strait_core::labels::PROXY_VERSION)),
        }
    }
}

/// Remote pods, by key.
pub type Pods = Map<PodMeta>;

/// A writer of remote pods.
pub fn pods_writer(store: Pods) -> Writer<Pod, PodMeta> {
    writer(store, |p: &Pod| Some(PodMeta::of(p)))
}

/// Applies watch events of `K` to a [`Map`] of `V`.
pub type Writer<K, V> = relist::Writer<K, Map<V>>;

/// A writer keeping `keep(o)` of every object `o`; `None` keeps nothing (its entry goes).
fn writer<K: kube::Resource + 'static, V>(
    store: Map<V>,
    keep: impl Fn(&K) -> Option<V> + Send + 'static,
) -> Writer<K, V> {
    relist::Writer::new(store, move |o: &K| Some((relist::name_key(o), keep(o))))
}

/// A writer of the selected remote Services of `plan`.
pub fn services_writer(store: Services, plan: Arc<Plan>) -> Writer<Service, Arc<RemoteSvc>> {
    writer(store, move |s: &Service| {
        RemoteSvc::of(s, &plan).map(Arc::new)
    })
}

/// A writer of the remote Services that `plan`'s `federatedServiceSelector` selects, mirrors
/// excepted (a mirror is no member: it would federate a federation).
pub fn federated_writer(store: Services, plan: Arc<Plan>) -> Writer<Service, Arc<RemoteSvc>> {
    writer(store, move |s: &Service| {
        let none = BTreeMap::new();
        let labels = s.metadata.labels.as_ref().unwrap_or(&none);
        if !plan.selects_federated(labels)
            || labels.contains_key(strait_core::labels::MIRRORED_SERVICE)
        {
            return None;
        }
        RemoteSvc::compact(s, &plan).map(Arc::new)
    })
}

/// A writer of the remote Services exported by a `ServiceExport` in `exports` and not already
/// selected by `plan`'s selectors (those are kept by [`services_writer`] and
/// [`remote_discovery_writer`]). An export that
/// appears after its Service's last event is not seen here: the caller re-lists then.
pub fn exported_writer(
    store: Services,
    plan: Arc<Plan>,
    exports: Exports,
) -> Writer<Service, Arc<RemoteSvc>> {
    writer(store, move |s: &Service| {
        let m = &s.metadata;
        let key = (m.namespace.clone()?, m.name.clone()?);
        let none = BTreeMap::new();
        let labels = m.labels.as_ref().unwrap_or(&none);
        if plan.way_in(labels, exports.contains(&key)) != Some(WayIn::ServiceExport) {
            return None;
        }
        RemoteSvc::compact(s, &plan).map(Arc::new)
    })
}

/// A writer of the remote Services selected by `plan`'s `remoteDiscoverySelector`.
pub fn remote_discovery_writer(
    store: Services,
    plan: Arc<Plan>,
) -> Writer<Service, Arc<RemoteSvc>> {
    writer(store, move |s: &Service| {
        let labels = s.metadata.labels.as_ref();
        if !plan.selects_remote_discovery(labels.unwrap_or(&BTreeMap::new())) {
            return None;
        }
        RemoteSvc::compact(s, &plan).map(Arc::new)
    })
}

/// A writer of the keys of remote `ServiceExport`s (metadata only).
pub fn exports_writer(store: Exports) -> Writer<PartialObjectMeta<ServiceExport>, ()> {
    writer(store, |_: &PartialObjectMeta<ServiceExport>| Some(()))
}

/// A writer of remote EndpointSlice summaries.
pub fn slices_writer(store: Slices) -> Writer<EndpointSlice, Arc<SliceSummary>> {
    writer(store, |es: &EndpointSlice| {
        SliceSummary::of(es).map(Arc::new)
    })
}

#[cfg(test)]
mod tests;
