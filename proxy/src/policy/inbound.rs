//! Inbound policy: a `Server` from `InboundServerPolicies/WatchPort`, translated once per
//! update into what a connection and a request are checked against.
//!
//! ```text
//!  pb::Server ──ServerPolicy::from_pb──► protocol, authorizations (TCP), HTTP routes
//!  connection: check_tcp(client) ─► the first authorization that permits it, or deny
//!  request:    check_http(client, req) ─► the most specific route ─► its authorizations
//! ```
//!
//! An authorization permits a client when the client's address is in one of its networks
//! (and in none of that network's exceptions) and its authentication holds: unauthenticated
//! permits anyone; mesh TLS needs a verified client identity that is listed or ends with a
//! listed suffix (an empty suffix is any identity).
//!
//! What this proxy cannot evaluate is never taken as a match: a regex path, header or query
//! match makes that match fail, so a route meant to be narrow is never widened.

use http::Method;
use ipnet::IpNet;
use linkerd2_proxy_api::http_route as route_pb;
use linkerd2_proxy_api::inbound as pb;
use linkerd2_proxy_api::meta;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

pub use super::Protocol;

/// A resource's name for metrics: `group`, `kind`, `name`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Meta {
    pub group: String,
    pub kind: String,
    pub name: String,
}

impl Meta {
    fn from_labels(labels: &HashMap<String, String>) -> Self {
        let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
        Self {
            group: get("group"),
            kind: get("kind"),
            name: get("name"),
        }
    }

    fn from_metadata(m: Option<&meta::Metadata>, labels: &HashMap<String, String>) -> Self {
        match m.and_then(|m| m.kind.as_ref()) {
            Some(meta::metadata::Kind::Default(name)) => Self {
                group: String::new(),
                kind: "default".to_owned(),
                name: name.clone(),
            },
            Some(meta::metadata::Kind::Resource(r)) => Self {
                group: r.group.clone(),
                kind: r.kind.clone(),
                name: r.name.clone(),
            },
            None => Self::from_labels(labels),
        }
    }

    /// A default policy's name (`all-unauthenticated`, …).
    pub fn default_named(name: &str) -> Self {
        Self {
            group: String::new(),
            kind: "default".to_owned(),
            name: name.to_owned(),
        }
    }
}

/// Who is asking: the peer address, whether it spoke TLS, and its verified identity's name
/// (formatted once per connection, not per check).
#[derive(Clone, Copy, Debug)]
pub struct Client<'a> {
    pub ip: IpAddr,
    pub tls: bool,
    pub id: Option<&'a str>,
}

/// What an authorization requires of the client beyond its address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authn {
    Unauthenticated,
    /// TLS, with or without a client certificate.
    Tls,
    /// A verified identity: one of `identities`, or one ending with a suffix's labels.
    MeshTls {
        identities: Vec<String>,
        suffixes: Vec<Vec<String>>,
    },
}

/// One authorization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authz {
    pub networks: Vec<(IpNet, Vec<IpNet>)>,
    pub authn: Authn,
    pub meta: Meta,
}

impl Authz {
    /// Whether `c` is permitted.
    pub fn permits(&self, c: &Client<'_>) -> bool {
        let in_networks = self
            .networks
            .iter()
            .any(|(net, except)| net.contains(&c.ip) && !except.iter().any(|e| e.contains(&c.ip)));
        in_networks
            && match &self.authn {
                Authn::Unauthenticated => true,
                Authn::Tls => c.tls,
                Authn::MeshTls {
                    identities,
                    suffixes,
                } => c.id.is_some_and(|name| {
                    identities.iter().any(|i| i == name)
                        || suffixes.iter().any(|s| has_suffix(name, s))
                }),
            }
    }
}

/// Whether `name`'s labels end with `suffix` (an empty suffix: any name).
fn has_suffix(name: &str, suffix: &[String]) -> bool {
    let labels: Vec<&str> = name.split('.').collect();
    labels.len() >= suffix.len()
        && labels[labels.len() - suffix.len()..]
            .iter()
            .zip(suffix)
            .all(|(l, s)| l == s)
}

