//! The mirror of a remote Service, as a pure function of the remote Service, the Link and the
//! gateway's state (a mirror reached through the gateway) or the remote pods (a mirror for
//! remote discovery). The controller compares these with what exists and writes only
//! differences. A headless remote Service with hostnames (a StatefulSet's) gets a headless
//! mirror and one mirror per pod ([`headless`]).

use crate::plan::Plan;
use crate::remote::{PodMeta, RdSlice, SlicePort};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use kube::api::ObjectMeta;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use strait_core::labels;

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "strait-mirror";
/// On mirrors and their slices: a hash of what we last wrote, so an unchanged mirror costs no write.
pub const SPEC_HASH: &str = "mirror.strait.dev/spec-hash";
const SERVICE_NAME_LABEL: &str = crate::remote::SERVICE_NAME_LABEL;
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";

/// Why a remote Service cannot be mirrored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidService {
    #[error("type ExternalName cannot be mirrored")]
    ExternalName,
    #[error(
        "headless Services are not mirrored by this Link (mirrorHeadlessServices: false); set it to true to mirror them with one mirror per pod"
    )]
    HeadlessOff,
    #[error(
        "headless Services are not mirrored for remote discovery; export it through the gateway (the Link's selector or a ServiceExport) to get one mirror per pod"
    )]
    HeadlessRemoteDiscovery,
    #[error(
        "a headless Service is mirrored only while its endpoints have hostnames (a StatefulSet's pods); this one has none"
    )]
    NoHostnames,
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

/// How a mirror's traffic reaches the remote Service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Via {
    /// Through the remote gateway (the Link's `selector`, or a `ServiceExport`).
    Gateway,
    /// Straight to the remote pods, on a flat network (`remoteDiscoverySelector`).
    RemoteDiscovery,
}

impl From<crate::plan::WayIn> for Via {
    fn from(w: crate::plan::WayIn) -> Self {
        match w {
            crate::plan::WayIn::RemoteDiscovery => Via::RemoteDiscovery,
            crate::plan::WayIn::Selector | crate::plan::WayIn::ServiceExport => Via::Gateway,
        }
    }
}

/// Whether this object carries the labels that make it ours for this cluster.
pub fn is_ours(meta: &ObjectMeta, cluster: &str) -> bool {
    meta.labels.as_ref().is_some_and(|l| {
        l.get(labels::MIRRORED_SERVICE).map(String::as_str) == Some("true")
            && l.get(labels::CLUSTER_NAME).map(String::as_str) == Some(cluster)
    })
}

/// The mirror Service for `remote`. A remote-discovery mirror says so in a label
/// ([`labels::REMOTE_DISCOVERY`]) and names no gateway identity. The mirror of a headless
/// Service is headless too (and names no gateway identity: its endpoints are the mirrors of
/// its pods, [`headless::pod_service`]).
pub fn service(remote: &Service, plan: &Plan, via: Via) -> Result<Service, InvalidService> {
    let name = remote.metadata.name.as_deref().unwrap_or_default();
    let ns = remote.metadata.namespace.as_deref().unwrap_or_default();
    let spec = remote.spec.clone().unwrap_or_default();
    if spec.type_.as_deref() == Some("ExternalName") {
        return Err(InvalidService::ExternalName);
    }
    let headless = spec.cluster_ip.as_deref() == Some("None");
    match (headless, via) {
        (true, Via::RemoteDiscovery) => return Err(InvalidService::HeadlessRemoteDiscovery),
        (true, Via::Gateway) if !plan.mirror_headless => return Err(InvalidService::HeadlessOff),
        _ => {}
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
        .filter(|(k, _)| plan.copies_label(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    lbls.insert(labels::MIRRORED_SERVICE.into(), "true".into());
    lbls.insert(labels::CLUSTER_NAME.into(), plan.cluster.clone());
    if via == Via::RemoteDiscovery {
        lbls.insert(labels::REMOTE_DISCOVERY.into(), plan.cluster.clone());
    }
    let mut annos: BTreeMap<String, String> = remote
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| plan.copies_annotation(k))
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
    if via == Via::Gateway && !headless {
        annos.insert(
            labels::REMOTE_GATEWAY_IDENTITY.into(),
            plan.gateway_identity.clone(),
        );
    }
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
            cluster_ip: headless.then(|| "None".into()),
            ports: Some(ports),
            ..Default::default()
        }),
        status: None,
    };
    stamp(&mut svc.metadata, &svc.spec);
    Ok(svc)
}

