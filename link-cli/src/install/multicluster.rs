//! `strait multicluster install`: the objects of `charts/strait-multicluster`, for the same
//! values, and the check `strait multicluster uninstall` makes before it prints anything.

use super::objects::{self, TRUST_ROOTS_DIR, Workload, env, mount, port, probe, rule};
use super::values::{
    Check, Image, Resources, StringMap, check_dns_label, check_duration, check_names,
    check_percent, check_port, check_replicas,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use strait_core::{identity::GATEWAY_SERVICE_ACCOUNT as GATEWAY, labels};

/// The mirror controller's Deployment and ServiceAccount.
pub const MIRROR: &str = "strait-mirror";
/// The ServiceAccount linked clusters read this one as (`strait link` requests its token).
pub const REMOTE_ACCESS: &str = "strait-service-mirror-remote-access";
/// The Role (and its RoleBinding), in the multicluster namespace, that lets the remote-access
/// ServiceAccount request its own next token: linked mirror controllers renew their
/// credentials before they expire. Another account's is `<name>-token`
/// ([`remote_access_account`]).
pub const REMOTE_ACCESS_TOKEN_ROLE: &str = "strait-service-mirror-remote-access-token";
/// The Role (and the remote-access account's RoleBinding), in the control-plane namespace,
/// that lets linked clusters read this one's trust anchors (`strait check --multicluster`).
/// Another account's RoleBinding to it is `<name>-anchors`.
pub const REMOTE_ACCESS_ANCHORS_ROLE: &str = "strait-service-mirror-remote-access-anchors";
const TOKEN_DIR: &str = "/var/run/secrets/tokens";
const TOKEN_FILE: &str = "strait-identity-token";
/// The audience of the gateway's identity token (as Linkerd's proxies request).
const IDENTITY_AUDIENCE: &str = "identity.l5d.io";
/// The images' users (images/gateway and images/mirror Dockerfiles).
const GATEWAY_UID: u32 = 2103;
const MIRROR_UID: u32 = 65532;

/// `values.yaml` of the chart.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Values {
    pub namespace: String,
    pub cluster_domain: String,
    #[serde(rename = "identityTrustAnchorsPEM")]
    pub identity_trust_anchors_pem: String,
    pub identity: Identity,
    pub control_plane: ControlPlaneRef,
    pub image: Image,
    pub gateway: Gateway,
    pub mirror: Mirror,
    pub remote_access: RemoteAccess,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Identity {
    pub trust_domain: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ControlPlaneRef {
    pub namespace: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Gateway {
    pub enabled: bool,
    pub replicas: u32,
    pub port: u16,
    pub probe: GatewayProbe,
    pub service: GatewayService,
    pub log_level: String,
    pub resources: Resources,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GatewayProbe {
    pub port: u16,
    pub path: String,
    pub period: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GatewayService {
    #[serde(rename = "type")]
    pub type_: ServiceType,
    pub annotations: StringMap,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub enum ServiceType {
    LoadBalancer,
    NodePort,
    ClusterIP,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Mirror {
    pub replicas: u32,
    pub lease_duration: String,
    pub credentials_renew_at_percent: u8,
    pub log_level: String,
    pub resources: Resources,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RemoteAccess {
    pub enabled: bool,
    pub pods: bool,
}

impl Check for Values {
    fn check(&self) -> Result<(), (String, String)> {
        check_names(
            &self.namespace,
            &self.cluster_domain,
            &self.identity.trust_domain,
        )?;
        check_dns_label("controlPlane.namespace", &self.control_plane.namespace)?;
        self.image.check()?;
        let g = &self.gateway;
        check_replicas("gateway.replicas", g.replicas, 100)?;
        check_port("gateway.port", g.port)?;
        check_port("gateway.probe.port", g.probe.port)?;
        if !g.probe.path.starts_with('/') {
            return Err(("gateway.probe.path".into(), "must start with /".into()));
        }
        check_duration("gateway.probe.period", &g.probe.period)?;
        g.resources.check("gateway.resources")?;
        check_replicas("mirror.replicas", self.mirror.replicas, 10)?;
        check_duration("mirror.leaseDuration", &self.mirror.lease_duration)?;
        check_percent(
            "mirror.credentialsRenewAtPercent",
            self.mirror.credentials_renew_at_percent,
        )?;
        self.mirror.resources.check("mirror.resources")?;
        for (k, s) in [
            ("gateway.logLevel", &g.log_level),
            ("mirror.logLevel", &self.mirror.log_level),
        ] {
            if s.is_empty() {
                return Err((k.into(), "must not be empty".into()));
            }
        }
        if self.identity_trust_anchors_pem.is_empty() {
            return Err((
                "identityTrustAnchorsPEM".into(),
                "is required: pass --identity-trust-anchors-file with the ca.crt the control \
                 plane was installed with (from a running cluster: kubectl -n strait get \
                 configmap strait-identity-trust-roots -o jsonpath='{.data.ca-bundle\\.crt}')"
                    .into(),
            ));
        }
        Ok(())
    }
}

impl Values {
    /// `<sa>.<ns>.serviceaccount.identity.<control-ns>.<trust-domain>`
    fn identity(&self, sa: &str, ns: &str) -> String {
        format!(
            "{sa}.{ns}.serviceaccount.identity.{}.{}",
            self.control_plane.namespace, self.identity.trust_domain
        )
    }
}

/// The Link CRD, as crdgen wrote it into the chart.
pub fn crd() -> Result<Value, serde_saphyr::Error> {
    serde_saphyr::from_str(include_str!(
        "../../../charts/strait-multicluster/crds/link.yaml"
    ))
}

/// Every object of the chart's templates (not the CRD), in apply order.
pub fn objects(v: &Values) -> Vec<Value> {
    let ns = v.namespace.as_str();
    let mut out = vec![
        objects::namespace(ns, "strait-multicluster"),
        objects::trust_roots(ns, "strait-multicluster", &v.identity_trust_anchors_pem),
    ];
    if v.gateway.enabled {
        out.extend(gateway(v));
    }
    out.extend(mirror(v));
    if v.remote_access.enabled {
        let cp = v.control_plane.namespace.as_str();
        out.push(objects::role(
            "ClusterRole",
            &remote_access_cluster_role(ns),
            None,
            REMOTE_ACCESS,
            remote_access_rules(v.remote_access.pods),
        ));
        out.push(objects::role(
            "Role",
            REMOTE_ACCESS_ANCHORS_ROLE,
            Some(cp),
            REMOTE_ACCESS,
            vec![anchors_rule()],
        ));
        out.extend(remote_access_account(REMOTE_ACCESS, ns, cp));
    }
    out
}

/// The ClusterRole every remote-access account is bound to (what linked clusters may read).
pub fn remote_access_cluster_role(mc_namespace: &str) -> String {
    format!("{REMOTE_ACCESS}-{mc_namespace}")
}

/// One ServiceAccount that a linked cluster reads this one as, and its grants: the
/// ClusterRoleBinding to [`remote_access_cluster_role`], a Role and RoleBinding `<name>-token`
/// to request its own token (renewal), and a RoleBinding `<name>-anchors` to
/// [`REMOTE_ACCESS_ANCHORS_ROLE`] in the control-plane namespace. The chart's own account is
/// `remote_access_account(REMOTE_ACCESS, ..)`; `strait multicluster allow` prints others. The
/// ClusterRole and the anchors Role are the chart's, shared by every account.
pub fn remote_access_account(
    name: &str,
    mc_namespace: &str,
    control_plane_namespace: &str,
) -> Vec<Value> {
    let ns = mc_namespace;
    let token = format!("{name}-token");
    let anchors = format!("{name}-anchors");
    vec![
        objects::service_account(name, ns, false),
        objects::binding_to(
            "ClusterRoleBinding",
            &format!("{name}-{ns}"),
            &remote_access_cluster_role(ns),
            None,
            name,
            name,
            ns,
        ),
        objects::role(
            "Role",
            &token,
            Some(ns),
            name,
            vec![objects::named_rule(
                "",
                &["serviceaccounts/token"],
                &["create"],
                &[name],
            )],
        ),
        objects::binding("RoleBinding", &token, Some(ns), name, name, ns),
        objects::binding_to(
            "RoleBinding",
            &anchors,
            REMOTE_ACCESS_ANCHORS_ROLE,
            Some(control_plane_namespace),
            name,
            name,
            ns,
        ),
    ]
}

/// Read the control plane's published trust anchors, and nothing else there.
fn anchors_rule() -> Value {
    objects::named_rule(
        "",
        &["configmaps"],
        &["get"],
        &[objects::TRUST_ROOTS_CONFIGMAP],
    )
}

/// What linked clusters may read here; Pods only for remote discovery.
pub fn remote_access_rules(pods: bool) -> Vec<Value> {
    let read = ["get", "list", "watch"];
    let mut rules = vec![
        rule("", &["services"], &read),
        rule("discovery.k8s.io", &["endpointslices"], &read),
        rule("multicluster.x-k8s.io", &["serviceexports"], &read),
    ];
    if pods {
        rules.push(rule("", &["pods"], &read));
    }
    rules
}

/// The mirror controller in its namespace: Links (finalizer, status), their credentials
/// Secrets (read, and patched with renewed tokens), the leader Lease.
pub fn mirror_role_rules() -> Vec<Value> {
    vec![
        rule(
            "multicluster.strait.dev",
            &["links"],
            &["get", "list", "watch", "patch"],
        ),
        rule(
            "multicluster.strait.dev",
            &["links/status"],
            &["get", "patch"],
        ),
        // patch: renewal writes the renewed kubeconfig back (mirror-controller/src/renew.rs).
        rule("", &["secrets"], &["get", "list", "watch", "patch"]),
        rule(
            "coordination.k8s.io",
            &["leases"],
            &["get", "create", "update"],
        ),
    ]
}

/// The mirror controller everywhere: its mirrors, Namespaces, Events.
pub fn mirror_cluster_rules() -> Vec<Value> {
    let write = ["get", "list", "watch", "create", "patch", "delete"];
    vec![
        rule("", &["services"], &write),
        rule("discovery.k8s.io", &["endpointslices"], &write),
        rule("", &["namespaces"], &["get", "list", "watch", "create"]),
        rule("events.k8s.io", &["events"], &["create", "patch"]),
    ]
}

fn gateway(v: &Values) -> Vec<Value> {
    let ns = v.namespace.as_str();
    let g = &v.gateway;
    let cp = &v.control_plane.namespace;
    let own_identity = v.identity(GATEWAY, ns);
    let mut annotations: serde_json::Map<String, Value> = g
        .service
        .annotations
        .iter()
        .map(|(k, s)| (k.clone(), json!(s)))
        .collect();
    annotations.insert(labels::GATEWAY_IDENTITY.into(), json!(own_identity));
    annotations.insert(labels::PROBE_PATH.into(), json!(g.probe.path));
    annotations.insert(labels::PROBE_PERIOD.into(), json!(g.probe.period));
    let mut service_meta = objects::meta(GATEWAY, ns, GATEWAY);
    service_meta["annotations"] = Value::Object(annotations);
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": service_meta,
        "spec": {
            "type": g.service.type_,
            "selector": {"app.kubernetes.io/name": GATEWAY},
            "ports": [
                {"name": "mc-gateway", "port": g.port, "protocol": "TCP", "targetPort": "mc-gateway"},
                {"name": "mc-probe", "port": g.probe.port, "protocol": "TCP", "targetPort": "mc-probe"},
            ],
        },
    });
    // The proxy's own settings (proxy/src/env.rs), in gateway mode.
    let env = [
        env("STRAIT_LOG", g.log_level.clone()),
        env(
            "STRAIT_PROXY_INBOUND_LISTEN_ADDR",
            format!("0.0.0.0:{}", g.port),
        ),
        env(
            "STRAIT_PROXY_ADMIN_LISTEN_ADDR",
            format!("0.0.0.0:{}", g.probe.port),
        ),
        env("STRAIT_PROXY_CLUSTER_DOMAIN", v.cluster_domain.clone()),
        env(
            "STRAIT_PROXY_IDENTITY_TRUST_ANCHORS",
            format!("{TRUST_ROOTS_DIR}/ca-bundle.crt"),
        ),
        env(
            "STRAIT_PROXY_IDENTITY_SVC_ADDR",
            format!("strait-identity.{cp}.svc.{}:8080", v.cluster_domain),
        ),
        env(
            "STRAIT_PROXY_IDENTITY_SVC_NAME",
            v.identity("strait-identity", cp),
        ),
        env("STRAIT_PROXY_IDENTITY_LOCAL_NAME", own_identity),
        env(
            "STRAIT_PROXY_IDENTITY_TOKEN_FILE",
            format!("{TOKEN_DIR}/{TOKEN_FILE}"),
        ),
        env(
            "STRAIT_PROXY_DESTINATION_ADDR",
            format!("strait-dst.{cp}.svc.{}:8086", v.cluster_domain),
        ),
        env(
            "STRAIT_PROXY_DESTINATION_SVC_NAME",
            v.identity("strait-destination", cp),
        ),
        // Who may cross is also a Server and AuthorizationPolicies on this pod's port.
        json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
        env("STRAIT_PROXY_POLICY_WORKLOAD", format!("{ns}:$(POD_NAME)")),
    ];
    let container = json!({
        "name": "gateway",
        "image": v.image.of("gateway"),
        "imagePullPolicy": v.image.pull_policy,
        "env": env,
        "ports": [port("mc-gateway", g.port), port("mc-probe", g.probe.port)],
        "livenessProbe": probe("/live", "mc-probe", true, true),
        "readinessProbe": probe("/ready", "mc-probe", true, false),
        "resources": g.resources,
        "securityContext": objects::container_security(GATEWAY_UID),
        "volumeMounts": [mount("trust-roots", TRUST_ROOTS_DIR), mount("identity-token", TOKEN_DIR)],
    });
    let mut out = vec![objects::service_account(GATEWAY, ns, false), service];
    out.extend(objects::deployment(Workload {
        name: GATEWAY,
        namespace: ns,
        replicas: g.replicas,
        uid: GATEWAY_UID,
        automount: Some(false),
        container,
        volumes: json!([
            {"name": "trust-roots", "configMap": {"name": objects::TRUST_ROOTS_CONFIGMAP}},
            {"name": "identity-token", "projected": {"sources": [{"serviceAccountToken": {
                "audience": IDENTITY_AUDIENCE,
                "expirationSeconds": 86400,
                "path": TOKEN_FILE,
            }}]}},
        ]),
    }));
    out
}

fn mirror(v: &Values) -> Vec<Value> {
    let ns = v.namespace.as_str();
    let m = &v.mirror;
    let cluster_name = format!("{MIRROR}-{ns}");
    let container = json!({
        "name": "mirror",
        "image": v.image.of("mirror"),
        "imagePullPolicy": v.image.pull_policy,
        "args": [
            format!("--namespace={ns}"),
            format!("--trust-anchors={TRUST_ROOTS_DIR}/ca-bundle.crt"),
            format!("--admin-addr=0.0.0.0:{}", strait_core::ports::MIRROR_ADMIN),
            format!("--lease-duration={}", m.lease_duration),
        ],
        "env": [
            env("RUST_LOG", m.log_level.clone()),
            env(
                "STRAIT_MIRROR_CREDENTIALS_RENEW_AT_PERCENT",
                m.credentials_renew_at_percent.to_string(),
            ),
            {"name": "STRAIT_MIRROR_HOLDER", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        "ports": [port("admin", strait_core::ports::MIRROR_ADMIN)],
        "livenessProbe": probe("/metrics", "admin", false, true),
        "readinessProbe": probe("/ready", "admin", false, false),
        "resources": m.resources,
        "securityContext": objects::container_security(MIRROR_UID),
        "volumeMounts": [mount("trust-roots", TRUST_ROOTS_DIR)],
    });
    let mut out = vec![
        objects::service_account(MIRROR, ns, true),
        objects::role("Role", MIRROR, Some(ns), MIRROR, mirror_role_rules()),
        objects::binding("RoleBinding", MIRROR, Some(ns), MIRROR, MIRROR, ns),
        objects::role(
            "ClusterRole",
            &cluster_name,
            None,
            MIRROR,
            mirror_cluster_rules(),
        ),
        objects::binding(
            "ClusterRoleBinding",
            &cluster_name,
            None,
            MIRROR,
            MIRROR,
            ns,
        ),
    ];
    out.extend(objects::deployment(Workload {
        name: MIRROR,
        namespace: ns,
        replicas: m.replicas,
        uid: MIRROR_UID,
        automount: None,
        container,
        volumes: json!([{"name": "trust-roots", "configMap": {"name": objects::TRUST_ROOTS_CONFIGMAP}}]),
    }));
    out
}

/// `strait multicluster uninstall` refuses while any Link exists: `links` are
/// `(namespace, name)` pairs. The message lists them and says how to remove them.
pub fn refuse_while_links(links: &[(String, String)]) -> Result<(), super::InstallError> {
    if links.is_empty() {
        return Ok(());
    }
    let mut sorted = links.to_vec();
    sorted.sort();
    let list = sorted
        .iter()
        .map(|(ns, name)| format!("  {ns}/{name}"))
        .collect::<Vec<_>>()
        .join("\n");
    let first = &sorted[0];
    Err(super::InstallError::LinksExist {
        count: sorted.len(),
        list,
        example: format!("kubectl -n {} delete link {}", first.0, first.1),
    })
}
