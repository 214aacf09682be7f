//! One watch per kind (Pods, Namespaces and the four policy kinds), feeding the policy
//! [`Index`]. Same recovery story as destination's watches: kube-runtime's `watcher` with its
//! default backoff, and [`strait_k8s_api::relist`] so a relist replaces a kind at once.

use super::index::{Index, Kind, State};
use super::model::{
    AuthzPolicyInfo, MeshTlsInfo, NamespaceInfo, NetworkAuthnInfo, PodInfo, ServerInfo,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use strait_k8s_api::policy::{
    AuthorizationPolicy, MeshTLSAuthentication, NetworkAuthentication, Server,
};
use strait_k8s_api::relist;

/// Runs the six watches until the task is dropped or aborted.
pub async fn run(client: kube::Client, index: Arc<Index>) {
    tokio::join!(
        follow(
            Api::<Pod>::all(client.clone()),
            KindMap {
                index: &index,
                kind: Kind::Pod,
                project: PodInfo::from_object,
                map: |s| &mut s.pods,
            },
        ),
        follow(
            Api::<Namespace>::all(client.clone()),
            KindMap {
                index: &index,
                kind: Kind::Namespace,
                project: NamespaceInfo::from_object,
                map: |s| &mut s.namespaces,
            },
        ),
        follow(
            Api::<Server>::all(client.clone()),
            KindMap {
                index: &index,
                kind: Kind::Server,
                project: ServerInfo::from_object,
                map: |s| &mut s.servers,
            },
        ),
        follow(
            Api::<AuthorizationPolicy>::all(client.clone()),
            KindMap {
                index: &index,
                kind: Kind::AuthorizationPolicy,
                project: AuthzPolicyInfo::from_object,
                map: |s| &mut s.authz_policies,
            },
        ),
        follow(
            Api::<MeshTLSAuthentication>::all(client.clone()),
            KindMap {
                index: &index,
                kind: Kind::MeshTls,
                project: MeshTlsInfo::from_object,
                map: |s| &mut s.mesh_tls,
            },
        ),
        follow(
            Api::<NetworkAuthentication>::all(client),
            KindMap {
                index: &index,
                kind: Kind::Network,
                project: NetworkAuthnInfo::from_object,
                map: |s| &mut s.networks,
            },
        ),
    );
}

/// One kind's map in the index, as a [`relist::Store`].
struct KindMap<'a, O, K, V> {
    index: &'a Index,
    kind: Kind,
    project: fn(&O) -> Option<(K, V)>,
    map: fn(&mut State) -> &mut HashMap<K, V>,
}

impl<O, K: Eq + Hash, V: PartialEq> relist::Store for KindMap<'_, O, K, V> {
    type Key = K;
    type Value = V;

    fn upsert(&mut self, key: K, value: V) {
        let map = self.map;
        // A change that policy does not see (a pod's status, say) wakes nobody.
        self.index.write_if(|s| {
            let m = (map)(s);
            if m.get(&key) == Some(&value) {
                return false;
            }
            m.insert(key, value);
            true
        });
    }

    fn remove(&mut self, key: &K) {
        let map = self.map;
        self.index.write(|s| {
            (map)(s).remove(key);
        });
    }

    fn replace(&mut self, all: HashMap<K, V>) {
        tracing::debug!(kind = ?self.kind, count = all.len(), "listed");
        let map = self.map;
        self.index.write(|s| *(map)(s) = all);
        self.index.listed(self.kind);
    }
}

async fn follow<O, K, V>(api: Api<O>, into: KindMap<'_, O, K, V>)
where
    O: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K: Eq + Hash + Send + 'static,
    V: PartialEq + Send + 'static,
{
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let kind = into.kind;
    let project = into.project;
    let mut writer = relist::Writer::new(into, move |o: &O| {
        let (key, value) = project(o)?;
        Some((key, Some(value)))
    });
    while let Some(event) = stream.next().await {
        match event {
            Ok(ev) => writer.apply(&ev),
            Err(error) => tracing::warn!(?kind, %error, "watch failed; retrying with backoff"),
        }
    }
}
