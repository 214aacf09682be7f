//! Authorization policy: `Server`, `AuthorizationPolicy`, `MeshTLSAuthentication` and
//! `NetworkAuthentication` in `policy.strait.dev`.
//!
//! The shapes and meanings are Linkerd's (`policy.linkerd.io`: Server v1beta3, the others
//! v1alpha1), so a Linkerd user ports a policy by changing the API group:
//!
//! ```text
//!  Server (pods × port, protocol) ◄── targetRef ── AuthorizationPolicy ── requiredAuthenticationRefs ──┐
//!  Namespace (every Server in it) ◄──┘                                                              │
//!                         MeshTLSAuthentication (identities, service accounts) ◄────────────────────┤
//!                         NetworkAuthentication (CIDRs) ◄───────────────────────────────────────────┘
//! ```
//!
//! A pod port that no Server selects gets the default policy (the control plane's setting,
//! overridden by the namespace's or the pod's `config.strait.dev/default-inbound-policy`).
//! A port that a Server selects admits only what its AuthorizationPolicies allow (all of an
//! AuthorizationPolicy's authentications must hold). An AuthorizationPolicy whose target or
//! authentication does not exist, or whose authentication is invalid, allows nothing; the
//! control plane says why in its `status.conditions` (`Accepted`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of the policy resources.
pub const GROUP: &str = "policy.strait.dev";

/// Selects a port of a set of pods; the policies that target it decide who may connect.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "policy.strait.dev",
    version = "v1beta3",
    kind = "Server",
    namespaced,
    shortname = "srv",
    printcolumn = r#"{"name":"Port","type":"string","jsonPath":".spec.port"}"#,
    printcolumn = r#"{"name":"Protocol","type":"string","jsonPath":".spec.proxyProtocol"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ServerSpec {
    /// The pods (of the Server's namespace) this Server selects. Empty selects every pod.
    pub pod_selector: LabelSelector,
    /// A container port of those pods, by number (1–65535) or by name.
    pub port: IntOrString,
    /// How the proxy treats the port's traffic (default `unknown`: detect HTTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Who may connect when no AuthorizationPolicy allows the connection (default `deny`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_policy: Option<DefaultPolicy>,
}

/// How the proxy reads a Server's traffic (Linkerd's names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ProxyProtocol {
    /// Detect HTTP/1 or HTTP/2, else TCP.
    #[default]
    #[serde(rename = "unknown")]
    Unknown,
    #[serde(rename = "HTTP/1")]
    Http1,
    #[serde(rename = "HTTP/2")]
    Http2,
    #[serde(rename = "gRPC")]
    Grpc,
    /// TCP without detection.
    #[serde(rename = "opaque")]
    Opaque,
    /// TLS the application terminates itself (proxied as TCP).
    #[serde(rename = "TLS")]
    Tls,
}

/// A default inbound policy (Linkerd's values), for a Server's `accessPolicy` and for the
/// `config.strait.dev/default-inbound-policy` setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum DefaultPolicy {
    /// Anyone, with or without an identity.
    #[serde(rename = "all-unauthenticated")]
    AllUnauthenticated,
    /// Any client with a mesh identity.
    #[serde(rename = "all-authenticated")]
    AllAuthenticated,
    /// Clients from the cluster's networks, with or without an identity.
    #[serde(rename = "cluster-unauthenticated")]
    ClusterUnauthenticated,
    /// Clients from the cluster's networks with a mesh identity.
    #[serde(rename = "cluster-authenticated")]
    ClusterAuthenticated,
    /// Nobody.
    #[default]
    #[serde(rename = "deny")]
    Deny,
}

impl DefaultPolicy {
    pub const ALL: [DefaultPolicy; 5] = [
        DefaultPolicy::AllUnauthenticated,
        DefaultPolicy::AllAuthenticated,
        DefaultPolicy::ClusterUnauthenticated,
        DefaultPolicy::ClusterAuthenticated,
        DefaultPolicy::Deny,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DefaultPolicy::AllUnauthenticated => "all-unauthenticated",
            DefaultPolicy::AllAuthenticated => "all-authenticated",
            DefaultPolicy::ClusterUnauthenticated => "cluster-unauthenticated",
            DefaultPolicy::ClusterAuthenticated => "cluster-authenticated",
            DefaultPolicy::Deny => "deny",
        }
    }
}

