//! What a Link asks for, checked: the part of validation a CRD schema cannot express.
//!
//! Pure: no I/O. A [`Plan`] is built once per Link generation; an [`InvalidLink`] is reported in
//! the Link's status, never by crashing.

use kube::core::{Selector, SelectorExt};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;
use strait_core::{Identity, labels};
use strait_k8s_api::LinkSpec;

/// One entry of `gatewayAddress`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum GatewayAddr {
    Ip(IpAddr),
    Host(String),
}

/// A Link's spec, parsed.
#[derive(Clone, Debug)]
pub struct Plan {
    pub cluster: String,
    pub cluster_domain: String,
    pub credentials_secret: String,
    pub gateway: Vec<GatewayAddr>,
    pub gateway_port: u16,
    pub gateway_identity: String,
    pub probe_path: String,
    pub probe_port: u16,
    pub probe_period: Duration,
    pub probe_timeout: Duration,
    pub failure_threshold: u32,
    /// `None`: the selector is nil or empty and matches nothing.
    pub selector: Option<Selector>,
    /// `remoteDiscoverySelector`; `None` when nil or empty. Takes precedence over `selector`.
    pub remote_discovery: Option<Selector>,
    /// `federatedServiceSelector`; `None` when nil or empty. Independent of the others: a
    /// remote Service may be mirrored and a federated member at once.
    pub federated: Option<Selector>,
    /// The remote mesh's control namespace and trust domain, as `gatewayIdentity` names them:
    /// what remote pods' identities end with.
    pub remote_control_namespace: String,
    pub remote_trust_domain: String,
    pub excluded_labels: Vec<String>,
    pub excluded_annotations: Vec<String>,
    pub create_namespaces: bool,
    /// `mirrorHeadlessServices` (default `true`).
    pub mirror_headless: bool,
    /// What the Link asks for that this controller does not do, said in its status.
    pub warnings: Vec<String>,
}

/// Why a Link cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum InvalidLink {
    #[error("targetClusterName {0:?} is not a DNS label")]
    ClusterName(String),
    #[error("{field} does not parse: {message}")]
    Selector {
        field: &'static str,
        message: String,
    },
    #[error("gatewayAddress {0:?} is neither an IP address nor a DNS name")]
    GatewayAddress(String),
    #[error("gatewayAddress is empty")]
    NoGatewayAddress,
    #[error("gatewayIdentity {value:?} is not an identity name: {source}")]
    GatewayIdentity {
        value: String,
        #[source]
        source: strait_core::IdentityError,
    },
    #[error("probeSpec.{field} {value:?} is not a duration")]
    Duration { field: &'static str, value: String },
}

