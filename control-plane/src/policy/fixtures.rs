//! Fixtures for the policy module's tests: the Kubernetes objects a user writes, projected
//! through each kind's `from_object` into an index [`State`].

use super::PolicyConfig;
use super::index::State;
use super::model::{
    AuthzPolicyInfo, MeshTlsInfo, NamespaceInfo, NetworkAuthnInfo, PodInfo, ServerInfo,
};
use ipnet::IpNet;
use serde_json::json;
use strait_k8s_api::policy::{DefaultPolicy, GROUP};

pub const ID: &str = "serviceaccount.identity.strait.cluster.local";

pub fn cfg(default_policy: DefaultPolicy) -> PolicyConfig {
    PolicyConfig {
        default_policy,
        cluster_networks: vec![parse("10.0.0.0/8")],
        ..PolicyConfig::default()
    }
}

pub fn parse(cidr: &str) -> IpNet {
    cidr.parse().expect("fixture CIDR")
}

pub fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("fixture parses")
}

pub fn default_annotation(policy: Option<&str>) -> serde_json::Value {
    match policy {
        Some(p) => json!({ strait_core::labels::DEFAULT_INBOUND_POLICY: p }),
        None => json!({}),
    }
}

pub fn add_ns(s: &mut State, name: &str, policy: Option<&str>) {
    let ns = obj(json!({"metadata": {"name": name, "annotations": default_annotation(policy)}}));
    let (k, v) = NamespaceInfo::from_object(&ns).expect("named");
    s.namespaces.insert(k, v);
}

/// A pod with container ports `http` (8080) and `admin` (9990), a readiness probe on
/// `admin` `/ready`, and `annotations`.
pub fn add_pod(s: &mut State, ns: &str, name: &str, app: &str, annotations: serde_json::Value) {
    let pod = obj(json!({
        "metadata": {"name": name, "namespace": ns, "labels": {"app": app},
                     "annotations": annotations},
        "spec": {"serviceAccountName": app, "containers": [{
            "name": "app", "image": "app",
            "ports": [{"name": "http", "containerPort": 8080}, {"name": "admin", "containerPort": 9990}],
            "readinessProbe": {"httpGet": {"port": "admin", "path": "/ready"}},
        }]},
    }));
    let (k, v) = PodInfo::from_object(&pod).expect("named");
    s.pods.insert(k, v);
}

pub fn add_server(
    s: &mut State,
    name: &str,
    app: &str,
    port: serde_json::Value,
    extra: serde_json::Value,
) {
    let mut spec = json!({"podSelector": {"matchLabels": {"app": app}}, "port": port});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    let srv = obj(json!({"metadata": {"name": name, "namespace": "shop",
                                       "creationTimestamp": "2025-01-01T00:00:00Z"},
                         "spec": spec}));
    let (k, v) = ServerInfo::from_object(&srv).expect("named");
    s.servers.insert(k, v);
}

/// An AuthorizationPolicy in `shop`; `refs` are `(kind, name)`.
pub fn add_policy(s: &mut State, name: &str, target: (&str, &str), refs: &[(&str, &str)]) {
    let (kind, target) = target;
    let group = if kind == "Server" { GROUP } else { "" };
    let refs: Vec<_> = refs
        .iter()
        .map(|(kind, name)| {
            let group = if *kind == "ServiceAccount" { "" } else { GROUP };
            json!({"group": group, "kind": kind, "name": name})
        })
        .collect();
    let p = obj(json!({
        "metadata": {"name": name, "namespace": "shop", "generation": 1},
        "spec": {"targetRef": {"group": group, "kind": kind, "name": target},
                 "requiredAuthenticationRefs": refs},
    }));
    let (k, v) = AuthzPolicyInfo::from_object(&p).expect("named");
    s.authz_policies.insert(k, v);
}

pub fn add_mesh(s: &mut State, name: &str, spec: serde_json::Value) {
    let m = obj(json!({"metadata": {"name": name, "namespace": "shop"}, "spec": spec}));
    let (k, v) = MeshTlsInfo::from_object(&m).expect("named");
    s.mesh_tls.insert(k, v);
}

pub fn add_network(s: &mut State, name: &str, networks: serde_json::Value) {
    let n = obj(json!({"metadata": {"name": name, "namespace": "shop"},
                       "spec": {"networks": networks}}));
    let (k, v) = NetworkAuthnInfo::from_object(&n).expect("named");
    s.networks.insert(k, v);
}

/// Namespaces `shop` (no annotation) and `quiet` (deny); pods `shop/users`, `shop/web`,
/// `shop/odd` (an invalid annotation), `shop/db` (opaque 3306), `quiet/api` and
/// `quiet/open` (all-authenticated).
pub fn base() -> State {
    let mut s = State::default();
    add_ns(&mut s, "shop", None);
    add_ns(&mut s, "quiet", Some("deny"));
    add_pod(&mut s, "shop", "users", "users", json!({}));
    add_pod(&mut s, "shop", "web", "web", json!({}));
    add_pod(
        &mut s,
        "shop",
        "odd",
        "odd",
        default_annotation(Some("allow")),
    );
    add_pod(
        &mut s,
        "shop",
        "db",
        "db",
        json!({strait_core::labels::OPAQUE_PORTS: "3306"}),
    );
    add_pod(&mut s, "quiet", "api", "api", json!({}));
    add_pod(
        &mut s,
        "quiet",
        "open",
        "open",
        default_annotation(Some("all-authenticated")),
    );
    s
}

/// Server `shop/users-http`: pods `app=users`, port 8080, HTTP/1.
pub fn users_server(s: &mut State) {
    add_server(
        s,
        "users-http",
        "users",
        json!(8080),
        json!({"proxyProtocol": "HTTP/1"}),
    );
}
