//! The `Link`: how this cluster reaches a remote cluster and which of its Services it mirrors.
//!
//! The spec uses the field names and meanings of Linkerd's `Link` v1alpha3, with two deviations:
//! ports (`gatewayPort`, `probeSpec.port`) are integers, not strings, so the schema can range-check
//! them; and `createNamespaces` (ours) opts into creating missing namespaces. The status stays
//! small at any scale: counts by reason plus a capped list of the services that are *not*
//! mirrored. Per-service state lives on the mirrors themselves.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Go-style duration such as `3s`, `500ms` or `1m30s`.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$";

/// The most entries [`LinkStatus::not_mirrored`] holds; the rest are only counted.
pub const NOT_MIRRORED_CAP: usize = 100;

/// On a Link: `true` keeps its mirrors when the Link is deleted.
pub const KEEP_MIRRORS_ANNOTATION: &str = "mirror.strait.dev/keep-mirrors-on-delete";

/// The finalizer the mirror controller puts on every Link it serves.
pub const FINALIZER: &str = "multicluster.strait.dev/mirrors";

/// A link to a remote cluster.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "multicluster.strait.dev",
    version = "v1alpha1",
    kind = "Link",
    namespaced,
    status = "LinkStatus",
    shortname = "link",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.targetClusterName"}"#,
    printcolumn = r#"{"name":"Alive","type":"boolean","jsonPath":".status.gatewayAlive"}"#,
    printcolumn = r#"{"name":"Mirrored","type":"integer","jsonPath":".status.services.mirrored"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct LinkSpec {
    /// The remote cluster's name; mirrors are named `<svc>-<targetClusterName>`.
    #[schemars(length(min = 1, max = 63))]
    pub target_cluster_name: String,
    /// The remote cluster's DNS domain (default `cluster.local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_cluster_domain: Option<String>,
    /// The Secret (in the Link's namespace) whose key `kubeconfig` reaches the remote API.
    #[schemars(length(min = 1, max = 253))]
    pub cluster_credentials_secret: String,
    /// The remote gateway: comma-separated IP addresses or hostnames.
    #[schemars(length(min = 1))]
    pub gateway_address: String,
    /// The gateway's inbound port (4143).
    #[schemars(range(min = 1, max = 65535))]
    pub gateway_port: u16,
    /// The gateway's TLS identity: the DNS SAN of its certificate.
    #[schemars(length(min = 1, max = 253))]
    pub gateway_identity: String,
    /// How to probe the gateway.
    #[serde(default)]
    pub probe_spec: ProbeSpec,
    /// Remote Services that this Link mirrors through the gateway. Nil or empty matches nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Remote Services mirrored for flat-network discovery. Nil or empty matches nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_discovery_selector: Option<LabelSelector>,
    /// Remote Services that join a federated Service `<svc>-federated` (local Services it
    /// matches join too). Nil or empty matches nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federated_service_selector: Option<LabelSelector>,
    /// Label keys never copied onto mirrors; a trailing `/*` is a prefix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_labels: Vec<String>,
    /// Annotation keys never copied onto mirrors; a trailing `/*` is a prefix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_annotations: Vec<String>,
    /// Create a missing local namespace instead of reporting `MissingNamespace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_namespaces: Option<bool>,
    /// Mirror headless Services whose endpoints have hostnames (a StatefulSet's pods) as a
    /// headless mirror plus one mirror per pod, `<hostname>-<targetClusterName>` (default
    /// `true`). `false` reports them `InvalidService`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_headless_services: Option<bool>,
}

/// Where and how often to probe the remote gateway.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeSpec {
    /// HTTP path probed over TLS (default `/ready`).
    #[serde(default = "default_probe_path")]
    #[schemars(length(min = 1))]
    pub path: String,
    /// The gateway's admin port (default 4191).
    #[serde(default = "default_probe_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Time between probes (default `3s`).
    #[serde(default = "default_probe_period")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"))]
    pub period: String,
    /// Time a probe may take (default `30s`, capped at the period).
    #[serde(default = "default_probe_timeout")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"))]
    pub timeout: String,
    /// Consecutive failures before the gateway counts as down (default 3).
    #[serde(default = "default_failure_threshold")]
    #[schemars(range(min = 1, max = 1000))]
    pub failure_threshold: u32,
}

fn default_probe_path() -> String {
    "/ready".into()
}
fn default_probe_port() -> u16 {
    strait_core::ports::ADMIN
}
fn default_probe_period() -> String {
    "3s".into()
}
fn default_probe_timeout() -> String {
    "30s".into()
}
fn default_failure_threshold() -> u32 {
    3
}