/// A path match.
#[derive(Clone, Debug, PartialEq, Eq)]
enum PathMatch {
    Exact(String),
    /// Gateway API semantics: element-wise, so `/api` matches `/api` and `/api/v1`, not
    /// `/apis`.
    Prefix(String),
}

/// One of a route's matches; every present condition must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RouteMatch {
    /// Holds a condition this proxy does not evaluate (a regex, an unknown method): the
    /// match never holds.
    unsupported: bool,
    path: Option<PathMatch>,
    method: Option<Method>,
    /// Exact header values; `None` as a value is a match this proxy does not evaluate.
    headers: Vec<(http::HeaderName, Option<String>)>,
    /// Exact query parameter values, likewise.
    query: Vec<(String, Option<String>)>,
}

impl RouteMatch {
    /// How specific the match is if `req` satisfies it (Gateway API precedence: exact path,
    /// then the longest prefix, then method, then the number of header and query matches).
    fn score(&self, req: &http::request::Parts) -> Option<(u8, usize, bool, usize, usize)> {
        if self.unsupported {
            return None;
        }
        let path = req.uri.path();
        let (kind, len) = match &self.path {
            None => (0, 0),
            Some(PathMatch::Exact(p)) if p == path => (2, p.len()),
            Some(PathMatch::Prefix(p)) if prefix_matches(p, path) => (1, p.len()),
            Some(_) => return None,
        };
        if self.method.as_ref().is_some_and(|m| m != req.method) {
            return None;
        }
        for (name, value) in &self.headers {
            let v = value.as_deref()?;
            if req.headers.get(name).and_then(|h| h.to_str().ok()) != Some(v) {
                return None;
            }
        }
        for (name, value) in &self.query {
            let v = value.as_deref()?;
            let found = req.uri.query().unwrap_or_default().split('&').any(|kv| {
                let (k, val) = kv.split_once('=').unwrap_or((kv, ""));
                k == name && val == v
            });
            if !found {
                return None;
            }
        }
        Some((
            kind,
            len,
            self.method.is_some(),
            self.headers.len(),
            self.query.len(),
        ))
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || path == prefix
        || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

/// An HTTP route: its matches (none: every request) and who may use it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub meta: Meta,
    matches: Vec<RouteMatch>,
    pub authorizations: Vec<Authz>,
}

/// The policy of one port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerPolicy {
    pub meta: Meta,
    pub protocol: Protocol,
    /// What a connection is checked against (TCP, and the connection of HTTP requests).
    pub authorizations: Vec<Authz>,
    pub routes: Vec<Route>,
}

/// Why a request is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpDenied<'a> {
    /// No route matches (Linkerd answers 404).
    NoRoute,
    /// The route's authorizations do not permit the client (403).
    Unauthorized(&'a Route),
}

impl ServerPolicy {
    /// The authorization that permits a connection from `c`, if any.
    pub fn check_tcp(&self, c: &Client<'_>) -> Option<&Authz> {
        self.authorizations.iter().find(|a| a.permits(c))
    }

