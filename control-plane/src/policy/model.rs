//! What the policy service keeps of each watched object: small projections, built once per
//! change, that the pure translation ([`inbound`](super::inbound)) reads.

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;
use strait_core::labels;
use strait_k8s_api::policy::{
    AuthenticationRef, AuthorizationPolicy, DefaultPolicy, IdentityRef, MeshTLSAuthentication,
    NetworkAuthentication, ProxyProtocol, Server, TargetRef,
};

/// `(namespace, name)` of a namespaced object.
pub type ObjKey = (String, String);

fn obj_key(meta: &ObjectMeta) -> Option<ObjKey> {
    Some((meta.namespace.clone()?, meta.name.clone()?))
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// A `config.strait.dev/default-inbound-policy` annotation: absent, valid, or invalid (then it
/// is ignored, with a warning, and the next level's policy applies).
fn default_policy(meta: &ObjectMeta, what: &str) -> Option<DefaultPolicy> {
    let value = annotation(meta, labels::DEFAULT_INBOUND_POLICY)?;
    match value.parse() {
        Ok(p) => Some(p),
        Err(error) => {
            tracing::warn!(%error, %what, annotation = labels::DEFAULT_INBOUND_POLICY, "ignored");
            None
        }
    }
}

/// A pod, as inbound policy cares.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodInfo {
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub default_policy: Option<DefaultPolicy>,
    pub opaque_ports: Vec<u16>,
    /// Container ports by name (a Server's `port` may name one).
    pub named_ports: BTreeMap<String, u16>,
    /// HTTP probe paths by port: authorized on every policy, so kubelet keeps probing.
    pub probes: BTreeMap<u16, Vec<String>>,
}

impl PodInfo {
    pub fn from_object(pod: &Pod) -> Option<(ObjKey, Self)> {
        let key = obj_key(&pod.metadata)?;
        let spec = pod.spec.as_ref();
        let containers = spec.into_iter().flat_map(|s| s.containers.iter());
        let mut named_ports = BTreeMap::new();
        let mut probes: BTreeMap<u16, Vec<String>> = BTreeMap::new();
        for c in containers {
            for p in c.ports.iter().flatten() {
                if let (Some(name), Ok(port)) = (&p.name, u16::try_from(p.container_port)) {
                    named_ports.insert(name.clone(), port);
                }
            }
            for probe in [&c.liveness_probe, &c.readiness_probe, &c.startup_probe]
                .into_iter()
                .flatten()
            {
                let Some(get) = &probe.http_get else { continue };
                let port = match &get.port {
                    IntOrString::Int(n) => u16::try_from(*n).ok(),
                    IntOrString::String(name) => named_ports.get(name).copied(),
                };
                if let Some(port) = port {
                    let path = get.path.clone().unwrap_or_else(|| "/".to_owned());
                    let paths = probes.entry(port).or_default();
                    if !paths.contains(&path) {
                        paths.push(path);
                    }
                }
            }
        }
        let info = Self {
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            service_account: spec
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".to_owned()),
            default_policy: default_policy(&pod.metadata, &format!("pod {}/{}", key.0, key.1)),
            opaque_ports: crate::destination::model::parse_ports(annotation(
                &pod.metadata,
                labels::OPAQUE_PORTS,
            )),
            named_ports,
            probes,
        };
        Some((key, info))
    }
}

/// A namespace's default inbound policy annotation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NamespaceInfo {
    pub default_policy: Option<DefaultPolicy>,
}

impl NamespaceInfo {
    pub fn from_object(ns: &Namespace) -> Option<(String, Self)> {
        let name = ns.metadata.name.clone()?;
        let default_policy = default_policy(&ns.metadata, &format!("namespace {name}"));
        Some((name, Self { default_policy }))
    }
}

/// A Server.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerInfo {
    pub selector: LabelSelector,
    pub port: IntOrString,
    pub protocol: ProxyProtocol,
    pub access_policy: DefaultPolicy,
    /// `creationTimestamp`: of two Servers selecting one port, the older wins.
    pub created: Option<k8s_openapi::jiff::Timestamp>,
}

impl ServerInfo {
    pub fn from_object(s: &Server) -> Option<(ObjKey, Self)> {
        let key = obj_key(&s.metadata)?;
        let info = Self {
            selector: s.spec.pod_selector.clone(),
            port: s.spec.port.clone(),
            protocol: s.spec.proxy_protocol.unwrap_or_default(),
            access_policy: s.spec.access_policy.unwrap_or_default(),
            created: s.metadata.creation_timestamp.as_ref().map(|t| t.0),
        };
        Some((key, info))
    }

