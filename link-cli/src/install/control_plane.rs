//! `strait install`: the objects of `charts/strait-control-plane`, for the same values.

use super::objects::{self, TRUST_ROOTS_DIR, Workload, env, mount, port, probe, rule};
use super::values::{
    Check, Image, Resources, check_dns_name, check_duration, check_names, check_replicas,
};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

/// The Deployment, its ServiceAccount and the container's name.
pub const NAME: &str = "strait-control-plane";
const ISSUER_DIR: &str = "/var/run/strait/identity/issuer";
/// The control plane's Services: (name, port name, port).
pub const SERVICES: [(&str, &str, u16); 3] = [
    (
        "strait-identity",
        "identity",
        strait_core::ports::IDENTITY_GRPC,
    ),
    (
        "strait-dst",
        "destination",
        strait_core::ports::DESTINATION_GRPC,
    ),
    ("strait-control-plane-admin", "admin", ADMIN_PORT),
];
/// The control plane's `/metrics` (flag `--admin-addr`).
pub const ADMIN_PORT: u16 = 9990;
/// The image's user (images/control-plane/Dockerfile).
const UID: u32 = 65532;

/// `values.yaml` of the chart.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Values {
    pub namespace: String,
    pub cluster_domain: String,
    #[serde(rename = "identityTrustAnchorsPEM")]
    pub identity_trust_anchors_pem: String,
    pub identity: Identity,
    pub image: Image,
    pub control_plane: ControlPlane,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Identity {
    pub trust_domain: String,
    pub issuance_lifetime: String,
    pub issuer: Issuer,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Issuer {
    pub external: bool,
    pub secret_name: String,
    pub tls: IssuerTls,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerTls {
    #[serde(rename = "crtPEM")]
    pub crt_pem: String,
    #[serde(rename = "keyPEM")]
    pub key_pem: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ControlPlane {
    pub replicas: u32,
    pub log_level: String,
    pub resources: Resources,
}

impl Check for Values {
    fn check(&self) -> Result<(), (String, String)> {
        check_names(
            &self.namespace,
            &self.cluster_domain,
            &self.identity.trust_domain,
        )?;
        check_duration(
            "identity.issuanceLifetime",
            &self.identity.issuance_lifetime,
        )?;
        check_dns_name(
            "identity.issuer.secretName",
            &self.identity.issuer.secret_name,
        )?;
        self.image.check()?;
        check_replicas("controlPlane.replicas", self.control_plane.replicas, 100)?;
        if self.control_plane.log_level.is_empty() {
            return Err(("controlPlane.logLevel".into(), "must not be empty".into()));
        }
        self.control_plane
            .resources
            .check("controlPlane.resources")?;
        // What the templates' `required` refuse.
        if self.identity_trust_anchors_pem.is_empty() {
            return Err((
                "identityTrustAnchorsPEM".into(),
                "is required: pass --identity-trust-anchors-file ca.crt".into(),
            ));
        }
        if !self.identity.issuer.external
            && (self.identity.issuer.tls.crt_pem.is_empty()
                || self.identity.issuer.tls.key_pem.is_empty())
        {
            return Err((
                "identity.issuer.tls".into(),
                "the issuer certificate and key are required: pass \
                 --identity-issuer-certificate-file and --identity-issuer-key-file, or \
                 --identity-external-issuer for an existing kubernetes.io/tls Secret"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Every object of the chart, in apply order.
pub fn objects(v: &Values) -> Vec<Value> {
    let ns = v.namespace.as_str();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let cluster_role = format!("{NAME}-{ns}");
    let mut out = vec![
        objects::namespace(ns, NAME),
        objects::service_account(NAME, ns, true),
        objects::role("ClusterRole", &cluster_role, None, NAME, cluster_rules()),
        objects::binding("ClusterRoleBinding", &cluster_role, None, NAME, NAME, ns),
        objects::trust_roots(ns, NAME, &v.identity_trust_anchors_pem),
    ];
    if !v.identity.issuer.external {
        out.push(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": objects::meta(&v.identity.issuer.secret_name, ns, NAME),
            "data": {
                "ca.crt": b64(&v.identity_trust_anchors_pem),
                "tls.crt": b64(&v.identity.issuer.tls.crt_pem),
                "tls.key": b64(&v.identity.issuer.tls.key_pem),
            },
        }));
    }
    for (name, port_name, port) in SERVICES {
        out.push(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": objects::meta(name, ns, NAME),
            "spec": {
                "type": "ClusterIP",
                "selector": {"app.kubernetes.io/name": NAME},
                "ports": [{"name": port_name, "port": port, "protocol": "TCP", "targetPort": port_name}],
            },
        }));
    }
    out.extend(objects::deployment(Workload {
        name: NAME,
        namespace: ns,
        replicas: v.control_plane.replicas,
        uid: UID,
        automount: None,
        container: container(v),
        volumes: json!([
            {"name": "trust-roots", "configMap": {"name": objects::TRUST_ROOTS_CONFIGMAP}},
            {"name": "issuer", "secret": {"defaultMode": 0o440, "secretName": v.identity.issuer.secret_name}},
        ]),
    }));
    out
}

/// Identity reviews tokens; destination reads Services, EndpointSlices and Pods.
pub fn cluster_rules() -> Vec<Value> {
    vec![
        rule("authentication.k8s.io", &["tokenreviews"], &["create"]),
        rule("", &["services", "pods"], &["get", "list", "watch"]),
        rule(
            "discovery.k8s.io",
            &["endpointslices"],
            &["get", "list", "watch"],
        ),
    ]
}

fn container(v: &Values) -> Value {
    let id = &v.identity;
    let args = [
        format!(
            "--identity-addr=0.0.0.0:{}",
            strait_core::ports::IDENTITY_GRPC
        ),
        format!(
            "--destination-addr=0.0.0.0:{}",
            strait_core::ports::DESTINATION_GRPC
        ),
        format!("--admin-addr=0.0.0.0:{ADMIN_PORT}"),
        format!("--cluster-domain={}", v.cluster_domain),
        format!("--trust-domain={}", id.trust_domain),
        format!("--control-namespace={}", v.namespace),
        format!("--trust-anchors={TRUST_ROOTS_DIR}/ca-bundle.crt"),
        format!("--issuer-cert={ISSUER_DIR}/tls.crt"),
        format!("--issuer-key={ISSUER_DIR}/tls.key"),
        format!("--cert-lifetime={}", id.issuance_lifetime),
    ];
    json!({
        "name": "control-plane",
        "image": v.image.of("control-plane"),
        "imagePullPolicy": v.image.pull_policy,
        "args": args,
        "env": [env("STRAIT_LOG", v.control_plane.log_level.clone())],
        "ports": [
            port("identity", strait_core::ports::IDENTITY_GRPC),
            port("destination", strait_core::ports::DESTINATION_GRPC),
            port("admin", ADMIN_PORT),
        ],
        "livenessProbe": probe("/metrics", "admin", false, true),
        "readinessProbe": probe("/metrics", "admin", false, false),
        "resources": v.control_plane.resources,
        "securityContext": objects::container_security(UID),
        "volumeMounts": [
            mount("trust-roots", TRUST_ROOTS_DIR),
            mount("issuer", ISSUER_DIR),
        ],
    })
}