    /// The route `req` takes and the authorization that permits it.
    pub fn check_http<'a>(
        &'a self,
        c: &Client<'_>,
        req: &http::request::Parts,
    ) -> Result<(&'a Route, &'a Authz), HttpDenied<'a>> {
        let route = self
            .routes
            .iter()
            .filter_map(|r| {
                let best = if r.matches.is_empty() {
                    Some((0, 0, false, 0, 0))
                } else {
                    r.matches.iter().filter_map(|m| m.score(req)).max()
                };
                best.map(|s| (s, r))
            })
            // The most specific; among equals, the first.
            .fold(None::<(_, &Route)>, |best, (s, r)| match best {
                Some((bs, _)) if bs >= s => best,
                _ => Some((s, r)),
            })
            .map(|(_, r)| r)
            .ok_or(HttpDenied::NoRoute)?;
        route
            .authorizations
            .iter()
            .find(|a| a.permits(c))
            .map(|a| (route, a))
            .ok_or(HttpDenied::Unauthorized(route))
    }

    /// The policy the proxy applies on its own, when the policy service has not answered:
    /// `name` is one of Linkerd's default policies.
    pub fn default_policy(
        name: DefaultPolicy,
        cluster_networks: &[IpNet],
        detect: Duration,
    ) -> Self {
        let all = || {
            ["0.0.0.0/0", "::/0"]
                .iter()
                .filter_map(|n| n.parse().ok())
                .map(|n| (n, vec![]))
                .collect()
        };
        let cluster = || cluster_networks.iter().map(|n| (*n, vec![])).collect();
        let mesh = || Authn::MeshTls {
            identities: vec![],
            suffixes: vec![vec![]],
        };
        let meta = Meta::default_named(name.as_str());
        let authz = |networks, authn| {
            vec![Authz {
                networks,
                authn,
                meta: meta.clone(),
            }]
        };
        let authorizations = match name {
            DefaultPolicy::Deny => vec![],
            DefaultPolicy::AllUnauthenticated => authz(all(), Authn::Unauthenticated),
            DefaultPolicy::AllAuthenticated => authz(all(), mesh()),
            DefaultPolicy::ClusterUnauthenticated => authz(cluster(), Authn::Unauthenticated),
            DefaultPolicy::ClusterAuthenticated => authz(cluster(), mesh()),
        };
        Self {
            meta: meta.clone(),
            protocol: Protocol::Detect(detect),
            routes: vec![Route {
                meta: Meta::default_named("default"),
                matches: vec![],
                authorizations: authorizations.clone(),
            }],
            authorizations,
        }
    }

    /// Translates a `Server` message.
    pub fn from_pb(srv: &pb::Server) -> Result<Self, InvalidPolicy> {
        use pb::proxy_protocol::Kind;
        let kind = srv
            .protocol
            .as_ref()
            .and_then(|p| p.kind.as_ref())
            .ok_or(InvalidPolicy("the Server has no protocol"))?;
        let http = |routes: &[pb::HttpRoute]| -> Result<Vec<Route>, InvalidPolicy> {
            routes.iter().map(http_route).collect()
        };
        let (protocol, routes) = match kind {
            Kind::Detect(d) => {
                let timeout = d
                    .timeout
                    .and_then(|t| Duration::try_from(t).ok())
                    .ok_or(InvalidPolicy("detect has no valid timeout"))?;
                (Protocol::Detect(timeout), http(&d.http_routes)?)
            }
            Kind::Http1(h) => (Protocol::Http1, http(&h.routes)?),
            Kind::Http2(h) => (Protocol::Http2, http(&h.routes)?),
            Kind::Grpc(g) => (
                Protocol::Http2,
                g.routes.iter().map(grpc_route).collect::<Result<_, _>>()?,
            ),
            Kind::Opaque(_) | Kind::Tls(_) => (Protocol::Opaque, vec![]),
        };
        Ok(Self {
            meta: Meta::from_labels(&srv.labels),
            protocol,
            authorizations: authorizations(&srv.authorizations)?,
            routes,
        })
    }
}