/// Whether mirror `svc` is headless.
pub fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// The EndpointSlice of mirror `mirror`: the gateway's addresses at the gateway port.
pub fn slice(
    mirror: &Service,
    plan: &Plan,
    gateway: &GatewayView,
    remote_ready: bool,
) -> EndpointSlice {
    let name = mirror.metadata.name.clone().unwrap_or_default();
    let ports = ports_of(mirror).map(|p| (p.name.clone().unwrap_or_default(), p.protocol.clone()));
    let ns = mirror.metadata.namespace.clone();
    gateway_slice(
        name.clone(),
        &name,
        ns,
        ports,
        plan,
        gateway,
        remote_ready,
        None,
    )
}

/// The slice in which a Link lists its cluster's member `remote` of federated Service
/// `<svc>-federated`: `<svc>-federated-<cluster>`, the gateway at the gateway port, with the
/// gateway's identity and the member's FQDN (the authority the gateway routes by) on the
/// slice, since the federated Service has several.
pub fn federated_slice(
    remote: &crate::remote::RemoteSvc,
    plan: &Plan,
    gateway: &GatewayView,
    remote_ready: bool,
) -> EndpointSlice {
    let federated = labels::federated_name(&remote.name);
    let ports = remote.ports.iter().map(|p| {
        (
            p.name.as_deref().unwrap_or_default().to_string(),
            Some(p.protocol.as_deref().unwrap_or("TCP").to_string()),
        )
    });
    let fq = labels::service_fqdn(&remote.name, &remote.namespace, &plan.cluster_domain);
    gateway_slice(
        labels::federated_slice_name(&federated, &plan.cluster),
        &federated,
        Some(remote.namespace.to_string()),
        ports,
        plan,
        gateway,
        remote_ready,
        Some(fq),
    )
}

/// A slice named `name` of Service `service` that lists the gateway, ready while it is alive
/// and the remote Service has a ready endpoint; every port (name, protocol) is the gateway
/// port.
#[allow(clippy::too_many_arguments)]
fn gateway_slice(
    name: String,
    service: &str,
    namespace: Option<String>,
    ports: impl Iterator<Item = (String, Option<String>)>,
    plan: &Plan,
    gateway: &GatewayView,
    remote_ready: bool,
    remote_fq_name: Option<String>,
) -> EndpointSlice {
    let ready = gateway.alive && remote_ready;
    let v4 = gateway.addrs.iter().any(IpAddr::is_ipv4) || gateway.addrs.is_empty();
    let endpoints = gateway
        .addrs
        .iter()
        .filter(|a| a.is_ipv4() == v4)
        .map(|a| endpoint(*a, ready))
        .collect();
    let ports = ports
        .map(|(name, protocol)| EndpointPort {
            name: Some(name),
            port: Some(i32::from(plan.gateway_port)),
            protocol,
            app_protocol: None,
        })
        .collect();
    let mut annos = BTreeMap::new();
    annos.insert(
        labels::REMOTE_GATEWAY_IDENTITY.into(),
        plan.gateway_identity.clone(),
    );
    if let Some(fq) = remote_fq_name {
        annos.insert(labels::REMOTE_SVC_FQ_NAME.into(), fq);
    }
    let meta = ObjectMeta {
        name: Some(name),
        namespace,
        labels: Some(slice_labels(service, plan)),
        annotations: Some(annos),
        ..Default::default()
    };
    stamped_slice(meta, v4, endpoints, ports)
}

pub const MAX_SLICE_ENDPOINTS: usize = 1000;