/// A value that is not one of [`DefaultPolicy::ALL`].
#[derive(Debug, thiserror::Error)]
#[error(
    "{0:?} is not a default policy (all-unauthenticated, all-authenticated, \
     cluster-unauthenticated, cluster-authenticated, deny)"
)]
pub struct DefaultPolicyError(pub String);

impl std::str::FromStr for DefaultPolicy {
    type Err = DefaultPolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DefaultPolicy::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| DefaultPolicyError(s.to_owned()))
    }
}

impl std::fmt::Display for DefaultPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Allows connections to a Server (or to every Server of a namespace) from clients that
/// satisfy every required authentication.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "policy.strait.dev",
    version = "v1alpha1",
    kind = "AuthorizationPolicy",
    namespaced,
    status = "AuthorizationPolicyStatus",
    shortname = "authzpolicy",
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.targetRef.name"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    /// What is authorized: a `Server` or a `Namespace` (the policy's own namespace).
    pub target_ref: TargetRef,
    /// Every one of these must hold for a client to be allowed: `MeshTLSAuthentication`s,
    /// `NetworkAuthentication`s, or a `ServiceAccount` (its identity).
    pub required_authentication_refs: Vec<AuthenticationRef>,
}

/// What an AuthorizationPolicy targets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// `policy.strait.dev` for a Server, empty (core) for a Namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// `Server` or `Namespace`.
    #[schemars(regex(pattern = r"^(Server|Namespace)$"))]
    pub kind: String,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// One required authentication of an AuthorizationPolicy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticationRef {
    /// `policy.strait.dev`, or empty (core) for a ServiceAccount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// `MeshTLSAuthentication`, `NetworkAuthentication` or `ServiceAccount`.
    #[schemars(regex(
        pattern = r"^(MeshTLSAuthentication|NetworkAuthentication|ServiceAccount)$"
    ))]
    pub kind: String,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Defaults to the AuthorizationPolicy's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// What the control plane made of an AuthorizationPolicy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationPolicyStatus {
    /// `Accepted`: `True` when every reference resolves; else `False` with the reason
    /// (`TargetNotFound`, `AuthenticationNotFound`, `InvalidAuthentication`) and a message
    /// naming what is missing. A policy that is not accepted allows nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Clients with a mesh identity: by name (a `*` label matches any one or more leading labels,
/// `*` alone any identity) or by reference to a ServiceAccount or a Namespace.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "policy.strait.dev",
    version = "v1alpha1",
    kind = "MeshTLSAuthentication",
    namespaced,
    shortname = "meshtlsauthn"
)]
#[serde(rename_all = "camelCase")]
pub struct MeshTLSAuthenticationSpec {
    /// Identity names, e.g. `web.shop.serviceaccount.identity.strait.cluster.local`,
    /// `*.shop.serviceaccount.identity.strait.cluster.local` or `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<String>,
    /// ServiceAccounts (name `*`: every account of the namespace) or Namespaces (every
    /// account in them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identity_refs: Vec<IdentityRef>,
}

/// A ServiceAccount or a Namespace whose accounts are allowed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentityRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// `ServiceAccount` or `Namespace`.
    #[schemars(regex(pattern = r"^(ServiceAccount|Namespace)$"))]
    pub kind: String,
    /// The account's or namespace's name; `*` for every one.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// A ServiceAccount's namespace (default: the authentication's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Clients by source address.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "policy.strait.dev",
    version = "v1alpha1",
    kind = "NetworkAuthentication",
    namespaced,
    shortname = "netauthn"
)]
#[serde(rename_all = "camelCase")]
pub struct NetworkAuthenticationSpec {
    #[schemars(length(min = 1))]
    pub networks: Vec<Network>,
}

