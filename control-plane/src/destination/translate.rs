//! From a [`View`] to the proxy API: which addresses a Get stream should hold for one port
//! ([`endpoints`]), and the messages that move a proxy from what it was last sent to that
//! ([`Diff`]). Pure functions; the unit tests below hold the protocol semantics.
//!
//! - A meshed pod (it carries the proxy annotation) gets its service-account identity and the
//!   H2 hint, so proxies upgrade HTTP/1 to HTTP/2 between themselves; on an opaque port the
//!   hint is Opaque with `opaque_transport` naming the proxy's inbound port.
//! - A mirror's endpoints are remote gateways: identity from the gateway-identity annotation
//!   (slice first, then Service) and the authority override `<remote-fq-name>:<port>`.
//! - A remote-discovery mirror's endpoints are the remote pods themselves: each slice names
//!   its endpoints' identity (meshed pods: TLS and the H2 hint, as for a local meshed pod);
//!   a slice without one lists pods without a proxy (plain). No authority override: the
//!   remote pod's proxy serves the target port itself.
//! - A federated Service's endpoints are its members': each remote member's slice names its
//!   gateway's identity and the member's FQDN (the authority override), or lists remote pods
//!   (remote discovery); its local member's slices list local pods, as for any Service. One
//!   set, so a proxy balances across clusters by peak-EWMA like any other.
//! - A lookup of one pod by hostname (`<host>.<svc>.<ns>.svc.<domain>`) gets only the
//!   endpoints with that hostname.
//! - Only ready endpoints are sent. An empty set is `NoEndpoints { exists }`, `exists` saying
//!   whether the Service is there at all.

use super::DestinationConfig;
use super::index::View;
use super::model::{PodInfo, ServiceInfo, SliceInfo};
use linkerd2_proxy_api::destination as pb;
use linkerd2_proxy_api::net::TcpAddress;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use strait_core::Identity;

/// The weight Linkerd gives every endpoint.
pub const DEFAULT_WEIGHT: u32 = 10_000;

/// What a stream should hold for one port of one target.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Endpoints {
    /// Whether the target (Service or pod) exists.
    pub exists: bool,
    pub addrs: BTreeMap<SocketAddr, pb::WeightedAddr>,
    /// Labels for the whole set (`namespace`, `service`).
    pub set_labels: HashMap<String, String>,
}

/// The endpoints of `view` for the requested `port` (only those with `hostname`, if given).
pub fn endpoints(
    view: &View,
    port: u16,
    hostname: Option<&str>,
    cfg: &DestinationConfig,
) -> Endpoints {
    match view {
        View::Pod { ip, pod } => {
            let Some(((ns, name), pod)) = pod else {
                return Endpoints::default();
            };
            let addr = SocketAddr::new(*ip, port);
            let mut out = Endpoints {
                exists: true,
                set_labels: HashMap::from([("namespace".to_owned(), ns.clone())]),
                ..Default::default()
            };
            out.addrs
                .insert(addr, pod_addr(addr, ns, name, pod, &[], cfg));
            out
        }
        View::Service {
            key,
            service,
            slices,
            pods,
        } => {
            let Some(svc) = service else {
                return Endpoints::default();
            };
            let mut out = Endpoints {
                exists: true,
                set_labels: HashMap::from([
                    ("namespace".to_owned(), key.namespace.clone()),
                    ("service".to_owned(), key.name.clone()),
                ]),
                ..Default::default()
            };
            // A port the Service does not declare is taken as the target port itself.
            let svc_port = svc.port(port);
            for slice in slices {
                let target = match svc_port {
                    Some(p) => match slice.port(&p.name) {
                        Some(t) => t,
                        None => continue,
                    },
                    None => port,
                };
                let wanted = |e: &&super::model::SliceEndpoint| {
                    e.ready && hostname.is_none_or(|h| e.hostname.as_deref() == Some(h))
                };
                // A federated Service's local member's slice lists local pods.
                let local = svc.mirror.is_none() || slice.service != *key;
                for ep in slice.endpoints.iter().filter(wanted) {
                    for ip in &ep.ips {
                        let addr = SocketAddr::new(*ip, target);
                        let wa = match &svc.mirror {
                            Some(m) if !local && (m.remote_discovery || slice.remote_discovery) => {
                                remote_pod_addr(addr, slice.identity.as_deref())
                            }
                            Some(_) if !local => gateway_addr(addr, port, svc, slice),
                            _ => match ep.pod.as_ref().and_then(|n| Some((n, pods.get(n)?))) {
                                Some((name, pod)) => pod_addr(
                                    addr,
                                    &key.namespace,
                                    name,
                                    pod,
                                    &svc.opaque_ports,
                                    cfg,
                                ),
                                None => plain_addr(addr),
                            },
                        };
                        out.addrs.insert(addr, wa);
                    }
                }
            }
            out
        }
    }
}

