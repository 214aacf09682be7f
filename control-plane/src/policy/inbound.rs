//! Inbound translation: a pod's port and the cached resources → the `inbound.Server` a proxy
//! enforces. Pure functions over an [`index::State`](super::index::State); no I/O.
//!
//! - A port that a Server selects (the oldest, when several do) has that Server's protocol and
//!   the authorizations of every *accepted* AuthorizationPolicy that targets the Server or its
//!   namespace, plus the Server's `accessPolicy` when it is not `deny`.
//! - Any other port has the default policy: the pod's annotation, else its namespace's, else
//!   the control plane's setting; opaque ports (annotation) are opaque, the rest detected.
//! - HTTP answers carry the authorizations on a default route (the proxy authorizes HTTP per
//!   route, TCP with the Server's list) and, for the pod's HTTP probe paths on that port, a
//!   `probe` route open to everyone, so kubelet keeps probing under any policy.

use super::PolicyConfig;
use super::index::State;
use super::model::{AuthzPolicyInfo, ObjKey};
use ipnet::IpNet;
use linkerd2_proxy_api::http_route as route_pb;
use linkerd2_proxy_api::inbound as pb;
use linkerd2_proxy_api::meta;
use std::collections::HashMap;
use strait_k8s_api::policy::{DefaultPolicy, GROUP, ProxyProtocol};

/// Why a port has no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("workload {0:?} is neither `<namespace>:<pod>` nor {{\"ns\":…,\"pod\":…}}")]
    BadWorkload(String),
    #[error("port {0} is not in 1-65535")]
    BadPort(u32),
    #[error("pod {}/{} not found", .0.0, .0.1)]
    PodNotFound(ObjKey),
}

/// Parses a `PortSpec.workload`: `<namespace>:<pod>` or Linkerd's JSON
/// `{"ns":"<namespace>","pod":"<pod>"}`.
pub fn parse_workload(workload: &str) -> Result<ObjKey, LookupError> {
    let bad = || LookupError::BadWorkload(workload.to_owned());
    let trimmed = workload.trim();
    if trimmed.starts_with('{') {
        #[derive(serde::Deserialize)]
        struct Json {
            ns: String,
            pod: String,
        }
        let j: Json = serde_json::from_str(trimmed).map_err(|_| bad())?;
        if j.ns.is_empty() || j.pod.is_empty() {
            return Err(bad());
        }
        return Ok((j.ns, j.pod));
    }
    match trimmed.split_once(':') {
        Some((ns, pod)) if !ns.is_empty() && !pod.is_empty() && !pod.contains(':') => {
            Ok((ns.to_owned(), pod.to_owned()))
        }
        _ => Err(bad()),
    }
}

/// The Server a proxy enforces on `port` of pod `key`.
pub fn server(
    state: &State,
    key: &ObjKey,
    port: u32,
    cfg: &PolicyConfig,
) -> Result<pb::Server, LookupError> {
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or(LookupError::BadPort(port))?;
    let pod = state
        .pods
        .get(key)
        .ok_or_else(|| LookupError::PodNotFound(key.clone()))?;
    let ns = &key.0;
    let selected = state
        .servers
        .iter()
        .filter(|((s_ns, _), s)| s_ns == ns && s.selects(pod, port))
        .min_by(|(ka, a), (kb, b)| (&a.created, &ka.1).cmp(&(&b.created, &kb.1)));
    let probes = pod.probes.get(&port).map(Vec::as_slice).unwrap_or_default();
    Ok(match selected {
        Some(((_, name), srv)) => {
            let mut authz = server_authorizations(state, ns, name, cfg);
            if srv.access_policy != DefaultPolicy::Deny {
                authz.extend(default_authorizations(srv.access_policy, cfg));
            }
            pb::Server {
                protocol: Some(protocol(srv.protocol, &authz, probes, cfg)),
                server_ips: vec![],
                authorizations: authz,
                labels: labels(GROUP, "server", name),
            }
        }
        None => {
            let policy = pod
                .default_policy
                .or_else(|| state.namespaces.get(ns).and_then(|n| n.default_policy))
                .unwrap_or(cfg.default_policy);
            let authz = default_authorizations(policy, cfg);
            let proto = if pod.opaque_ports.contains(&port) {
                ProxyProtocol::Opaque
            } else {
                ProxyProtocol::Unknown
            };
            pb::Server {
                protocol: Some(protocol(proto, &authz, probes, cfg)),
                server_ips: vec![],
                authorizations: authz,
                labels: labels("", "default", policy.as_str()),
            }
        }
    })
}