/// Ready endpoints of a remote-discovery mirror that go in one EndpointSlice (or several,
/// past [`MAX_SLICE_ENDPOINTS`]): one TLS identity (or none), address family and port set.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RdGroup {
    /// The identity of the remote pods' service account; `None` for pods without a proxy.
    pub identity: Option<String>,
    pub ipv6: bool,
    pub ports: Box<[SlicePort]>,
    /// Sorted, without duplicates.
    pub addrs: Vec<IpAddr>,
}

/// Groups the ready endpoints of the remote slices of Service `ns/<svc>` by what their
/// mirror slices must say: a meshed pod (it carries the proxy annotation) has its service
/// account's identity, under the remote's control namespace and trust domain; a pod without
/// a proxy, or an endpoint that names no pod, has none. An endpoint whose pod is not known,
/// or whose service account is no identity, is left out: a client would otherwise connect
/// to a meshed pod without TLS. The result is sorted, so it is the same for the same input.
pub fn rd_groups(
    remote: &[Arc<RdSlice>],
    ns: &str,
    plan: &Plan,
    pod: impl Fn(&str) -> Option<PodMeta>,
) -> Vec<RdGroup> {
    type GroupKey = (Option<String>, bool, Box<[SlicePort]>);
    let mut groups: BTreeMap<GroupKey, BTreeSet<IpAddr>> = BTreeMap::new();
    for slice in remote {
        for ep in slice.endpoints.iter() {
            let identity = match ep.pod.as_deref() {
                None => None,
                Some(name) => match pod(name) {
                    None => continue,
                    Some(p) if !p.meshed => None,
                    Some(p) => match plan.remote_identity(&p.service_account, ns) {
                        Some(id) => Some(id.to_string()),
                        None => continue,
                    },
                },
            };
            groups
                .entry((identity, slice.ipv6, slice.ports.clone()))
                .or_default()
                .insert(ep.addr);
        }
    }
    groups
        .into_iter()
        .map(|((identity, ipv6, ports), addrs)| RdGroup {
            identity,
            ipv6,
            ports,
            addrs: addrs.into_iter().collect(),
        })
        .collect()
}

/// 64-bit FNV-1a: stable across builds and Rust versions, unlike `DefaultHasher`; names
/// derived from it must not change when the controller is upgraded.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(&[0xff]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The name of a remote-discovery mirror's slice for `group` (its `chunk`-th, past 1000
/// endpoints): `<mirror>-<10 hex digits of the identity, family and ports>[-<chunk>]`, so
/// the same endpoints keep the same slice as they come and go.
pub fn rd_slice_name(mirror: &str, group: &RdGroup, chunk: usize) -> String {
    let ports: Vec<String> = group
        .ports
        .iter()
        .map(|p| {
            format!(
                "{}/{}/{}/{}",
                p.name.as_deref().unwrap_or_default(),
                p.port,
                p.protocol.as_deref().unwrap_or_default(),
                p.app_protocol.as_deref().unwrap_or_default()
            )
        })
        .collect();
    let mut parts: Vec<&[u8]> = vec![
        group.identity.as_deref().unwrap_or_default().as_bytes(),
        if group.ipv6 { b"IPv6" } else { b"IPv4" },
    ];
    parts.extend(ports.iter().map(|p| p.as_bytes()));
    let h = fnv1a(&parts) & 0xff_ffff_ffff;
    match chunk {
        0 => format!("{mirror}-{h:010x}"),
        n => format!("{mirror}-{h:010x}-{n}"),
    }
}

/// The EndpointSlices of remote-discovery mirror `mirror`: the remote pods' own addresses
/// and ports, one slice per [`RdGroup`] (split past [`MAX_SLICE_ENDPOINTS`]), with
/// [`labels::REMOTE_IDENTITY`] on the slices of meshed pods. All listed endpoints are ready:
/// only ready remote endpoints are kept. The gateway plays no part.
pub fn rd_slices(mirror: &Service, plan: &Plan, groups: &[RdGroup]) -> Vec<EndpointSlice> {
    let name = mirror.metadata.name.clone().unwrap_or_default();
    let ns = mirror.metadata.namespace.clone().unwrap_or_default();
    rd_slices_of(&name, &name, &ns, plan, groups)
}