    /// Whether this Server selects `port` of a pod with these labels and named ports.
    pub fn selects(&self, pod: &PodInfo, port: u16) -> bool {
        let port_matches = match &self.port {
            IntOrString::Int(n) => i64::from(*n) == i64::from(port),
            IntOrString::String(name) => pod.named_ports.get(name) == Some(&port),
        };
        port_matches && selector_matches(&self.selector, &pod.labels)
    }
}

/// A label selector against a label set: every `matchLabels` pair and every expression must
/// hold. An empty selector selects everything; an unknown operator selects nothing.
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let pairs = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    pairs && exprs
}

/// An AuthorizationPolicy, with the status it carries now (so the status writer patches only
/// what changed).
#[derive(Clone, Debug, PartialEq)]
pub struct AuthzPolicyInfo {
    pub target: TargetRef,
    pub authentications: Vec<AuthenticationRef>,
    pub generation: Option<i64>,
    /// `(status, reason, message, observedGeneration)` of the `Accepted` condition.
    pub accepted: Option<(String, String, String, Option<i64>)>,
}

impl AuthzPolicyInfo {
    pub fn from_object(p: &AuthorizationPolicy) -> Option<(ObjKey, Self)> {
        let key = obj_key(&p.metadata)?;
        let accepted = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Accepted"))
            .map(|c| {
                (
                    c.status.clone(),
                    c.reason.clone(),
                    c.message.clone(),
                    c.observed_generation,
                )
            });
        let info = Self {
            target: p.spec.target_ref.clone(),
            authentications: p.spec.required_authentication_refs.clone(),
            generation: p.metadata.generation,
            accepted,
        };
        Some((key, info))
    }
}

/// A MeshTLSAuthentication.
#[derive(Clone, Debug, PartialEq)]
pub struct MeshTlsInfo {
    pub identities: Vec<String>,
    pub refs: Vec<IdentityRef>,
}

impl MeshTlsInfo {
    pub fn from_object(m: &MeshTLSAuthentication) -> Option<(ObjKey, Self)> {
        let key = obj_key(&m.metadata)?;
        Some((
            key,
            Self {
                identities: m.spec.identities.clone(),
                refs: m.spec.identity_refs.clone(),
            },
        ))
    }
}

/// A NetworkAuthentication: its networks, or why one does not parse.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkAuthnInfo {
    pub networks: Result<Vec<(IpNet, Vec<IpNet>)>, String>,
}

impl NetworkAuthnInfo {
    pub fn from_object(n: &NetworkAuthentication) -> Option<(ObjKey, Self)> {
        let key = obj_key(&n.metadata)?;
        let networks = n
            .spec
            .networks
            .iter()
            .map(|net| {
                let except: Result<Vec<IpNet>, String> =
                    net.except.iter().map(|c| parse_cidr(c)).collect();
                Ok((parse_cidr(&net.cidr)?, except?))
            })
            .collect();
        Some((key, Self { networks }))
    }
}

/// A CIDR, or one address (a /32 or /128).
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not a CIDR"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors() {
        let app = labels(&[("app", "users"), ("tier", "api")]);
        let sel = |pairs: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>| LabelSelector {
            match_labels: Some(labels(pairs)),
            match_expressions: Some(exprs),
        };
        let req = |key: &str, op: &str, values: &[&str]| LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        };
        assert!(selector_matches(&LabelSelector::default(), &app));
        assert!(selector_matches(&sel(&[("app", "users")], vec![]), &app));
        assert!(!selector_matches(&sel(&[("app", "web")], vec![]), &app));
        assert!(selector_matches(
            &sel(&[], vec![req("tier", "In", &["api", "db"])]),
            &app
        ));
        assert!(!selector_matches(
            &sel(&[], vec![req("tier", "NotIn", &["api"])]),
            &app
        ));
        assert!(selector_matches(
            &sel(&[], vec![req("x", "DoesNotExist", &[])]),
            &app
        ));
        assert!(!selector_matches(
            &sel(&[], vec![req("app", "Matches", &[])]),
            &app
        ));
    }

    #[test]
    fn cidrs() {
        assert_eq!(parse_cidr("198.18.0.0/15").map(|n| n.prefix_len()), Ok(15));
        assert_eq!(parse_cidr("198.18.0.7").map(|n| n.prefix_len()), Ok(32));
        assert!(parse_cidr("198.18.0.0/40").is_err());
        assert!(parse_cidr("web").is_err());
    }
}
