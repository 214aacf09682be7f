//! Pieces every chart object shares, built exactly as the charts' `_helpers.tpl` builds them:
//! labels, security contexts, anti-affinity and PodDisruptionBudgets.

use serde_json::{Value, json};
use strait_core::labels;

/// The trust anchors' mount point; the ConfigMap key is `ca-bundle.crt`.
pub const TRUST_ROOTS_DIR: &str = "/var/run/strait/identity/trust-roots";
/// The trust anchors' ConfigMap, in the control-plane and the multicluster namespace.
pub const TRUST_ROOTS_CONFIGMAP: &str = "strait-identity-trust-roots";

/// `strait.labels`
pub fn labels(name: &str) -> Value {
    json!({"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "strait"})
}

/// Metadata of a namespaced object.
pub fn meta(name: &str, namespace: &str, component: &str) -> Value {
    json!({"name": name, "namespace": namespace, "labels": labels(component)})
}

/// Metadata of a cluster-scoped object.
pub fn cluster_meta(name: &str, component: &str) -> Value {
    json!({"name": name, "labels": labels(component)})
}

/// `strait.containerSecurityContext`: restricted, read-only, no capabilities.
pub fn container_security(uid: u32) -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": true,
        "runAsGroup": uid,
        "runAsNonRoot": true,
        "runAsUser": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    })
}

/// `strait.podSecurityContext`
pub fn pod_security(uid: u32) -> Value {
    json!({
        "fsGroup": uid,
        "runAsGroup": uid,
        "runAsNonRoot": true,
        "runAsUser": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    })
}

/// `strait.antiAffinity`: spread replicas over nodes (preferred, so one node still schedules).
pub fn anti_affinity(app: &str) -> Value {
    json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
        "podAffinityTerm": {
            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": app}},
            "topologyKey": "kubernetes.io/hostname",
        },
        "weight": 100,
    }]}})
}

/// `strait.pdb`
pub fn pdb(namespace: &str, app: &str) -> Value {
    json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(app, namespace, app),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": app}},
        },
    })
}

/// The trust-anchor ConfigMap.
pub fn trust_roots(namespace: &str, component: &str, pem: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(TRUST_ROOTS_CONFIGMAP, namespace, component),
        "data": {"ca-bundle.crt": pem},
    })
}

/// An HTTP probe of `path` on the named port.
pub fn probe(path: &str, port: &str, https: bool, liveness: bool) -> Value {
    let mut get = json!({"path": path, "port": port});
    if https {
        get["scheme"] = json!("HTTPS");
    }
    if liveness {
        json!({"httpGet": get, "initialDelaySeconds": 10, "periodSeconds": 10, "failureThreshold": 3})
    } else {
        json!({"httpGet": get, "periodSeconds": 5, "failureThreshold": 3})
    }
}

/// A ServiceAccount; `automount: false` for pods that never call the API server.
pub fn service_account(name: &str, namespace: &str, automount: bool) -> Value {
    let mut sa = json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": meta(name, namespace, name),
    });
    if !automount {
        sa["automountServiceAccountToken"] = json!(false);
    }
    sa
}

/// A policy rule.
pub fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": [group], "resources": resources, "verbs": verbs})
}

/// A policy rule for the named objects only.
pub fn named_rule(group: &str, resources: &[&str], verbs: &[&str], names: &[&str]) -> Value {
    let mut r = rule(group, resources, verbs);
    r["resourceNames"] = json!(names);
    r
}

/// Metadata of a Role (namespaced) or a ClusterRole and their bindings.
fn rbac_meta(name: &str, namespace: Option<&str>, component: &str) -> Value {
    match namespace {
        Some(ns) => meta(name, ns, component),
        None => cluster_meta(name, component),
    }
}

/// A (Cluster)RoleBinding of the (Cluster)Role of the same name to one ServiceAccount.
pub fn binding(
    kind: &str,
    name: &str,
    namespace: Option<&str>,
    component: &str,
    sa: &str,
    sa_ns: &str,
) -> Value {
    binding_to(kind, name, name, namespace, component, sa, sa_ns)
}

/// A (Cluster)RoleBinding named `name` of the (Cluster)Role `role` to one ServiceAccount.
pub fn binding_to(
    kind: &str,
    name: &str,
    role: &str,
    namespace: Option<&str>,
    component: &str,
    sa: &str,
    sa_ns: &str,
) -> Value {
    let role_kind = if kind == "RoleBinding" {
        "Role"
    } else {
        "ClusterRole"
    };
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": rbac_meta(name, namespace, component),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": sa_ns}],
    })
}

/// A (Cluster)Role.
pub fn role(
    kind: &str,
    name: &str,
    namespace: Option<&str>,
    component: &str,
    rules: Vec<Value>,
) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": rbac_meta(name, namespace, component),
        "rules": rules,
    })
}

/// One of Strait's Namespaces, which its admission webhooks leave alone.
pub fn namespace(name: &str, component: &str) -> Value {
    let mut meta = cluster_meta(name, component);
    meta["labels"][labels::ADMISSION_WEBHOOKS] = json!("disabled");
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": meta})
}

/// `strait.injectableNamespaces`: where the admission webhooks act.
pub fn injectable_namespaces(control_namespace: &str) -> Value {
    json!({"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", control_namespace]},
        {"key": labels::ADMISSION_WEBHOOKS, "operator": "NotIn", "values": ["disabled"]},
    ]})
}

/// What differs between the charts' Deployments.
#[derive(Debug)]
pub struct Workload<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub replicas: u32,
    pub uid: u32,
    /// `Some(false)` for pods that never call the API server.
    pub automount: Option<bool>,
    pub container: Value,
    pub volumes: Value,
}

/// The Deployment, and its PodDisruptionBudget when it has more than one replica.
pub fn deployment(w: Workload<'_>) -> Vec<Value> {
    let mut pod = json!({
        "serviceAccountName": w.name,
        "securityContext": pod_security(w.uid),
        "containers": [w.container],
        "volumes": w.volumes,
    });
    if let Some(automount) = w.automount {
        pod["automountServiceAccountToken"] = json!(automount);
    }
    if w.replicas > 1 {
        pod["affinity"] = anti_affinity(w.name);
    }
    let mut out = vec![json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(w.name, w.namespace, w.name),
        "spec": {
            "replicas": w.replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/name": w.name}},
            "template": {"metadata": {"labels": labels(w.name)}, "spec": pod},
        },
    })];
    if w.replicas > 1 {
        out.push(pdb(w.namespace, w.name));
    }
    out
}

/// A TCP container port.
pub fn port(name: &str, port: u16) -> Value {
    json!({"containerPort": port, "name": name, "protocol": "TCP"})
}

/// A read-only volume mount.
pub fn mount(name: &str, path: &str) -> Value {
    json!({"mountPath": path, "name": name, "readOnly": true})
}

/// An environment variable with a value.
pub fn env(name: &str, value: impl Into<String>) -> Value {
    json!({"name": name, "value": value.into()})
}
