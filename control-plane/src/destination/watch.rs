//! One watch per kind (Services, EndpointSlices, Pods), shared by every stream, feeding the
//! [`Index`].
//!
//! Each watch is kube-runtime's `watcher` with its default backoff: it lists, then watches, and
//! after an error or an expired resourceVersion it lists again. Objects of a (re)list are
//! buffered from `Init` to `InitDone` and then replace the whole kind at once
//! ([`strait_k8s_api::relist`]), so a relist cannot leave a deleted object behind nor show a
//! half-listed state; the index reports
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
use kube::runtime::watcher;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use strait_k8s_api::relist;

/// Runs the three watches until the task is dropped or aborted.
pub async fn run(client: kube::Client, index: Arc<Index>) {
    let services = follow(
        Api::<Service>::all(client.clone()),
        Ops {
            index: &index,
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
            reset: |index, all| index.reset_services(all),
        },
    );
    let slices = follow(
        Api::<EndpointSlice>::all(client.clone()),
        Ops {
            index: &index,
            kind: "EndpointSlice",
            key: |s: &EndpointSlice| obj_key(&s.metadata),
            project: SliceInfo::from_object,
            apply: Index::apply_slice,
            delete: Index::delete_slice,
            reset: |index, all| index.reset_slices(all),
        },
    );
    let pods = follow(
        Api::<Pod>::all(client),
        Ops {
            index: &index,
            kind: "Pod",
            key: |p: &Pod| obj_key(&p.metadata),
            project: PodInfo::from_object,
            apply: Index::apply_pod,
            delete: Index::delete_pod,
            reset: |index, all| index.reset_pods(all),
        },
    );
    tokio::join!(services, slices, pods);
}

fn obj_key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<ObjKey> {
    Some((meta.namespace.clone()?, meta.name.clone()?))
}

/// How one kind goes into the index: a [`relist::Store`] over the index's methods for it.
struct Ops<'a, K, Key, Info> {
    index: &'a Index,
    kind: &'static str,
    key: fn(&K) -> Option<Key>,
    project: fn(&K) -> Option<(Key, Info)>,
    apply: fn(&Index, Key, Info),
    delete: fn(&Index, &Key),
    reset: fn(&Index, HashMap<Key, Info>),
}

impl<K, Key: Eq + Hash, Info> relist::Store for Ops<'_, K, Key, Info> {
    type Key = Key;
    type Value = Info;

    fn upsert(&mut self, key: Key, info: Info) {
        (self.apply)(self.index, key, info);
    }

    fn remove(&mut self, key: &Key) {
        (self.delete)(self.index, key);
    }

    fn replace(&mut self, all: HashMap<Key, Info>) {
        tracing::debug!(kind = self.kind, count = all.len(), "listed");
        (self.reset)(self.index, all);
    }
}

async fn follow<K, Key, Info>(api: Api<K>, ops: Ops<'_, K, Key, Info>)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    Key: Eq + Hash + Send + 'static,
    Info: Send + 'static,
{
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let kind = ops.kind;
    let (key, project) = (ops.key, ops.project);
    // A slice that lost its service label (say) is no longer indexed: its entry goes.
    let mut writer = relist::Writer::new(ops, move |o: &K| {
        Some((key(o)?, project(o).map(|(_, info)| info)))
    });
    while let Some(event) = stream.next().await {
        match event {
            Ok(ev) => writer.apply(&ev),
            Err(error) => {
                tracing::warn!(kind, %error, "watch failed; retrying with backoff");
            }
        }
    }
}