impl Plan {
    pub fn new(spec: &LinkSpec) -> Result<Self, InvalidLink> {
        if !is_dns_label(&spec.target_cluster_name) {
            return Err(InvalidLink::ClusterName(spec.target_cluster_name.clone()));
        }
        let gateway = spec
            .gateway_address
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(parse_gateway_addr)
            .collect::<Result<Vec<_>, _>>()?;
        if gateway.is_empty() {
            return Err(InvalidLink::NoGatewayAddress);
        }
        let gateway_identity = spec
            .gateway_identity
            .parse::<Identity>()
            .map_err(|source| InvalidLink::GatewayIdentity {
                value: spec.gateway_identity.clone(),
                source,
            })?;
        let selector = parse_selector("selector", spec.selector.as_ref())?;
        let remote_discovery = parse_selector(
            "remoteDiscoverySelector",
            spec.remote_discovery_selector.as_ref(),
        )?;
        let federated = parse_selector(
            "federatedServiceSelector",
            spec.federated_service_selector.as_ref(),
        )?;
        let probe = &spec.probe_spec;
        let probe_period = parse_duration("period", &probe.period)?;
        let probe_timeout = parse_duration("timeout", &probe.timeout)?.min(probe_period);
        Ok(Self {
            cluster: spec.target_cluster_name.clone(),
            cluster_domain: spec
                .target_cluster_domain
                .clone()
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| strait_core::identity::DEFAULT_TRUST_DOMAIN.to_string()),
            credentials_secret: spec.cluster_credentials_secret.clone(),
            gateway,
            gateway_port: spec.gateway_port,
            gateway_identity: spec.gateway_identity.clone(),
            probe_path: probe.path.clone(),
            probe_port: probe.port,
            probe_period: probe_period.max(Duration::from_millis(100)),
            probe_timeout: probe_timeout.max(Duration::from_millis(50)),
            failure_threshold: probe.failure_threshold.max(1),
            selector,
            remote_discovery,
            federated,
            remote_control_namespace: gateway_identity.control_namespace().to_string(),
            remote_trust_domain: gateway_identity.trust_domain().to_string(),
            excluded_labels: spec.excluded_labels.clone(),
            excluded_annotations: spec.excluded_annotations.clone(),
            create_namespaces: spec.create_namespaces.unwrap_or(false),
            mirror_headless: spec.mirror_headless_services.unwrap_or(true),
            warnings: Vec::new(),
        })
    }

    /// Whether this Link mirrors a remote Service with these labels.
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector.as_ref().is_some_and(|s| s.matches(labels))
    }

    /// The label selector for the remote watch, or `None` when nothing is selected.
    pub fn selector_string(&self) -> Option<String> {
        self.selector.as_ref().map(|s| s.to_string())
    }

    /// Whether this Link mirrors a remote Service with these labels for remote discovery
    /// (its mirror lists the remote pods; this wins over [`Plan::selects`]).
    pub fn selects_remote_discovery(&self, labels: &BTreeMap<String, String>) -> bool {
        self.remote_discovery
            .as_ref()
            .is_some_and(|s| s.matches(labels))
    }

    /// The label selector of the remote-discovery watch, or `None` when nothing is selected.
    pub fn remote_discovery_string(&self) -> Option<String> {
        self.remote_discovery.as_ref().map(|s| s.to_string())
    }

    /// Whether a remote Service with these labels is a member of its federated Service.
    pub fn selects_federated(&self, labels: &BTreeMap<String, String>) -> bool {
        self.federated.as_ref().is_some_and(|s| s.matches(labels))
    }

    /// The label selector of the federated-members watch (remote, and of the local
    /// members), or `None` when nothing is selected.
    pub fn federated_string(&self) -> Option<String> {
        self.federated.as_ref().map(|s| s.to_string())
    }

    /// How a remote Service with these labels, exported by a `ServiceExport` or not, is
    /// mirrored ([`way_in`]).
    pub fn way_in(&self, labels: &BTreeMap<String, String>, exported: bool) -> Option<WayIn> {
        way_in(
            self.selects_remote_discovery(labels),
            self.selects(labels),
            exported,
        )
    }

    /// Whether a mirror copies the remote label `k`: not ours (`mirror.strait.dev/`), not a
    /// topology hint, not in `excludedLabels`.
    pub fn copies_label(&self, k: &str) -> bool {
        copies(k, &self.excluded_labels)
    }

    /// Whether a mirror copies the remote annotation `k`: as for labels, against
    /// `excludedAnnotations`, and never `kubectl`'s last-applied configuration.
    pub fn copies_annotation(&self, k: &str) -> bool {
        copies(k, &self.excluded_annotations)
            && k != "kubectl.kubernetes.io/last-applied-configuration"
    }

    /// The identity of remote service account `sa` in namespace `ns`, when it is one.
    pub fn remote_identity(&self, sa: &str, ns: &str) -> Option<Identity> {
        Identity::new(
            sa,
            ns,
            &self.remote_control_namespace,
            &self.remote_trust_domain,
        )
        .ok()
    }
}

/// One of the three ways a remote Service comes to be mirrored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WayIn {
    /// `remoteDiscoverySelector` matches its labels: its mirror lists the remote pods.
    RemoteDiscovery,
    /// The Link's `selector` matches its labels: mirrored through the gateway.
    Selector,
    /// A `ServiceExport` (MCS API) has its name: mirrored through the gateway.
    ServiceExport,
}

/// The one precedence of the three ways in: `remoteDiscoverySelector` wins over both
/// others, and `selector` over a `ServiceExport` (which then changes nothing). `None`: not
/// mirrored.
pub fn way_in(remote_discovery: bool, selected: bool, exported: bool) -> Option<WayIn> {
    if remote_discovery {
        Some(WayIn::RemoteDiscovery)
    } else if selected {
        Some(WayIn::Selector)
    } else if exported {
        Some(WayIn::ServiceExport)
    } else {
        None
    }
}

/// A label selector of the Link, `None` when nil or empty (it matches nothing).
fn parse_selector(
    field: &'static str,
    ls: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
) -> Result<Option<Selector>, InvalidLink> {
    let Some(ls) = ls else { return Ok(None) };
    let sel = Selector::try_from(ls.clone()).map_err(|e| InvalidLink::Selector {
        field,
        message: e.to_string(),
    })?;
    Ok((!sel.selects_all()).then_some(sel))
}