/// A `Server` message this proxy cannot enforce; the previous policy stays.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid inbound policy: {0}")]
pub struct InvalidPolicy(pub &'static str);

fn authorizations(list: &[pb::Authz]) -> Result<Vec<Authz>, InvalidPolicy> {
    list.iter().map(authz).collect()
}

fn authz(a: &pb::Authz) -> Result<Authz, InvalidPolicy> {
    use pb::authn::Permit;
    use pb::authn::permit_mesh_tls::Clients;
    let networks = a
        .networks
        .iter()
        .map(|n| {
            let net = n
                .net
                .and_then(|n| IpNet::try_from(n).ok())
                .ok_or(InvalidPolicy("an authorization has an invalid network"))?;
            let except = n
                .except
                .iter()
                .map(|e| IpNet::try_from(*e).ok())
                .collect::<Option<Vec<_>>>()
                .ok_or(InvalidPolicy("an authorization has an invalid exception"))?;
            Ok((net, except))
        })
        .collect::<Result<_, _>>()?;
    let authn = match a.authentication.as_ref().and_then(|p| p.permit.as_ref()) {
        Some(Permit::Unauthenticated(_)) => Authn::Unauthenticated,
        Some(Permit::MeshTls(m)) => match &m.clients {
            Some(Clients::Unauthenticated(_)) => Authn::Tls,
            Some(Clients::Identities(ids)) => Authn::MeshTls {
                identities: ids.identities.iter().map(|i| i.name.clone()).collect(),
                suffixes: ids.suffixes.iter().map(|s| s.parts.clone()).collect(),
            },
            None => return Err(InvalidPolicy("a mesh TLS authentication names no clients")),
        },
        None => return Err(InvalidPolicy("an authorization has no authentication")),
    };
    Ok(Authz {
        networks,
        authn,
        meta: Meta::from_metadata(a.metadata.as_ref(), &a.labels),
    })
}

fn http_route(r: &pb::HttpRoute) -> Result<Route, InvalidPolicy> {
    Ok(Route {
        meta: Meta::from_metadata(r.metadata.as_ref(), &HashMap::new()),
        matches: r
            .rules
            .iter()
            .flat_map(|rule| rule.matches.iter().map(http_match))
            .collect(),
        authorizations: authorizations(&r.authorizations)?,
    })
}

fn grpc_route(r: &pb::GrpcRoute) -> Result<Route, InvalidPolicy> {
    // gRPC methods are not matched here: a gRPC route admits every call of the port.
    Ok(Route {
        meta: Meta::from_metadata(r.metadata.as_ref(), &HashMap::new()),
        matches: vec![],
        authorizations: authorizations(&r.authorizations)?,
    })
}

fn http_match(m: &route_pb::HttpRouteMatch) -> RouteMatch {
    use route_pb::header_match::Value as HV;
    use route_pb::path_match::Kind as PK;
    use route_pb::query_param_match::Value as QV;
    let mut unsupported = false;
    let path = match m.path.as_ref().and_then(|p| p.kind.as_ref()) {
        None => None,
        Some(PK::Exact(p)) => Some(PathMatch::Exact(p.clone())),
        Some(PK::Prefix(p)) => Some(PathMatch::Prefix(p.clone())),
        Some(PK::Regex(_)) => {
            unsupported = true;
            None
        }
    };
    let method = match m.method.clone().map(Method::try_from) {
        None => None,
        Some(Ok(m)) => Some(m),
        Some(Err(_)) => {
            unsupported = true;
            None
        }
    };
    RouteMatch {
        unsupported,
        path,
        method,
        headers: m
            .headers
            .iter()
            .filter_map(|h| {
                let name = http::HeaderName::from_bytes(h.name.as_bytes()).ok()?;
                let value = match &h.value {
                    Some(HV::Exact(v)) => String::from_utf8(v.clone()).ok(),
                    _ => None,
                };
                Some((name, value))
            })
            .collect(),
        query: m
            .query_params
            .iter()
            .map(|q| {
                let value = match &q.value {
                    Some(QV::Exact(v)) => Some(v.clone()),
                    _ => None,
                };
                (q.name.clone(), value)
            })
            .collect(),
    }
}

/// Linkerd's default inbound policies (the values of `strait_k8s_api::policy::DefaultPolicy`
/// and of the `config.strait.dev/default-inbound-policy` annotation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultPolicy {
    AllUnauthenticated,
    AllAuthenticated,
    ClusterUnauthenticated,
    ClusterAuthenticated,
    Deny,
}

impl DefaultPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AllUnauthenticated => "all-unauthenticated",
            Self::AllAuthenticated => "all-authenticated",
            Self::ClusterUnauthenticated => "cluster-unauthenticated",
            Self::ClusterAuthenticated => "cluster-authenticated",
            Self::Deny => "deny",
        }
    }
}

impl std::str::FromStr for DefaultPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        [
            Self::AllUnauthenticated,
            Self::AllAuthenticated,
            Self::ClusterUnauthenticated,
            Self::ClusterAuthenticated,
            Self::Deny,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
        .ok_or_else(|| {
            format!(
                "one of {}",
                strait_core::policy::DEFAULT_INBOUND_POLICIES.join(", ")
            )
        })
    }
}

#[cfg(test)]
mod tests;