fn plain_addr(addr: SocketAddr) -> pb::WeightedAddr {
    pb::WeightedAddr {
        addr: Some(TcpAddress::from(addr)),
        weight: DEFAULT_WEIGHT,
        ..Default::default()
    }
}

fn tls_identity(name: &str) -> pb::TlsIdentity {
    let id = pb::tls_identity::DnsLikeIdentity {
        name: name.to_owned(),
    };
    pb::TlsIdentity {
        server_name: Some(id.clone()),
        strategy: Some(pb::tls_identity::Strategy::DnsLikeIdentity(id)),
    }
}

fn h2_hint() -> pb::ProtocolHint {
    pb::ProtocolHint {
        protocol: Some(pb::protocol_hint::Protocol::H2(pb::protocol_hint::H2 {})),
        opaque_transport: None,
    }
}

fn pod_addr(
    addr: SocketAddr,
    ns: &str,
    name: &str,
    pod: &PodInfo,
    svc_opaque_ports: &[u16],
    cfg: &DestinationConfig,
) -> pb::WeightedAddr {
    let mut wa = plain_addr(addr);
    wa.metric_labels.insert("pod".to_owned(), name.to_owned());
    wa.metric_labels
        .insert("serviceaccount".to_owned(), pod.service_account.clone());
    if !pod.meshed {
        return wa;
    }
    match Identity::new(
        &pod.service_account,
        ns,
        &cfg.control_namespace,
        &cfg.trust_domain,
    ) {
        Ok(id) => wa.tls_identity = Some(tls_identity(&id.to_string())),
        Err(error) => {
            tracing::debug!(%error, pod = %name, namespace = %ns, "pod has no valid identity; sending it without TLS");
            return wa;
        }
    }
    let port = addr.port();
    let opaque = pod.opaque_ports.contains(&port) || svc_opaque_ports.contains(&port);
    wa.protocol_hint = Some(if opaque {
        pb::ProtocolHint {
            protocol: Some(pb::protocol_hint::Protocol::Opaque(
                pb::protocol_hint::Opaque {},
            )),
            opaque_transport: Some(pb::protocol_hint::OpaqueTransport {
                inbound_port: u32::from(cfg.inbound_port),
            }),
        }
    } else {
        h2_hint()
    });
    wa
}

fn gateway_addr(
    addr: SocketAddr,
    svc_port: u16,
    svc: &ServiceInfo,
    slice: &SliceInfo,
) -> pb::WeightedAddr {
    let mut wa = plain_addr(addr);
    let mirror = svc.mirror.as_ref();
    let identity = slice
        .identity
        .as_deref()
        .or(mirror.and_then(|m| m.gateway_identity.as_deref()));
    if let Some(id) = identity.filter(|id| !id.is_empty()) {
        wa.tls_identity = Some(tls_identity(id));
        // The gateway is a proxy: it takes the HTTP/2 upgrade like any meshed pod.
        wa.protocol_hint = Some(h2_hint());
    }
    let fq = slice
        .remote_fq_name
        .as_deref()
        .or(mirror.and_then(|m| m.remote_fq_name.as_deref()));
    if let Some(fq) = fq {
        wa.authority_override = Some(pb::AuthorityOverride {
            authority_override: format!("{fq}:{svc_port}"),
        });
    }
    wa
}

/// A remote pod listed by a remote-discovery mirror, with its slice's identity if any.
fn remote_pod_addr(addr: SocketAddr, identity: Option<&str>) -> pb::WeightedAddr {
    let mut wa = plain_addr(addr);
    if let Some(id) = identity.filter(|id| !id.is_empty()) {
        wa.tls_identity = Some(tls_identity(id));
        wa.protocol_hint = Some(h2_hint());
    }
    wa
}

/// What one stream last told its proxy, and how to move it on.
#[derive(Debug, Default)]
pub struct Diff {
    sent: BTreeMap<SocketAddr, pb::WeightedAddr>,
    /// `Some(exists)` when the last message was `NoEndpoints`.
    last_empty: Option<bool>,
}