fn labels(group: &str, kind: &str, name: &str) -> HashMap<String, String> {
    [("group", group), ("kind", kind), ("name", name)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The authorizations of the accepted AuthorizationPolicies that target Server `name` (or the
/// namespace), in name order.
fn server_authorizations(
    state: &State,
    ns: &str,
    name: &str,
    cfg: &PolicyConfig,
) -> Vec<pb::Authz> {
    let mut policies: Vec<_> = state
        .authz_policies
        .iter()
        .filter(|((p_ns, _), p)| {
            p_ns == ns
                && match p.target.kind.as_str() {
                    "Server" => p.target.name == name,
                    "Namespace" => p.target.name == ns,
                    _ => false,
                }
        })
        .collect();
    policies.sort_by(|a, b| a.0.cmp(b.0));
    policies
        .into_iter()
        .filter_map(|((p_ns, p_name), p)| {
            let resolved = resolve(state, p_ns, p, cfg).ok()?;
            Some(resolved.authz(p_ns, p_name))
        })
        .collect()
}

/// Why an AuthorizationPolicy is not accepted: the `Accepted=False` reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotAccepted {
    pub reason: &'static str,
    pub message: String,
}

/// What an accepted AuthorizationPolicy allows.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    /// From its NetworkAuthentication; all addresses without one.
    pub networks: Vec<(IpNet, Vec<IpNet>)>,
    /// `None`: no identity required; else the identities and suffixes allowed.
    pub clients: Option<(Vec<String>, Vec<Vec<String>>)>,
}

impl Resolved {
    fn authz(&self, ns: &str, name: &str) -> pb::Authz {
        let authentication = match &self.clients {
            None => unauthenticated(),
            Some((ids, suffixes)) => mesh(ids.clone(), suffixes.clone()),
        };
        pb::Authz {
            networks: self.networks.iter().map(network).collect(),
            authentication: Some(authentication),
            labels: labels(GROUP, "authorizationpolicy", name),
            metadata: Some(meta::Metadata {
                kind: Some(meta::metadata::Kind::Resource(meta::Resource {
                    group: GROUP.to_owned(),
                    kind: "authorizationpolicy".to_owned(),
                    name: name.to_owned(),
                    namespace: ns.to_owned(),
                    ..Default::default()
                })),
            }),
        }
    }
}

/// Resolves an AuthorizationPolicy's references, or says why it allows nothing.
pub fn resolve(
    state: &State,
    ns: &str,
    p: &AuthzPolicyInfo,
    cfg: &PolicyConfig,
) -> Result<Resolved, NotAccepted> {
    let not = |reason, message: String| NotAccepted { reason, message };
    let t = &p.target;
    let group = t.group.as_deref().unwrap_or_default();
    match t.kind.as_str() {
        "Server" if group == GROUP || group.is_empty() => {
            if !state.servers.contains_key(&(ns.to_owned(), t.name.clone())) {
                return Err(not(
                    "TargetNotFound",
                    format!("Server {ns}/{} does not exist", t.name),
                ));
            }
        }
        "Namespace" if group.is_empty() || group == "core" => {
            if t.name != ns {
                return Err(not(
                    "TargetNotFound",
                    format!(
                        "a policy may target only its own namespace ({ns}), not {}",
                        t.name
                    ),
                ));
            }
        }
        _ => {
            return Err(not(
                "TargetNotFound",
                format!(
                    "target {} of group {group:?} is not a Server ({GROUP}) or Namespace",
                    t.kind
                ),
            ));
        }
    }
    let mut networks: Option<Vec<(IpNet, Vec<IpNet>)>> = None;
    let mut mesh_tls: Option<(Vec<String>, Vec<Vec<String>>)> = None;
    let mut accounts: Vec<String> = Vec::new();
    for r in &p.authentications {
        let r_ns = r.namespace.clone().unwrap_or_else(|| ns.to_owned());
        let group = r.group.as_deref().unwrap_or_default();
        let key = (r_ns.clone(), r.name.clone());
        match r.kind.as_str() {
            "NetworkAuthentication" if group == GROUP || group.is_empty() => {
                let n = state.networks.get(&key).ok_or_else(|| {
                    not(
                        "AuthenticationNotFound",
                        format!("NetworkAuthentication {r_ns}/{} does not exist", r.name),
                    )
                })?;
                let nets = n.networks.clone().map_err(|e| {
                    not(
                        "InvalidAuthentication",
                        format!("NetworkAuthentication {r_ns}/{}: {e}", r.name),
                    )
                })?;
                if networks.replace(nets).is_some() {
                    return Err(not(
                        "InvalidAuthentication",
                        "at most one NetworkAuthentication per policy".to_owned(),
                    ));
                }
            }
            "MeshTLSAuthentication" if group == GROUP || group.is_empty() => {
                let m = state.mesh_tls.get(&key).ok_or_else(|| {
                    not(
                        "AuthenticationNotFound",
                        format!("MeshTLSAuthentication {r_ns}/{} does not exist", r.name),
                    )
                })?;
                let mut ids = Vec::new();
                let mut suffixes = Vec::new();
                for id in &m.identities {
                    match id.strip_prefix('*') {
                        Some("") => suffixes.push(vec![]),
                        Some(rest) if rest.starts_with('.') => {
                            suffixes.push(rest[1..].split('.').map(str::to_owned).collect());
                        }
                        _ => ids.push(id.clone()),
                    }
                }
                for i in &m.refs {
                    let i_ns = i.namespace.clone().unwrap_or_else(|| r_ns.clone());
                    match (i.kind.as_str(), i.name.as_str()) {
                        ("ServiceAccount", "*") => suffixes.push(namespace_suffix(&i_ns, cfg)),
                        ("ServiceAccount", sa) => ids.push(identity(sa, &i_ns, cfg)),
                        ("Namespace", "*") => suffixes.push(mesh_suffix(cfg)),
                        ("Namespace", n) => suffixes.push(namespace_suffix(n, cfg)),
                        (kind, _) => {
                            return Err(not(
                                "InvalidAuthentication",
                                format!(
                                    "MeshTLSAuthentication {r_ns}/{}: identityRefs kind {kind} \
                                     is not ServiceAccount or Namespace",
                                    r.name
                                ),
                            ));
                        }
                    }
                }
                if ids.is_empty() && suffixes.is_empty() {
                    return Err(not(
                        "InvalidAuthentication",
                        format!("MeshTLSAuthentication {r_ns}/{} names no identity", r.name),
                    ));
                }
                if mesh_tls.replace((ids, suffixes)).is_some() {
                    return Err(not(
                        "InvalidAuthentication",
                        "at most one MeshTLSAuthentication per policy".to_owned(),
                    ));
                }
            }
            "ServiceAccount" if group.is_empty() || group == "core" => {
                accounts.push(identity(&r.name, &r_ns, cfg));
            }
            kind => {
                return Err(not(
                    "InvalidAuthentication",
                    format!(
                        "authentication kind {kind} of group {group:?} is not \
                         MeshTLSAuthentication, NetworkAuthentication or ServiceAccount"
                    ),
                ));
            }
        }
    }
    let clients = match (mesh_tls, accounts.is_empty()) {
        (Some(_), false) => {
            return Err(not(
                "InvalidAuthentication",
                "a policy names either a MeshTLSAuthentication or ServiceAccounts, not both"
                    .to_owned(),
            ));
        }
        (Some(m), true) => Some(m),
        (None, false) => Some((accounts, vec![])),
        (None, true) => None,
    };
    Ok(Resolved {
        networks: networks.unwrap_or_else(all_networks),
        clients,
    })
}

fn identity(sa: &str, ns: &str, cfg: &PolicyConfig) -> String {
    format!(
        "{sa}.{ns}.serviceaccount.identity.{}.{}",
        cfg.control_namespace, cfg.trust_domain
    )
}

/// Every identity of the mesh: `*.*.serviceaccount.identity.<control-ns>.<trust-domain>`.
fn mesh_suffix(cfg: &PolicyConfig) -> Vec<String> {
    ["serviceaccount", "identity", &cfg.control_namespace]
        .into_iter()
        .map(str::to_owned)
        .chain(cfg.trust_domain.split('.').map(str::to_owned))
        .collect()
}

/// Every identity of namespace `ns`: `*.<ns>.serviceaccount.identity.…`.
fn namespace_suffix(ns: &str, cfg: &PolicyConfig) -> Vec<String> {
    std::iter::once(ns.to_owned())
        .chain(mesh_suffix(cfg))
        .collect()
}

fn all_networks() -> Vec<(IpNet, Vec<IpNet>)> {
    ["0.0.0.0/0", "::/0"]
        .into_iter()
        .filter_map(|n| n.parse().ok())
        .map(|n| (n, vec![]))
        .collect()
}

fn network((net, except): &(IpNet, Vec<IpNet>)) -> pb::Network {
    pb::Network {
        net: Some((*net).into()),
        except: except.iter().map(|e| (*e).into()).collect(),
    }
}

fn unauthenticated() -> pb::Authn {
    pb::Authn {
        permit: Some(pb::authn::Permit::Unauthenticated(
            pb::authn::PermitUnauthenticated {},
        )),
    }
}

fn mesh(identities: Vec<String>, suffixes: Vec<Vec<String>>) -> pb::Authn {
    use pb::authn::permit_mesh_tls::{Clients, PermitClientIdentities};
    pb::Authn {
        permit: Some(pb::authn::Permit::MeshTls(pb::authn::PermitMeshTls {
            clients: Some(Clients::Identities(PermitClientIdentities {
                identities: identities
                    .into_iter()
                    .map(|name| pb::Identity { name })
                    .collect(),
                suffixes: suffixes
                    .into_iter()
                    .map(|parts| pb::IdentitySuffix { parts })
                    .collect(),
            })),
        })),
    }
}

/// The authorizations of a default policy (none for `deny`).
pub fn default_authorizations(policy: DefaultPolicy, cfg: &PolicyConfig) -> Vec<pb::Authz> {
    let cluster = || cfg.cluster_networks.iter().map(|n| (*n, vec![])).collect();
    let (networks, authn) = match policy {
        DefaultPolicy::Deny => return vec![],
        DefaultPolicy::AllUnauthenticated => (all_networks(), unauthenticated()),
        DefaultPolicy::AllAuthenticated => (all_networks(), mesh(vec![], vec![vec![]])),
        DefaultPolicy::ClusterUnauthenticated => (cluster(), unauthenticated()),
        DefaultPolicy::ClusterAuthenticated => (cluster(), mesh(vec![], vec![vec![]])),
    };
    vec![pb::Authz {
        networks: networks.iter().map(network).collect(),
        authentication: Some(authn),
        labels: labels("", "default", policy.as_str()),
        metadata: Some(meta::Metadata {
            kind: Some(meta::metadata::Kind::Default(policy.as_str().to_owned())),
        }),
    }]
}

fn default_metadata(name: &str) -> Option<meta::Metadata> {
    Some(meta::Metadata {
        kind: Some(meta::metadata::Kind::Default(name.to_owned())),
    })
}

/// The default HTTP routes: `probe` (exact probe paths, open to all) and `default` (`/`).
fn http_routes(authz: &[pb::Authz], probes: &[String]) -> Vec<pb::HttpRoute> {
    let path = |kind| route_pb::HttpRouteMatch {
        path: Some(route_pb::PathMatch { kind: Some(kind) }),
        ..Default::default()
    };
    let mut routes = Vec::new();
    if !probes.is_empty() {
        let mut open =
            default_authorizations(DefaultPolicy::AllUnauthenticated, &PolicyConfig::default());
        for a in &mut open {
            a.metadata = default_metadata("probe");
            a.labels = labels("", "default", "probe");
        }
        routes.push(pb::HttpRoute {
            metadata: default_metadata("probe"),
            hosts: vec![],
            authorizations: open,
            rules: vec![pb::http_route::Rule {
                matches: probes
                    .iter()
                    .map(|p| path(route_pb::path_match::Kind::Exact(p.clone())))
                    .collect(),
                filters: vec![],
            }],
        });
    }
    routes.push(pb::HttpRoute {
        metadata: default_metadata("default"),
        hosts: vec![],
        authorizations: authz.to_vec(),
        rules: vec![pb::http_route::Rule {
            matches: vec![path(route_pb::path_match::Kind::Prefix("/".to_owned()))],
            filters: vec![],
        }],
    });
    routes
}

fn protocol(
    proto: ProxyProtocol,
    authz: &[pb::Authz],
    probes: &[String],
    cfg: &PolicyConfig,
) -> pb::ProxyProtocol {
    use pb::proxy_protocol::{Detect, Grpc, Http1, Http2, Kind, Opaque, Tls};
    let kind = match proto {
        ProxyProtocol::Unknown => Kind::Detect(Detect {
            timeout: prost_types::Duration::try_from(cfg.detect_timeout).ok(),
            http_routes: http_routes(authz, probes),
            http_local_rate_limit: None,
        }),
        ProxyProtocol::Http1 => Kind::Http1(Http1 {
            routes: http_routes(authz, probes),
            local_rate_limit: None,
        }),
        ProxyProtocol::Http2 => Kind::Http2(Http2 {
            routes: http_routes(authz, probes),
            local_rate_limit: None,
        }),
        ProxyProtocol::Grpc => Kind::Grpc(Grpc {
            routes: vec![pb::GrpcRoute {
                metadata: default_metadata("default"),
                hosts: vec![],
                authorizations: authz.to_vec(),
                rules: vec![pb::grpc_route::Rule {
                    matches: vec![Default::default()],
                    filters: vec![],
                }],
            }],
        }),
        ProxyProtocol::Opaque => Kind::Opaque(Opaque {}),
        ProxyProtocol::Tls => Kind::Tls(Tls {}),
    };
    pb::ProxyProtocol { kind: Some(kind) }
}

#[cfg(test)]
mod tests;
