//! The writes that prove ownership: every write of a mirror object shows, atomically, that
//! the object is ours (see "Only ours" in the crate docs).
//!
//! - `write` creates a name not in our stores, which fails on any existing object; only
//!   then `claim` (a metadata GET) tells ours (the store lagged) from someone else's;
//! - an object of ours is updated by `update_patch`, a JSON patch whose first operations
//!   `test` our two labels, so the API server refuses the whole patch if it stopped being ours;
//! - `delete` carries a uid precondition.
//!
//! Not server-side apply: creating a ClusterIP Service by apply costs the API server about
//! twice the CPU of a create (`bench/src/bin/mirror.rs` measures both), and a mirror's fields
//! are ours whole, so replacing them needs no field-ownership merge.

use crate::mirror;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};

/// Why a write of a mirror object failed. Reported in status and metrics, then retried.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("writing {kind} {namespace}/{name}")]
    Apply {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("encoding the update of {kind} {namespace}/{name}")]
    Encode {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("deleting {kind} {namespace}/{name}")]
    Delete {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("creating namespace {0}")]
    CreateNamespace(String, #[source] kube::Error),
    #[error("conflict: {kind} {namespace}/{name} exists and is not ours; left alone")]
    Conflict {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error("checking who owns {kind} {namespace}/{name}")]
    Ownership {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl WriteError {
    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            WriteError::Apply { .. } | WriteError::Encode { .. } => "apply",
            WriteError::Delete { .. } => "delete",
            WriteError::CreateNamespace(..) => "create_namespace",
            WriteError::Conflict { .. } => "conflict",
            WriteError::Ownership { .. } => "ownership",
        }
    }
}

/// A mirror object the controller writes: which of its fields a write replaces.
pub(crate) trait MirrorObject:
    kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + serde::Serialize
    + serde::de::DeserializeOwned
    + std::fmt::Debug
{
    /// JSON pointers of the fields a mirror sets; an update replaces each one whole.
    const FIELDS: &'static [&'static str];
}

impl MirrorObject for Service {
    const FIELDS: &'static [&'static str] = &[
        "/metadata/labels",
        "/metadata/annotations",
        "/spec/type",
        "/spec/ports",
    ];
}

impl MirrorObject for EndpointSlice {
    const FIELDS: &'static [&'static str] = &[
        "/metadata/labels",
        "/metadata/annotations",
        "/endpoints",
        "/ports",
    ];
}

/// What [`write`] did.
pub(crate) struct Written {
    /// The spec hash written.
    pub hash: String,
    /// The uid of the object, if this write created it.
    pub created_uid: Option<String>,
}

/// Writes one mirror object; two requests at most, one in the common cases: a name not in
/// our stores (`new`) is created, and on a conflict [`claim`]ed; an object of ours is
/// patched by [`update_patch`].
pub(crate) async fn write<K: MirrorObject>(
    client: &kube::Client,
    metrics: &crate::Metrics,
    desired: &K,
    new: bool,
    cluster: &str,
) -> Result<Written, WriteError> {
    let meta = desired.meta();
    let ns = meta.namespace.clone().unwrap_or_default();
    let name = meta.name.clone().unwrap_or_default();
    let hash = mirror::spec_hash(meta);
    let kind = kind_of::<K>();
    let api = Api::<K>::namespaced(client.clone(), &ns);
    let failed = |source| WriteError::Apply {
        kind,
        namespace: ns.clone(),
        name: name.clone(),
        source,
    };
    if new {
        let pp = PostParams {
            field_manager: Some(mirror::FIELD_MANAGER.into()),
            ..Default::default()
        };
        metrics.count_request("create");
        match api.create(&pp, desired).await {
            Ok(o) => {
                return Ok(Written {
                    hash,
                    created_uid: o.meta().uid.clone(),
                });
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                claim::<K>(client, metrics, &ns, &name, cluster).await?;
            }
            Err(e) => return Err(failed(e)),
        }
    }
    let patch = update_patch(desired, cluster).map_err(|e| WriteError::Encode {
        kind,
        namespace: ns.clone(),
        name: name.clone(),
        source: e,
    })?;
    let pp = PatchParams {
        field_manager: Some(mirror::FIELD_MANAGER.into()),
        ..Default::default()
    };
    metrics.count_request("patch");
    match api.patch(&name, &pp, &Patch::<()>::Json(patch)).await {
        Ok(_) => Ok(Written {
            hash,
            created_uid: None,
        }),
        // A failed `test`: someone else's object now (or an invalid change); tell which.
        Err(kube::Error::Api(s)) if s.code == 422 => {
            claim::<K>(client, metrics, &ns, &name, cluster).await?;
            Err(failed(kube::Error::Api(s)))
        }
        Err(e) => Err(failed(e)),
    }
}

