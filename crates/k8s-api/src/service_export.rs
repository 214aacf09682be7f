//! The Multi-Cluster Services API's `ServiceExport` (KEP-1645, `multicluster.x-k8s.io/v1alpha1`):
//! the second way a Service is exported. A `ServiceExport` with a Service's name and namespace
//! exports that Service; it has no spec, and its status belongs to whoever implements MCS.
//!
//! Strait only reads it, and never in the cluster that would need write access to it. Its CRD
//! belongs to the MCS project, so `crdgen` does not write it into Strait's chart; the
//! end-to-end suite installs the upstream shape itself.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Declares that the Service with the same name and namespace is exported.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "multicluster.x-k8s.io",
    version = "v1alpha1",
    kind = "ServiceExport",
    namespaced,
    no_spec,
    status = "ServiceExportStatus",
    shortname = "svcex"
)]
pub struct ServiceExportSpec {}

/// Conditions set by the MCS implementation (Strait does not write them).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ServiceExportStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shape_has_no_spec() {
        let se: ServiceExport = serde_json::from_value(serde_json::json!({
            "apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceExport",
            "metadata": {"name": "web", "namespace": "shop"},
        }))
        .expect("an export without spec or status parses");
        assert_eq!(se.metadata.name.as_deref(), Some("web"));
        let v = serde_json::to_value(&se).expect("serializes");
        assert!(v.get("spec").is_none(), "{v}");
        assert_eq!(v["apiVersion"], "multicluster.x-k8s.io/v1alpha1");
        use kube::Resource;
        assert_eq!(ServiceExport::plural(&()), "serviceexports");
    }
}
