//! Label and annotation names. Everything Strait writes or reads on Kubernetes objects is named
//! here once.

/// The prefix of every label and annotation Strait owns on mirrors and exports.
pub const PREFIX: &str = "mirror.strait.dev/";

/// On a Service in the exporting cluster: `true` (reached through the gateway) or
/// `remote-discovery` (flat network).
pub const EXPORTED: &str = "mirror.strait.dev/exported";
pub const EXPORTED_GATEWAY: &str = "true";
pub const EXPORTED_REMOTE_DISCOVERY: &str = "remote-discovery";
/// On a Service that is a member of a federated service: `member` (what a Link's default
/// `federatedServiceSelector` selects).
pub const FEDERATED: &str = "mirror.strait.dev/federated";
pub const FEDERATED_MEMBER: &str = "member";
/// On a federated Service `<svc>-federated`: `true`. It is labelled [`MIRRORED_SERVICE`] too,
/// with [`CLUSTER_NAME`] empty ([`FEDERATED_OWNER`]): no Link's worker owns it, the
/// controller's federation reconciler does; each member cluster's worker owns its slices.
pub const FEDERATED_SERVICE: &str = "mirror.strait.dev/federated-service";
/// The [`CLUSTER_NAME`] of a federated Service: empty, which no Link's cluster name can be.
pub const FEDERATED_OWNER: &str = "";
/// On a federated Service: the members whose endpoints it lists, comma-separated cluster
/// names (`local` is this cluster's own member, if it has one).
pub const FEDERATED_MEMBERS: &str = "mirror.strait.dev/federated-members";
/// On a federated Service: the local Service whose pods are members too (same namespace).
pub const FEDERATED_LOCAL_MEMBER: &str = "mirror.strait.dev/federated-local-member";

/// On a mirror: `true`. Together with [`CLUSTER_NAME`], what proves a mirror is ours.
pub const MIRRORED_SERVICE: &str = "mirror.strait.dev/mirrored-service";
/// On a mirror: the linked cluster it mirrors.
pub const CLUSTER_NAME: &str = "mirror.strait.dev/cluster-name";
/// On a mirror (and on a federated Service's slice of a remote member): `<svc>.<ns>.svc.
/// <remote-cluster-domain>`, the remote Service's FQDN.
pub const REMOTE_SVC_FQ_NAME: &str = "mirror.strait.dev/remote-svc-fq-name";
/// On a mirror: the remote Service's resourceVersion it was last synced from.
pub const REMOTE_RESOURCE_VERSION: &str = "mirror.strait.dev/remote-resource-version";
/// On a mirror and its endpoints: the remote gateway's TLS identity.
pub const REMOTE_GATEWAY_IDENTITY: &str = "mirror.strait.dev/remote-gateway-identity";
/// On a remote-discovery mirror: the linked cluster whose pods its EndpointSlices list
/// directly (flat network; no gateway, so no [`REMOTE_GATEWAY_IDENTITY`]).
pub const REMOTE_DISCOVERY: &str = "mirror.strait.dev/remote-discovery";
/// On a remote-discovery mirror's EndpointSlice: the TLS identity of every endpoint it lists
/// (the remote pods' service account). A slice without it lists pods without a proxy.
pub const REMOTE_IDENTITY: &str = "mirror.strait.dev/remote-identity";
/// On a headless mirror's endpoint Services: the mirror it belongs to.
pub const HEADLESS_MIRROR_SVC_NAME: &str = "mirror.strait.dev/headless-mirror-svc-name";

/// On the gateway Service: its identity, and where and how often to probe it.
pub const GATEWAY_IDENTITY: &str = "mirror.strait.dev/gateway-identity";
pub const PROBE_PATH: &str = "mirror.strait.dev/probe-path";
pub const PROBE_PERIOD: &str = "mirror.strait.dev/probe-period";

/// On a pod whose proxy was injected: the proxy's version. Its presence means "meshed".
pub const PROXY_VERSION: &str = "strait.dev/proxy-version";
/// On a meshed pod: ports that the proxy treats as opaque TCP (comma-separated).
pub const OPAQUE_PORTS: &str = "strait.dev/opaque-ports";

/// The name of the mirror of Service `svc` from cluster `cluster`: `<svc>-<cluster>`.
pub fn mirror_name(svc: &str, cluster: &str) -> String {
    format!("{svc}-{cluster}")
}

/// The name of the federated Service that Services named `svc` join: `<svc>-federated`.
pub fn federated_name(svc: &str) -> String {
    format!("{svc}-federated")
}

/// The EndpointSlice in which cluster `cluster`'s member of federated Service `federated`
/// lists its endpoints: `<federated>-<cluster>`.
pub fn federated_slice_name(federated: &str, cluster: &str) -> String {
    format!("{federated}-{cluster}")
}

/// `<svc>.<ns>.svc.<cluster-domain>`
pub fn service_fqdn(svc: &str, ns: &str, cluster_domain: &str) -> String {
    format!("{svc}.{ns}.svc.{cluster_domain}")
}

/// On a namespace: `disabled` keeps Strait's admission webhooks (the proxy injector and its
/// policy) away from every pod in it. Strait's own namespaces carry it; kube-system is
/// excluded by name.
pub const ADMISSION_WEBHOOKS: &str = "strait.dev/admission-webhooks";

/// On a namespace or a pod: `enabled` injects the proxy into the pod(s), `disabled` (on a pod)
/// opts it out.
pub const INJECT: &str = "strait.dev/inject";
/// Proxy configuration annotations on a pod (or its template), with Linkerd's meanings.
pub const SKIP_INBOUND_PORTS: &str = "config.strait.dev/skip-inbound-ports";
pub const SKIP_OUTBOUND_PORTS: &str = "config.strait.dev/skip-outbound-ports";
pub const PROXY_CPU_REQUEST: &str = "config.strait.dev/proxy-cpu-request";
pub const PROXY_CPU_LIMIT: &str = "config.strait.dev/proxy-cpu-limit";
pub const PROXY_MEMORY_REQUEST: &str = "config.strait.dev/proxy-memory-request";
pub const PROXY_MEMORY_LIMIT: &str = "config.strait.dev/proxy-memory-limit";
pub const PROXY_LOG_LEVEL: &str = "config.strait.dev/proxy-log-level";
/// On a namespace or a pod: the default inbound policy of its ports that no Server selects
/// (Linkerd's `config.linkerd.io/default-inbound-policy`); the pod's wins over its namespace's,
/// which wins over the control plane's `--default-inbound-policy`.
pub const DEFAULT_INBOUND_POLICY: &str = "config.strait.dev/default-inbound-policy";

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert_eq!(super::mirror_name("web", "east"), "web-east");
        assert_eq!(super::federated_name("web"), "web-federated");
        assert_eq!(
            super::federated_slice_name("web-federated", "east"),
            "web-federated-east"
        );
        assert_eq!(
            super::service_fqdn("web", "shop", "cluster.local"),
            "web.shop.svc.cluster.local"
        );
    }
}