impl Diff {
    /// The updates that take the proxy from the last state to `next` (none if equal).
    pub fn update(&mut self, next: Endpoints) -> Vec<pb::Update> {
        use pb::update::Update as U;
        let mut out = Vec::new();
        if next.addrs.is_empty() {
            if self.last_empty != Some(next.exists) {
                out.push(pb::Update {
                    update: Some(U::NoEndpoints(pb::NoEndpoints {
                        exists: next.exists,
                    })),
                });
                self.last_empty = Some(next.exists);
            }
            self.sent.clear();
            return out;
        }
        self.last_empty = None;
        let added: Vec<pb::WeightedAddr> = next
            .addrs
            .iter()
            .filter(|(a, wa)| self.sent.get(a) != Some(wa))
            .map(|(_, wa)| wa.clone())
            .collect();
        let removed: Vec<TcpAddress> = self
            .sent
            .keys()
            .filter(|a| !next.addrs.contains_key(a))
            .map(|a| TcpAddress::from(*a))
            .collect();
        // Adds first, so that the proxy never holds an empty set in between.
        if !added.is_empty() {
            out.push(pb::Update {
                update: Some(U::Add(pb::WeightedAddrSet {
                    addrs: added,
                    metric_labels: next.set_labels.clone(),
                })),
            });
        }
        if !removed.is_empty() {
            out.push(pb::Update {
                update: Some(U::Remove(pb::AddrSet { addrs: removed })),
            });
        }
        self.sent = next.addrs;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::authority::ServiceKey;
    use super::super::model::{MirrorInfo, PortInfo, SliceEndpoint, SliceInfo};
    use super::*;
    use pb::update::Update as U;
    use std::sync::Arc;

    fn cfg() -> DestinationConfig {
        DestinationConfig::default()
    }

    fn svc(mirror: Option<MirrorInfo>) -> Arc<ServiceInfo> {
        Arc::new(ServiceInfo {
            cluster_ips: vec![],
            ports: vec![PortInfo {
                name: "http".into(),
                port: 80,
            }],
            external_name: false,
            mirror,
            opaque_ports: vec![],
            federated_local_member: None,
        })
    }

    fn slice(eps: &[(&str, bool, Option<&str>)], target: u16) -> Arc<SliceInfo> {
        Arc::new(SliceInfo {
            service: ServiceKey::new("shop", "web"),
            ports: vec![PortInfo {
                name: "http".into(),
                port: target,
            }],
            endpoints: eps
                .iter()
                .map(|(ip, ready, pod)| SliceEndpoint {
                    ips: vec![ip.parse().unwrap()],
                    ready: *ready,
                    pod: pod.map(str::to_owned),
                    hostname: pod.map(str::to_owned),
                })
                .collect(),
            identity: None,
            remote_discovery: false,
            remote_fq_name: None,
        })
    }

    fn pod(meshed: bool, opaque: &[u16]) -> Arc<PodInfo> {
        Arc::new(PodInfo {
            ips: vec![],
            service_account: "web".into(),
            meshed,
            opaque_ports: opaque.to_vec(),
        })
    }

    fn view(
        service: Option<Arc<ServiceInfo>>,
        slices: Vec<Arc<SliceInfo>>,
        pods: &[(&str, Arc<PodInfo>)],
    ) -> View {
        View::Service {
            key: ServiceKey::new("shop", "web"),
            service,
            slices,
            pods: pods
                .iter()
                .map(|(n, p)| (n.to_string(), p.clone()))
                .collect(),
        }
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn meshed_pods_get_identity_and_h2() {
        let v = view(
            Some(svc(None)),
            vec![slice(
                &[
                    ("198.18.0.1", true, Some("web-1")),
                    ("198.18.0.2", true, Some("web-2")),
                    ("198.18.0.3", false, Some("web-3")),
                ],
                8080,
            )],
            &[("web-1", pod(true, &[])), ("web-2", pod(false, &[]))],
        );
        let eps = endpoints(&v, 80, None, &cfg());
        assert!(eps.exists);
        assert_eq!(eps.addrs.len(), 2, "only ready endpoints");
        let meshed = &eps.addrs[&sa("198.18.0.1:8080")];
        let id = meshed.tls_identity.as_ref().unwrap();
        assert_eq!(
            id.server_name.as_ref().unwrap().name,
            "web.shop.serviceaccount.identity.strait.cluster.local"
        );
        assert_eq!(
            meshed.protocol_hint.unwrap().protocol,
            Some(pb::protocol_hint::Protocol::H2(pb::protocol_hint::H2 {}))
        );
        assert_eq!(meshed.weight, DEFAULT_WEIGHT);
        let plain = &eps.addrs[&sa("198.18.0.2:8080")];
        assert!(plain.tls_identity.is_none() && plain.protocol_hint.is_none());
    }

    #[test]
    fn a_pod_by_hostname_gets_its_own_endpoint_only() {
        let v = view(
            Some(svc(None)),
            vec![slice(
                &[
                    ("198.18.0.1", true, Some("web-0")),
                    ("198.18.0.2", true, Some("web-1")),
                    ("198.18.0.3", false, Some("web-2")),
                ],
                8080,
            )],
            &[("web-0", pod(true, &[])), ("web-1", pod(true, &[]))],
        );
        let one = endpoints(&v, 80, Some("web-1"), &cfg());
        assert!(one.exists);
        assert_eq!(
            one.addrs.keys().copied().collect::<Vec<_>>(),
            [sa("198.18.0.2:8080")]
        );
        assert!(one.addrs[&sa("198.18.0.2:8080")].tls_identity.is_some());
        // Not ready, or no such pod: the Service exists, with no endpoint for that name.
        for name in ["web-2", "web-9"] {
            let none = endpoints(&v, 80, Some(name), &cfg());
            assert!(none.exists && none.addrs.is_empty(), "{name}");
        }
    }

    #[test]
    fn opaque_ports_use_opaque_transport() {
        let v = view(
            Some(svc(None)),
            vec![slice(&[("198.18.0.1", true, Some("web-1"))], 3306)],
            &[("web-1", pod(true, &[3306]))],
        );
        let eps = endpoints(&v, 80, None, &cfg());
        let hint = eps.addrs[&sa("198.18.0.1:3306")].protocol_hint.unwrap();
        assert_eq!(hint.opaque_transport.unwrap().inbound_port, 4143);
        assert!(matches!(
            hint.protocol,
            Some(pb::protocol_hint::Protocol::Opaque(_))
        ));
    }

    #[test]
    fn mirrors_point_at_the_gateway() {
        let mirror = MirrorInfo {
            gateway_identity: Some(
                "strait-gateway.strait-multicluster.serviceaccount.identity.strait.east".into(),
            ),
            remote_fq_name: Some("web.shop.svc.east.local".into()),
            remote_discovery: false,
        };
        let v = view(
            Some(svc(Some(mirror))),
            vec![slice(&[("198.18.64.1", true, None)], 4143)],
            &[],
        );
        let eps = endpoints(&v, 80, None, &cfg());
        let gw = &eps.addrs[&sa("198.18.64.1:4143")];
        assert_eq!(
            gw.tls_identity
                .as_ref()
                .unwrap()
                .server_name
                .as_ref()
                .unwrap()
                .name,
            "strait-gateway.strait-multicluster.serviceaccount.identity.strait.east"
        );
        assert_eq!(
            gw.authority_override.as_ref().unwrap().authority_override,
            "web.shop.svc.east.local:80"
        );
    }

    #[test]
    fn a_federated_service_lists_every_member_with_its_own_identity_and_authority() {
        let federated = MirrorInfo {
            gateway_identity: None,
            remote_fq_name: None,
            remote_discovery: false,
        };
        let mut service = (*svc(Some(federated))).clone();
        service.federated_local_member = Some("web".into());
        let east_gw = "strait-gateway.strait-multicluster.serviceaccount.identity.strait.east";
        let mut east = (*slice(&[("198.18.64.1", true, None)], 4143)).clone();
        east.service = ServiceKey::new("shop", "web-federated");
        east.identity = Some(east_gw.into());
        east.remote_fq_name = Some("web.shop.svc.east.local".into());
        let north_pod = "web.shop.serviceaccount.identity.strait.north";
        let mut north = (*slice(&[("198.18.65.7", true, None)], 8080)).clone();
        north.service = ServiceKey::new("shop", "web-federated");
        north.identity = Some(north_pod.into());
        north.remote_discovery = true;
        // The local member's own slice (Service `web`), listing a meshed local pod.
        let local = slice(&[("198.18.0.9", true, Some("web-1"))], 8080);
        let v = View::Service {
            key: ServiceKey::new("shop", "web-federated"),
            service: Some(Arc::new(service)),
            slices: vec![Arc::new(east), Arc::new(north), local],
            pods: BTreeMap::from([("web-1".to_owned(), pod(true, &[]))]),
        };
        let eps = endpoints(&v, 80, None, &cfg());
        assert_eq!(eps.addrs.len(), 3);
        let id = |a: &pb::WeightedAddr| {
            a.tls_identity
                .as_ref()
                .and_then(|t| t.server_name.as_ref())
                .map(|n| n.name.clone())
        };
        let gw = &eps.addrs[&sa("198.18.64.1:4143")];
        assert_eq!(id(gw).as_deref(), Some(east_gw));
        assert_eq!(
            gw.authority_override.as_ref().unwrap().authority_override,
            "web.shop.svc.east.local:80"
        );
        let remote = &eps.addrs[&sa("198.18.65.7:8080")];
        assert_eq!(id(remote).as_deref(), Some(north_pod));
        assert!(remote.authority_override.is_none());
        let local = &eps.addrs[&sa("198.18.0.9:8080")];
        assert_eq!(
            id(local).as_deref(),
            Some("web.shop.serviceaccount.identity.strait.cluster.local")
        );
        assert!(local.authority_override.is_none());
        assert_eq!(local.metric_labels["pod"], "web-1");
    }

    #[test]
    fn remote_discovery_mirrors_point_at_the_remote_pods() {
        let mirror = MirrorInfo {
            gateway_identity: None,
            remote_fq_name: Some("web.shop.svc.cluster.local".into()),
            remote_discovery: true,
        };
        let pod_id = "web.shop.serviceaccount.identity.strait.cluster.local";
        let mut meshed = (*slice(&[("198.18.64.2", true, None)], 8080)).clone();
        meshed.identity = Some(pod_id.into());
        let plain = slice(
            &[("198.18.64.3", true, None), ("198.18.64.4", false, None)],
            8080,
        );
        let v = view(Some(svc(Some(mirror))), vec![Arc::new(meshed), plain], &[]);
        let eps = endpoints(&v, 80, None, &cfg());
        assert_eq!(eps.addrs.len(), 2, "only ready endpoints");
        let m = &eps.addrs[&sa("198.18.64.2:8080")];
        assert_eq!(
            m.tls_identity
                .as_ref()
                .unwrap()
                .server_name
                .as_ref()
                .unwrap()
                .name,
            pod_id
        );
        assert_eq!(
            m.protocol_hint.unwrap().protocol,
            Some(pb::protocol_hint::Protocol::H2(pb::protocol_hint::H2 {}))
        );
        assert!(
            m.authority_override.is_none(),
            "the pod serves its own port"
        );
        let p = &eps.addrs[&sa("198.18.64.3:8080")];
        assert!(p.tls_identity.is_none() && p.protocol_hint.is_none());
        assert!(p.authority_override.is_none());
    }

    #[test]
    fn unknown_port_is_its_own_target_and_missing_service_does_not_exist() {
        let v = view(
            Some(svc(None)),
            vec![slice(&[("198.18.0.1", true, None)], 8080)],
            &[],
        );
        assert!(
            endpoints(&v, 9000, None, &cfg())
                .addrs
                .contains_key(&sa("198.18.0.1:9000"))
        );
        let gone = view(None, vec![], &[]);
        assert_eq!(endpoints(&gone, 80, None, &cfg()), Endpoints::default());
    }

    fn set(addrs: &[&str]) -> Endpoints {
        Endpoints {
            exists: true,
            addrs: addrs.iter().map(|a| (sa(a), plain_addr(sa(a)))).collect(),
            set_labels: HashMap::new(),
        }
    }

    #[test]
    fn diffs() {
        let mut d = Diff::default();
        let first = d.update(set(&["198.18.0.1:80", "198.18.0.2:80"]));
        assert!(
            matches!(&first[..], [pb::Update { update: Some(U::Add(s)) }] if s.addrs.len() == 2)
        );
        assert!(
            d.update(set(&["198.18.0.1:80", "198.18.0.2:80"]))
                .is_empty()
        );
        let next = d.update(set(&["198.18.0.1:80", "198.18.0.3:80"]));
        assert!(matches!(&next[..], [
            pb::Update { update: Some(U::Add(a)) },
            pb::Update { update: Some(U::Remove(r)) },
        ] if a.addrs.len() == 1 && r.addrs.len() == 1));
        let empty = d.update(set(&[]));
        assert!(matches!(
            &empty[..],
            [pb::Update {
                update: Some(U::NoEndpoints(pb::NoEndpoints { exists: true }))
            }]
        ));
        assert!(d.update(set(&[])).is_empty());
        let gone = d.update(Endpoints::default());
        assert!(matches!(
            &gone[..],
            [pb::Update {
                update: Some(U::NoEndpoints(pb::NoEndpoints { exists: false }))
            }]
        ));
        let back = d.update(set(&["198.18.0.1:80"]));
        assert!(
            matches!(&back[..], [pb::Update { update: Some(U::Add(a)) }] if a.addrs.len() == 1)
        );
    }
}