/// The JSON patch that makes an object of ours match `desired`: `test`s that it still
/// carries our labels, then every field in [`MirrorObject::FIELDS`] replaced whole (`add`
/// replaces a member that exists and creates one that does not).
pub(crate) fn update_patch<K: MirrorObject>(
    desired: &K,
    cluster: &str,
) -> Result<json_patch::Patch, serde_json::Error> {
    let body = serde_json::to_value(desired)?;
    let label = |k: &str| {
        format!(
            "/metadata/labels/{}",
            k.replace('~', "~0").replace('/', "~1")
        )
    };
    let mut ops = vec![
        serde_json::json!({"op": "test", "path": label(strait_core::labels::MIRRORED_SERVICE), "value": "true"}),
        serde_json::json!({"op": "test", "path": label(strait_core::labels::CLUSTER_NAME), "value": cluster}),
    ];
    for path in K::FIELDS {
        let value = body
            .pointer(path)
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        ops.push(serde_json::json!({"op": "add", "path": path, "value": value}));
    }
    serde_json::from_value(serde_json::Value::Array(ops))
}

fn kind_of<K: MirrorObject>() -> &'static str {
    if K::kind(&()) == "Service" {
        "Service"
    } else {
        "EndpointSlice"
    }
}

/// Tells whether the existing `ns/name` is ours: `Ok` if it is or if it is gone, a
/// [`WriteError::Conflict`] if someone else's. A metadata-only GET.
pub(crate) async fn claim<K: MirrorObject>(
    client: &kube::Client,
    metrics: &crate::Metrics,
    ns: &str,
    name: &str,
    cluster: &str,
) -> Result<(), WriteError> {
    let kind = kind_of::<K>();
    metrics.count_request("get");
    match Api::<K>::namespaced(client.clone(), ns)
        .get_metadata_opt(name)
        .await
    {
        Ok(None) => Ok(()),
        Ok(Some(m)) if mirror::is_ours(&m.metadata, cluster) => Ok(()),
        Ok(Some(_)) => Err(WriteError::Conflict {
            kind,
            namespace: ns.to_string(),
            name: name.to_string(),
        }),
        Err(source) => Err(WriteError::Ownership {
            kind,
            namespace: ns.to_string(),
            name: name.to_string(),
            source,
        }),
    }
}

/// Deletes one object, only if it is still the one we saw (uid precondition); gone is fine.
pub(crate) async fn delete<K>(
    client: kube::Client,
    ns: &str,
    name: &str,
    uid: Option<String>,
) -> Result<(), kube::Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let dp = DeleteParams {
        preconditions: uid.map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..Default::default()
    };
    match Api::<K>::namespaced(client, ns).delete(name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_update_tests_ownership_then_replaces_every_mirror_field() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-east", "namespace": "ns",
                "labels": {"mirror.strait.dev/mirrored-service": "true",
                           "mirror.strait.dev/cluster-name": "east", "a~b": "c"},
                "annotations": {"x": "y"}},
            "spec": {"type": "ClusterIP", "ports": [{"name": "http", "port": 80}]},
        }))
        .unwrap();
        let patch = serde_json::to_value(update_patch(&svc, "east").unwrap()).unwrap();
        assert_eq!(
            patch,
            serde_json::json!([
                {"op": "test", "path": "/metadata/labels/mirror.strait.dev~1mirrored-service", "value": "true"},
                {"op": "test", "path": "/metadata/labels/mirror.strait.dev~1cluster-name", "value": "east"},
                {"op": "add", "path": "/metadata/labels", "value": svc.metadata.labels},
                {"op": "add", "path": "/metadata/annotations", "value": {"x": "y"}},
                {"op": "add", "path": "/spec/type", "value": "ClusterIP"},
                {"op": "add", "path": "/spec/ports", "value": [{"name": "http", "port": 80}]},
            ])
        );
    }

    #[test]
    fn an_update_of_a_slice_replaces_endpoints_and_ports() {
        let es: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-east", "namespace": "ns"},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["198.18.0.1"], "conditions": {"ready": false}}],
            "ports": [{"name": "http", "port": 4143}],
        }))
        .unwrap();
        let patch = serde_json::to_value(update_patch(&es, "east").unwrap()).unwrap();
        let ops = patch.as_array().unwrap();
        let paths: Vec<&str> = ops.iter().map(|o| o["path"].as_str().unwrap()).collect();
        assert_eq!(
            paths[2..],
            [
                "/metadata/labels",
                "/metadata/annotations",
                "/endpoints",
                "/ports"
            ]
        );
        assert_eq!(ops[4]["value"][0]["conditions"]["ready"], false);
        // Absent metadata is written as null, which clears the field: nothing stale stays.
        assert_eq!(ops[2]["value"], serde_json::Value::Null);
    }

    #[test]
    fn errors_have_bounded_metric_labels() {
        let conflict = WriteError::Conflict {
            kind: "Service",
            namespace: "ns".into(),
            name: "web-east".into(),
        };
        assert_eq!(conflict.metric_label(), "conflict");
        assert_eq!(
            conflict.to_string(),
            "conflict: Service ns/web-east exists and is not ours; left alone"
        );
    }
}
