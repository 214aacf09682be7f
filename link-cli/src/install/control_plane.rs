//! `strait install`: the objects of `charts/strait-control-plane`, for the same values.

use super::objects::{self, TRUST_ROOTS_DIR, Workload, env, mount, port, probe, rule};
use super::values::{
    Check, Image, Resources, check_dns_name, check_duration, check_names, check_replicas,
};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use strait_core::labels;

/// The Deployment, its ServiceAccount and the container's name.
pub const NAME: &str = "strait-control-plane";
const ISSUER_DIR: &str = "/var/run/strait/identity/issuer";
/// The control plane's Services: (name, port name, port).
pub const SERVICES: [(&str, &str, u16); 4] = [
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
    ("strait-policy", "policy", strait_core::ports::POLICY_GRPC),
    ("strait-control-plane-admin", "admin", ADMIN_PORT),
];
/// The proxy injector's Service (the name its certificate carries: flag `--injector-service`).
pub const INJECTOR_SERVICE: &str = "strait-injector";
/// The control plane's `/metrics` (flag `--admin-addr`).
pub const ADMIN_PORT: u16 = strait_core::ports::CONTROL_PLANE_ADMIN;
/// The image's user (images/control-plane/Dockerfile).
const UID: u32 = 65532;

/// The policy CRDs (Server, AuthorizationPolicy, MeshTLSAuthentication,
/// NetworkAuthentication), as crdgen wrote them into the chart.
pub fn crds() -> Result<Vec<Value>, serde_saphyr::Error> {
    [
        include_str!("../../../charts/strait-control-plane/crds/server.yaml"),
        include_str!("../../../charts/strait-control-plane/crds/authorizationpolicy.yaml"),
        include_str!("../../../charts/strait-control-plane/crds/meshtlsauthentication.yaml"),
        include_str!("../../../charts/strait-control-plane/crds/networkauthentication.yaml"),
    ]
    .into_iter()
    .map(serde_saphyr::from_str)
    .collect()
}

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
    pub proxy_injector: ProxyInjector,
    pub proxy: Proxy,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProxyInjector {
    pub enabled: bool,
    pub timeout_seconds: u32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Proxy {
    pub log_level: String,
    pub default_inbound_policy: strait_k8s_api::policy::DefaultPolicy,
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
        if !(1..=30).contains(&self.proxy_injector.timeout_seconds) {
            return Err((
                "proxyInjector.timeoutSeconds".into(),
                "must be between 1 and 30 (seconds)".into(),
            ));
        }
        if self.proxy.log_level.is_empty() {
            return Err(("proxy.logLevel".into(), "must not be empty".into()));
        }
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
    if v.proxy_injector.enabled {
        out.extend(injector(v));
    }
    out
}

/// The injector's Service, its webhook, and the policy that refuses a pod the webhook missed.
fn injector(v: &Values) -> Vec<Value> {
    let ns = v.namespace.as_str();
    let name = format!("strait-proxy-injector-{ns}");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&v.identity_trust_anchors_pem);
    let selector = objects::injectable_namespaces(ns);
    let pods = json!({"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]});
    let mut webhook_rule = pods.clone();
    webhook_rule["scope"] = json!("Namespaced");
    let inject = labels::INJECT;
    let proxy = strait_inject::PROXY_CONTAINER;
    let message = format!(
        "{inject} is enabled for this pod, but the Strait proxy injector did not inject it: is \
         the control plane running (kubectl -n {ns} get pods -l app.kubernetes.io/name={NAME})? \
         The pod's controller retries; set {inject}: disabled on the pod to run it without the mesh"
    );
    let annotation = |of: &str| {
        format!(
            "has({of}.metadata.annotations) && '{inject}' in {of}.metadata.annotations ? \
             {of}.metadata.annotations['{inject}'].trim() : ''"
        )
    };
    vec![
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": objects::meta(INJECTOR_SERVICE, ns, NAME),
            "spec": {
                "type": "ClusterIP",
                "selector": {"app.kubernetes.io/name": NAME},
                "ports": [{"name": "injector", "port": 443, "protocol": "TCP", "targetPort": "injector"}],
            },
        }),
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": objects::cluster_meta(&name, NAME),
            "webhooks": [{
                "name": "proxy-injector.strait.dev",
                "admissionReviewVersions": ["v1"],
                "clientConfig": {
                    "caBundle": b64,
                    "service": {"name": INJECTOR_SERVICE, "namespace": ns, "path": "/inject", "port": 443},
                },
                "failurePolicy": "Ignore",
                "matchPolicy": "Equivalent",
                "namespaceSelector": selector,
                "reinvocationPolicy": "Never",
                "rules": [webhook_rule],
                "sideEffects": "None",
                "timeoutSeconds": v.proxy_injector.timeout_seconds,
            }],
        }),
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": objects::cluster_meta(&name, NAME),
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"namespaceSelector": selector, "resourceRules": [pods]},
                "variables": [
                    {"name": "own", "expression": annotation("object")},
                    {"name": "namespaced", "expression": annotation("namespaceObject")},
                    {"name": "required", "expression": "variables.own == 'enabled' || (variables.own != 'disabled' && variables.namespaced == 'enabled')"},
                    {"name": "injected", "expression": format!(
                        "(has(object.spec.initContainers) && object.spec.initContainers.exists(c, c.name == '{proxy}')) || \
                         object.spec.containers.exists(c, c.name == '{proxy}')"
                    )},
                ],
                "validations": [{
                    "expression": "!variables.required || variables.injected || (has(object.spec.hostNetwork) && object.spec.hostNetwork)",
                    "message": message,
                    "reason": "Forbidden",
                }],
            },
        }),
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": objects::cluster_meta(&name, NAME),
            "spec": {"policyName": name, "validationActions": ["Deny"]},
        }),
    ]
}

