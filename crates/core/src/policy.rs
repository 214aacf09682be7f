//! Inbound policy values the control plane, the injector and the proxy share.

/// Linkerd's default inbound policies: the values of the
/// `config.strait.dev/default-inbound-policy` annotation, the control plane's
/// `--default-inbound-policy` and the proxy's `STRAIT_PROXY_INBOUND_DEFAULT_POLICY`.
pub const DEFAULT_INBOUND_POLICIES: [&str; 5] = [
    "all-unauthenticated",
    "all-authenticated",
    "cluster-unauthenticated",
    "cluster-authenticated",
    "deny",
];

/// The networks the `cluster-*` default policies admit unless configured: Linkerd's
/// private ranges plus this project's test range.
pub const DEFAULT_CLUSTER_NETWORKS: &str =
    "10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,198.18.0.0/15,fd00::/8";