/// A CIDR, minus some of its parts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    /// `198.18.0.0/15`, `2001:db8::/32`, or one address.
    #[schemars(regex(pattern = r"^[0-9a-fA-F:.]+(/[0-9]{1,3})?$"))]
    pub cidr: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
}

/// The file names `crdgen` writes under `charts/strait-control-plane/crds/`, with their YAML.
pub fn crd_files() -> Result<Vec<(&'static str, String)>, serde_saphyr::ser_error::Error> {
    use kube::CustomResourceExt;
    let yaml = |crd| -> Result<String, serde_saphyr::ser_error::Error> {
        let body = serde_saphyr::to_string(&crd)?;
        Ok(format!(
            "# Generated by `cargo run -p strait-k8s-api --bin crdgen`; do not edit.\n{body}"
        ))
    };
    Ok(vec![
        ("server.yaml", yaml(Server::crd())?),
        (
            "authorizationpolicy.yaml",
            yaml(AuthorizationPolicy::crd())?,
        ),
        (
            "meshtlsauthentication.yaml",
            yaml(MeshTLSAuthentication::crd())?,
        ),
        (
            "networkauthentication.yaml",
            yaml(NetworkAuthentication::crd())?,
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_crds_are_generated() {
        for (file, generated) in crd_files().expect("CRDs serialize") {
            let path = format!(
                "{}/../../charts/strait-control-plane/crds/{file}",
                env!("CARGO_MANIFEST_DIR")
            );
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert_eq!(
                committed, generated,
                "{file}: run `cargo run -p strait-k8s-api --bin crdgen` and commit"
            );
        }
    }

    #[test]
    fn linkerd_shapes_parse() {
        let srv: Server = serde_json::from_value(serde_json::json!({
            "apiVersion": "policy.strait.dev/v1beta3", "kind": "Server",
            "metadata": {"name": "users-http", "namespace": "shop"},
            "spec": {"podSelector": {"matchLabels": {"app": "users"}}, "port": "http",
                     "proxyProtocol": "HTTP/1", "accessPolicy": "all-authenticated"},
        }))
        .expect("a Linkerd-shaped Server parses");
        assert_eq!(srv.spec.port, IntOrString::String("http".into()));
        assert_eq!(srv.spec.proxy_protocol, Some(ProxyProtocol::Http1));
        assert_eq!(
            srv.spec.access_policy,
            Some(DefaultPolicy::AllAuthenticated)
        );
        let ap: AuthorizationPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "policy.strait.dev/v1alpha1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "users", "namespace": "shop"},
            "spec": {"targetRef": {"group": "policy.strait.dev", "kind": "Server", "name": "users-http"},
                     "requiredAuthenticationRefs": [
                         {"group": "policy.strait.dev", "kind": "MeshTLSAuthentication", "name": "webapp"}]},
        }))
        .expect("parses");
        assert_eq!(ap.spec.required_authentication_refs[0].name, "webapp");
        let m: MeshTLSAuthentication = serde_json::from_value(serde_json::json!({
            "apiVersion": "policy.strait.dev/v1alpha1", "kind": "MeshTLSAuthentication",
            "metadata": {"name": "webapp", "namespace": "shop"},
            "spec": {"identityRefs": [{"kind": "ServiceAccount", "name": "webapp"}]},
        }))
        .expect("parses");
        assert!(m.spec.identities.is_empty());
    }

    #[test]
    fn default_policies_round_trip() {
        for p in DefaultPolicy::ALL {
            assert_eq!(p.as_str().parse::<DefaultPolicy>().expect("parses"), p);
            assert_eq!(
                serde_json::to_value(p).expect("serializes"),
                serde_json::json!(p.as_str())
            );
        }
        assert!("allow".parse::<DefaultPolicy>().is_err());
    }

    #[test]
    fn schemas_validate_enums_and_kinds() {
        let files = crd_files().expect("CRDs serialize");
        let server = &files[0].1;
        assert!(server.contains("HTTP/2") && server.contains("cluster-authenticated"));
        assert!(server.contains("x-kubernetes-int-or-string"));
        assert!(files[1].1.contains("(Server|Namespace)"));
    }
}