fn parse_gateway_addr(s: &str) -> Result<GatewayAddr, InvalidLink> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(GatewayAddr::Ip(ip));
    }
    let host = s.trim_end_matches('.');
    if !host.is_empty() && host.len() <= 253 && host.split('.').all(is_dns_label) {
        return Ok(GatewayAddr::Host(host.to_ascii_lowercase()));
    }
    Err(InvalidLink::GatewayAddress(s.to_string()))
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b.is_ascii_uppercase()
        })
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Parses a Go-style duration (`1m30s`, `500ms`, `1.5s`).
pub fn parse_duration(field: &'static str, value: &str) -> Result<Duration, InvalidLink> {
    let bad = || InvalidLink::Duration {
        field,
        value: value.to_string(),
    };
    let mut rest = value;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let n: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * secs;
        rest = &rest[unit_end..];
    }
    if !total.is_finite() || total > 1e9 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(total))
}

/// Topology hints are about the remote cluster's zones; they mean nothing to a mirror.
const TOPOLOGY: [&str; 2] = [
    "service.kubernetes.io/topology-aware-hints",
    "service.kubernetes.io/topology-mode",
];

fn copies(k: &str, patterns: &[String]) -> bool {
    !k.starts_with(labels::PREFIX) && !TOPOLOGY.contains(&k) && !excluded(patterns, k)
}

