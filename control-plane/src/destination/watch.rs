//! One watch per kind (Services, EndpointSlices, Pods), shared by every stream, feeding the
//! [`Index`].
//!
//! Each watch is kube-runtime's `watcher` with its default backoff: it lists, then watches, and
//! after an error or an expired resourceVersion it lists again. Objects of a (re)list are
//! buffered from `Init` to `InitDone` and then replace the whole kind at once, so a relist
//! cannot leave a deleted object behind nor show a half-listed state; the index reports
//! itself synced once every kind has completed its first list. Objects are projected
//! ([`model`](super::model)) as they arrive; nothing else of them is kept.

use super::authority::ServiceKey;
use super::index::Index;
use super::model::{ObjKey, PodInfo, ServiceInfo, SliceInfo};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use std::sync::Arc;

/// Runs the three watches until the task is dropped or aborted.
pub async fn run(client: kube::Client, index: Arc<Index>) {
    let services = follow(
        Api::<Service>::all(client.clone()),
        &index,
        Ops {
            kind: "Service",
            key: |s: &Service| {
                Some(ServiceKey::new(
                    s.metadata.namespace.clone()?,
                    s.metadata.name.clone()?,
                ))
            },
            project: ServiceInfo::from_object,
            apply: Index::apply_service,
            delete: Index::delete_service,
            reset: Index::reset_services,
        },
    );
    let slices = follow(
        Api::<EndpointSlice>::all(client.clone()),
        &index,
        Ops {
            kind: "EndpointSlice",
            key: |s: &EndpointSlice| obj_key(&s.metadata),
            project: SliceInfo::from_object,
            apply: Index::apply_slice,
            delete: Index::delete_slice,
            reset: Index::reset_slices,
        },
    );
    let pods = follow(
        Api::<Pod>::all(client),
        &index,
        Ops {
            kind: "Pod",
            key: |p: &Pod| obj_key(&p.metadata),
            project: PodInfo::from_object,
            apply: Index::apply_pod,
            delete: Index::delete_pod,
            reset: Index::reset_pods,
        },
    );
    tokio::join!(services, slices, pods);
}

fn obj_key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<ObjKey> {
    Some((meta.namespace.clone()?, meta.name.clone()?))
}

/// How one kind goes into the index.
struct Ops<K, Key, Info> {
    kind: &'static str,
    key: fn(&K) -> Option<Key>,
    project: fn(&K) -> Option<(Key, Info)>,
    apply: fn(&Index, Key, Info),
    delete: fn(&Index, &Key),
    reset: fn(&Index, Vec<(Key, Info)>),
}

async fn follow<K, Key, Info>(api: Api<K>, index: &Index, ops: Ops<K, Key, Info>)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut buffer = Vec::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => buffer.clear(),
            Ok(Event::InitApply(obj)) => buffer.extend((ops.project)(&obj)),
            Ok(Event::InitDone) => {
                tracing::debug!(kind = ops.kind, count = buffer.len(), "listed");
                (ops.reset)(index, std::mem::take(&mut buffer));
            }
            Ok(Event::Apply(obj)) => match (ops.project)(&obj) {
                Some((key, info)) => (ops.apply)(index, key, info),
                // No longer something we index (e.g. a slice lost its service label).
                None => {
                    if let Some(key) = (ops.key)(&obj) {
                        (ops.delete)(index, &key);
                    }
                }
            },
            Ok(Event::Delete(obj)) => {
                if let Some(key) = (ops.key)(&obj) {
                    (ops.delete)(index, &key);
                }
            }
            Err(error) => {
                tracing::warn!(kind = ops.kind, %error, "watch failed; retrying with backoff");
            }
        }
    }
}
