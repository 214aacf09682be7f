//! Whether a pod is injected, from its annotations and its namespace's.

use crate::pod::is_injected;
use k8s_openapi::api::core::v1::Pod;
use std::collections::BTreeMap;
use strait_core::labels;

/// What to do with a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Inject,
    Skip(SkipReason),
}

/// Why a pod is left alone; `as_str` is the metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Neither the pod nor its namespace says `strait.dev/inject: enabled`.
    NotEnabled,
    /// The pod says `strait.dev/inject: disabled`.
    Disabled,
    /// The proxy is there already (injection is idempotent).
    AlreadyInjected,
    /// `hostNetwork: true`: interception would rewrite the node's own rules.
    HostNetwork,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotEnabled => "not_enabled",
            Self::Disabled => "disabled",
            Self::AlreadyInjected => "already_injected",
            Self::HostNetwork => "host_network",
        }
    }
}

/// The pod's own annotation wins over its namespace's.
pub fn decide(pod: &Pod, namespace_annotations: &BTreeMap<String, String>) -> Decision {
    if is_injected(pod) {
        return Decision::Skip(SkipReason::AlreadyInjected);
    }
    let own = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(labels::INJECT))
        .map(|v| v.trim());
    let namespace = namespace_annotations.get(labels::INJECT).map(|v| v.trim());
    let enabled = match (own, namespace) {
        (Some("disabled"), _) => return Decision::Skip(SkipReason::Disabled),
        (Some("enabled"), _) => true,
        (_, Some("enabled")) => true,
        _ => false,
    };
    if !enabled {
        return Decision::Skip(SkipReason::NotEnabled);
    }
    if pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
    {
        return Decision::Skip(SkipReason::HostNetwork);
    }
    Decision::Inject
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(annotation: Option<&str>, host_network: bool) -> Pod {
        let mut v = serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [{"name": "app", "image": "app"}], "hostNetwork": host_network},
        });
        if let Some(a) = annotation {
            v["metadata"]["annotations"] = serde_json::json!({ labels::INJECT: a });
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_pod_wins_over_its_namespace() {
        let ns_on: BTreeMap<_, _> = [(labels::INJECT.to_owned(), "enabled".to_owned())].into();
        let ns_off = BTreeMap::new();
        use Decision::*;
        use SkipReason::*;
        for (own, ns, host, want) in [
            (None, &ns_on, false, Inject),
            (None, &ns_off, false, Skip(NotEnabled)),
            (Some("enabled"), &ns_off, false, Inject),
            (Some("disabled"), &ns_on, false, Skip(Disabled)),
            (Some("bogus"), &ns_off, false, Skip(NotEnabled)),
            (None, &ns_on, true, Skip(HostNetwork)),
        ] {
            assert_eq!(decide(&pod(own, host), ns), want, "{own:?} {ns:?} {host}");
        }
    }
}