/// Identity reviews tokens; destination reads Services, EndpointSlices and Pods; policy reads
/// them, Namespaces and the policy resources, and writes AuthorizationPolicy status; the proxy
/// injector reads the annotations of a new pod's Namespace.
pub fn cluster_rules() -> Vec<Value> {
    vec![
        rule("authentication.k8s.io", &["tokenreviews"], &["create"]),
        rule("", &["services", "pods"], &["get", "list", "watch"]),
        rule(
            "discovery.k8s.io",
            &["endpointslices"],
            &["get", "list", "watch"],
        ),
        rule("", &["namespaces"], &["get", "list", "watch"]),
        rule(
            strait_k8s_api::policy::GROUP,
            &[
                "servers",
                "authorizationpolicies",
                "meshtlsauthentications",
                "networkauthentications",
            ],
            &["get", "list", "watch"],
        ),
        rule(
            strait_k8s_api::policy::GROUP,
            &["authorizationpolicies/status"],
            &["get", "patch", "update"],
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
        format!("--policy-addr=0.0.0.0:{}", strait_core::ports::POLICY_GRPC),
        format!(
            "--default-inbound-policy={}",
            v.proxy.default_inbound_policy
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
    let mut args = args.to_vec();
    let mut ports = vec![
        port("identity", strait_core::ports::IDENTITY_GRPC),
        port("destination", strait_core::ports::DESTINATION_GRPC),
        port("policy", strait_core::ports::POLICY_GRPC),
        port("admin", ADMIN_PORT),
    ];
    if v.proxy_injector.enabled {
        args.extend([
            "--injector".to_owned(),
            format!("--proxy-image={}", v.image.of("proxy")),
            format!("--proxy-init-image={}", v.image.of("proxy-init")),
            format!("--proxy-image-pull-policy={}", v.image.pull_policy.as_str()),
            format!("--proxy-log-level={}", v.proxy.log_level),
        ]);
        ports.push(port("injector", strait_core::ports::INJECTOR));
    }
    json!({
        "name": "control-plane",
        "image": v.image.of("control-plane"),
        "imagePullPolicy": v.image.pull_policy,
        "args": args,
        "env": [env("STRAIT_LOG", v.control_plane.log_level.clone())],
        "ports": ports,
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