/// The slices in which a Link lists its cluster's member `remote` of federated Service
/// `<svc>-federated` pod to pod (it is selected for remote discovery too): named
/// `<svc>-federated-<cluster>-<hash>`, as [`rd_slices`] names a mirror's.
pub fn federated_rd_slices(
    remote: &crate::remote::RemoteSvc,
    plan: &Plan,
    groups: &[RdGroup],
) -> Vec<EndpointSlice> {
    let federated = labels::federated_name(&remote.name);
    let prefix = labels::federated_slice_name(&federated, &plan.cluster);
    rd_slices_of(&federated, &prefix, &remote.namespace, plan, groups)
}

/// Remote-discovery slices of Service `service` in `ns`, named `<prefix>-<hash>[-<n>]`.
fn rd_slices_of(
    service: &str,
    prefix: &str,
    ns: &str,
    plan: &Plan,
    groups: &[RdGroup],
) -> Vec<EndpointSlice> {
    let mut out = Vec::new();
    for g in groups {
        for (chunk, addrs) in g.addrs.chunks(MAX_SLICE_ENDPOINTS).enumerate() {
            let endpoints = addrs.iter().map(|a| endpoint(*a, true)).collect();
            let ports = g
                .ports
                .iter()
                .map(|p| EndpointPort {
                    name: p.name.as_deref().map(String::from),
                    port: Some(p.port),
                    protocol: p.protocol.as_deref().map(String::from),
                    app_protocol: p.app_protocol.as_deref().map(String::from),
                })
                .collect();
            let mut lbls = slice_labels(service, plan);
            lbls.insert(labels::REMOTE_DISCOVERY.into(), plan.cluster.clone());
            let annos = g
                .identity
                .iter()
                .map(|id| (labels::REMOTE_IDENTITY.to_string(), id.clone()))
                .collect();
            let meta = ObjectMeta {
                name: Some(rd_slice_name(prefix, g, chunk)),
                namespace: Some(ns.to_string()),
                labels: Some(lbls),
                annotations: Some(annos),
                ..Default::default()
            };
            out.push(stamped_slice(meta, !g.ipv6, endpoints, ports));
        }
    }
    out
}

pub(crate) fn stamp<T: serde::Serialize>(meta: &mut ObjectMeta, body: &T) {
    stamp_with(meta, body)
}

/// A mirror slice of `v4` (or IPv6) addresses, stamped with its [`SPEC_HASH`].
fn stamped_slice(
    metadata: ObjectMeta,
    v4: bool,
    endpoints: Vec<Endpoint>,
    ports: Vec<EndpointPort>,
) -> EndpointSlice {
    let mut es = EndpointSlice {
        metadata,
        address_type: if v4 { "IPv4" } else { "IPv6" }.into(),
        endpoints,
        ports: Some(ports),
    };
    let body = (&es.address_type, &es.endpoints, &es.ports);
    stamp_with(&mut es.metadata, &body);
    es
}

/// An endpoint at `addr`, ready and serving or neither.
fn endpoint(addr: IpAddr, ready: bool) -> Endpoint {
    Endpoint {
        addresses: vec![addr.to_string()],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(ready),
            terminating: Some(false),
        }),
        ..Default::default()
    }
}

/// The ports of Service `svc`.
fn ports_of(svc: &Service) -> impl Iterator<Item = &ServicePort> {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
}

/// The labels of every slice of mirror `service`.
fn slice_labels(service: &str, plan: &Plan) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert(SERVICE_NAME_LABEL.into(), service.to_owned());
    l.insert(MANAGED_BY_LABEL.into(), FIELD_MANAGER.into());
    l.insert(labels::MIRRORED_SERVICE.into(), "true".into());
    l.insert(labels::CLUSTER_NAME.into(), plan.cluster.clone());
    l
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

/// The spec hash ([`SPEC_HASH`]) an object carries; empty when it carries none.
pub fn spec_hash(m: &ObjectMeta) -> String {
    m.annotations
        .as_ref()
        .and_then(|a| a.get(SPEC_HASH))
        .cloned()
        .unwrap_or_default()
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

pub mod headless;
#[cfg(test)]
pub(crate) mod tests;