/// Whether `key` matches one of the patterns (exact, or a prefix when it ends with `/*`).
pub fn excluded(patterns: &[String], key: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) if p.ends_with("/*") => key.starts_with(prefix),
        _ => p == key,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

    /// The Link most tests of the pure parts (mirrors, remote stores) use.
    pub(crate) fn plan() -> Plan {
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

    fn spec() -> LinkSpec {
        serde_json::from_value(serde_json::json!({
            "targetClusterName": "east",
            "clusterCredentialsSecret": "c",
            "gatewayAddress": "10.0.0.1, gw.example.com",
            "gatewayPort": 4143,
            "gatewayIdentity": "strait-gateway.strait-multicluster.serviceaccount.identity.strait.cluster.local",
            "selector": {"matchLabels": {"mirror.strait.dev/exported": "true"}},
            "probeSpec": {"period": "1m30s", "timeout": "500ms"}
        }))
        .expect("spec")
    }

    #[test]
    fn parses_a_good_link() {
        let plan = Plan::new(&spec()).expect("valid");
        assert_eq!(plan.gateway.len(), 2);
        assert_eq!(plan.gateway[1], GatewayAddr::Host("gw.example.com".into()));
        assert_eq!(plan.probe_period, Duration::from_secs(90));
        assert_eq!(plan.probe_timeout, Duration::from_millis(500));
        assert_eq!(plan.failure_threshold, 3);
        let mut l = BTreeMap::new();
        assert!(!plan.selects(&l));
        l.insert("mirror.strait.dev/exported".into(), "true".into());
        assert!(plan.selects(&l));
    }

    #[test]
    fn a_federated_selector_selects_members_and_a_bad_one_is_refused() {
        let mut s = spec();
        let member = BTreeMap::from([("mirror.strait.dev/federated".into(), "member".into())]);
        assert!(!Plan::new(&s).expect("valid").selects_federated(&member));
        // Empty matches nothing.
        s.federated_service_selector = Some(LabelSelector::default());
        let plan = Plan::new(&s).expect("valid");
        assert!(!plan.selects_federated(&member));
        assert_eq!(plan.federated_string(), None);
        s.federated_service_selector = Some(LabelSelector {
            match_labels: Some(member.clone()),
            ..Default::default()
        });
        let plan = Plan::new(&s).expect("valid");
        assert!(plan.warnings.is_empty());
        assert!(plan.selects_federated(&member));
        assert!(!plan.selects_federated(&BTreeMap::new()));
        assert_eq!(
            plan.federated_string().as_deref(),
            Some("mirror.strait.dev/federated=member")
        );
        s.federated_service_selector = Some(LabelSelector {
            match_expressions: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                    key: "a".into(),
                    operator: "Sometimes".into(),
                    values: None,
                },
            ]),
            ..Default::default()
        });
        assert!(matches!(
            Plan::new(&s),
            Err(InvalidLink::Selector {
                field: "federatedServiceSelector",
                ..
            })
        ));
    }

    #[test]
    fn remote_discovery_selector_and_remote_identities() {
        let mut s = spec();
        let plan = Plan::new(&s).expect("valid");
        assert!(plan.remote_discovery.is_none());
        assert!(!plan.selects_remote_discovery(&BTreeMap::new()));
        s.remote_discovery_selector = Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "mirror.strait.dev/exported".into(),
                "remote-discovery".into(),
            )])),
            ..Default::default()
        });
        s.gateway_identity =
            "strait-gateway.strait-multicluster.serviceaccount.identity.mesh.east.example".into();
        let plan = Plan::new(&s).expect("valid");
        let l = BTreeMap::from([(
            "mirror.strait.dev/exported".to_string(),
            "remote-discovery".to_string(),
        )]);
        assert!(plan.selects_remote_discovery(&l) && !plan.selects(&l));
        assert_eq!(
            plan.remote_discovery_string().as_deref(),
            Some("mirror.strait.dev/exported=remote-discovery")
        );
        // Remote pods' identities use the remote control namespace and trust domain.
        assert_eq!(
            plan.remote_identity("web", "shop").map(|i| i.to_string()),
            Some("web.shop.serviceaccount.identity.mesh.east.example".into())
        );
        assert!(plan.remote_identity("Not_A_Label", "shop").is_none());
    }

    #[test]
    fn empty_or_nil_selector_matches_nothing() {
        let mut s = spec();
        s.selector = Some(LabelSelector::default());
        let plan = Plan::new(&s).expect("valid");
        assert!(!plan.selects(&BTreeMap::new()));
        assert!(plan.selector_string().is_none());
        s.selector = None;
        assert!(Plan::new(&s).expect("valid").selector.is_none());
    }

    #[test]
    fn refuses_what_schema_cannot() {
        let mut s = spec();
        s.gateway_address = "not a host!".into();
        assert!(matches!(Plan::new(&s), Err(InvalidLink::GatewayAddress(_))));
        let mut s = spec();
        s.selector = Some(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "a".into(),
                operator: "Sideways".into(),
                values: None,
            }]),
            ..Default::default()
        });
        assert!(matches!(
            Plan::new(&s),
            Err(InvalidLink::Selector {
                field: "selector",
                ..
            })
        ));
        let mut s = spec();
        s.remote_discovery_selector = Some(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "a".into(),
                operator: "In".into(),
                values: None,
            }]),
            ..Default::default()
        });
        let e = Plan::new(&s).expect_err("In without values");
        assert!(
            e.to_string()
                .starts_with("remoteDiscoverySelector does not parse"),
            "{e}"
        );
        let mut s = spec();
        s.gateway_identity = "nope".into();
        assert!(matches!(
            Plan::new(&s),
            Err(InvalidLink::GatewayIdentity { .. })
        ));
        let mut s = spec();
        s.probe_spec.period = "3 s".into();
        assert!(matches!(Plan::new(&s), Err(InvalidLink::Duration { .. })));
    }

    #[test]
    fn remote_discovery_wins_then_selector_then_export() {
        use WayIn::*;
        // (remoteDiscoverySelector, selector, ServiceExport) -> way in
        let table = [
            ((false, false, false), None),
            ((false, false, true), Some(ServiceExport)),
            ((false, true, false), Some(Selector)),
            ((false, true, true), Some(Selector)),
            ((true, false, false), Some(RemoteDiscovery)),
            ((true, false, true), Some(RemoteDiscovery)),
            ((true, true, false), Some(RemoteDiscovery)),
            ((true, true, true), Some(RemoteDiscovery)),
        ];
        for ((rd, sel, exp), want) in table {
            assert_eq!(
                way_in(rd, sel, exp),
                want,
                "rd={rd} selector={sel} export={exp}"
            );
        }
        let mut s = spec();
        s.remote_discovery_selector = Some(LabelSelector {
            match_labels: Some(BTreeMap::from([("rd".into(), "yes".into())])),
            ..Default::default()
        });
        let plan = Plan::new(&s).expect("valid");
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let both = labels(&[("rd", "yes"), ("mirror.strait.dev/exported", "true")]);
        assert_eq!(plan.way_in(&both, true), Some(RemoteDiscovery));
        let sel = labels(&[("mirror.strait.dev/exported", "true")]);
        assert_eq!(plan.way_in(&sel, true), Some(Selector));
        assert_eq!(plan.way_in(&labels(&[]), true), Some(ServiceExport));
        assert_eq!(plan.way_in(&labels(&[]), false), None);
    }

    #[test]
    fn exclusions_with_prefix() {
        let p = vec!["a.io/*".to_string(), "exact".to_string()];
        assert!(excluded(&p, "a.io/x"));
        assert!(excluded(&p, "exact"));
        assert!(!excluded(&p, "exactly"));
        assert!(!excluded(&p, "b.io/x"));
    }
}