impl Default for ProbeSpec {
    fn default() -> Self {
        Self {
            path: default_probe_path(),
            port: default_probe_port(),
            period: default_probe_period(),
            timeout: default_probe_timeout(),
            failure_threshold: default_failure_threshold(),
        }
    }
}

/// What the controller observed. Its size does not grow with the number of mirrors.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinkStatus {
    /// The Link generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Why the Link itself cannot be served (a selector that does not parse, a bad gateway
    /// address, unreadable credentials). Empty when it is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_error: Option<String>,
    /// What the Link asks for that this controller does not do (the Link is still served).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Whether the remote API answers, and if not, why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_api: Option<RemoteApiStatus>,
    /// Whether the last `failureThreshold` probes did not all fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_alive: Option<bool>,
    /// Latency of the last successful probe, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_latency_ms: Option<u64>,
    /// The resolved gateway addresses the mirrors point at.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateway_addresses: Vec<String>,
    /// Counts of selected remote Services by outcome.
    #[serde(default)]
    pub services: ServiceCounts,
    /// Up to 100 Services that are not mirrored, with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_mirrored: Vec<NotMirrored>,
    /// How many more Services are not mirrored than `notMirrored` lists.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub not_mirrored_omitted: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Whether the remote API answers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemoteApiStatus {
    pub reachable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Counts of selected remote Services by outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceCounts {
    pub mirrored: u32,
    pub invalid_service: u32,
    pub missing_namespace: u32,
    pub error: u32,
    /// Remote Services refused as members of a federated Service (ports that differ from the
    /// oldest member's, or headless).
    #[serde(default)]
    pub federation_conflict: u32,
    /// The mirrored, by how their traffic goes: through the gateway (a ClusterIP mirror),
    /// straight to the remote pods (remote discovery), or a headless mirror with one mirror
    /// per pod (counted in `podMirrors`).
    #[serde(default)]
    pub through_gateway: u32,
    #[serde(default)]
    pub remote_discovery: u32,
    #[serde(default)]
    pub headless: u32,
    #[serde(default)]
    pub pod_mirrors: u32,
    /// Remote Services whose endpoints this Link lists in their federated Service
    /// (`<svc>-federated`; not counted in `mirrored`, which counts mirrors).
    #[serde(default)]
    pub federated: u32,
}

/// Why a Service is not mirrored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Reason {
    InvalidService,
    MissingNamespace,
    Error,
    /// Refused as a member of its federated Service.
    FederationConflict,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidService => "InvalidService",
            Reason::MissingNamespace => "MissingNamespace",
            Reason::Error => "Error",
            Reason::FederationConflict => "FederationConflict",
        }
    }
}

/// One Service that is not mirrored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotMirrored {
    pub namespace: String,
    pub name: String,
    pub reason: Reason,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// The CRD as YAML, exactly as `crdgen` writes it into the chart.
pub fn crd_yaml() -> Result<String, serde_saphyr::ser_error::Error> {
    use kube::CustomResourceExt;
    let crd = Link::crd();
    let body = serde_saphyr::to_string(&crd)?;
    Ok(format!(
        "# Generated by `cargo run -p strait-k8s-api --bin crdgen`; do not edit.\n{body}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_crd_is_generated() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../charts/strait-multicluster/crds/link.yaml"
        );
        let committed = std::fs::read_to_string(path).expect("charts/.../link.yaml exists");
        let generated = crd_yaml().expect("CRD serializes");
        assert_eq!(
            committed, generated,
            "run `cargo run -p strait-k8s-api --bin crdgen` and commit"
        );
    }

    #[test]
    fn defaults_fill_probe_spec() {
        let spec: LinkSpec = serde_json::from_value(serde_json::json!({
            "targetClusterName": "east",
            "clusterCredentialsSecret": "c",
            "gatewayAddress": "1.2.3.4",
            "gatewayPort": 4143,
            "gatewayIdentity": "strait-gateway.strait-multicluster.serviceaccount.identity.strait.cluster.local",
        }))
        .expect("parses");
        assert_eq!(spec.probe_spec, ProbeSpec::default());
        assert!(spec.selector.is_none());
    }

    #[test]
    fn schema_has_duration_pattern_and_required() {
        let yaml = crd_yaml().expect("CRD serializes");
        assert!(yaml.contains("(ns|us|ms|s|m|h)"));
        assert!(yaml.contains("gatewayIdentity"));
        let _ = DURATION_PATTERN;
    }
}
