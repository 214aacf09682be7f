//! Compact local stores: of each local object labelled as a mirror, only what a sync pass
//! reads (uid, the cluster it mirrors, the spec hash we wrote), not the object. At 10,000
//! mirrors a reflector of even metadata-only objects costs about a kilobyte each, twice.
//!
//! Fed by a watcher's events through [`strait_k8s_api::relist`]: a (re-)list replaces the
//! whole map at `InitDone`, so a deletion missed during a watch outage disappears with the
//! re-list.

use kube::api::ObjectMeta;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use strait_core::labels;
use strait_k8s_api::relist;
use tokio::sync::Notify;

/// (namespace, name); namespace is empty for cluster-scoped objects.
pub type Key = (String, String);

/// What a pass needs to know of one local object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    pub uid: Option<String>,
    /// The `cluster-name` label, when the object is also labelled `mirrored-service=true`.
    pub cluster: Option<String>,
    /// [`crate::mirror::SPEC_HASH`].
    pub hash: Option<String>,
}

impl Meta {
    pub fn of(m: &ObjectMeta) -> Self {
        let l = m.labels.as_ref();
        let mirrored = l
            .and_then(|l| l.get(labels::MIRRORED_SERVICE))
            .is_some_and(|v| v == "true");
        Self {
            uid: m.uid.clone(),
            cluster: l
                .and_then(|l| l.get(labels::CLUSTER_NAME))
                .filter(|_| mirrored)
                .cloned(),
            hash: m
                .annotations
                .as_ref()
                .and_then(|a| a.get(crate::mirror::SPEC_HASH))
                .cloned(),
        }
    }

    /// Whether this object is a mirror of `cluster` (ours to write and delete).
    pub fn is_ours(&self, cluster: &str) -> bool {
        self.cluster.as_deref() == Some(cluster)
    }
}

/// A shared map of [`Meta`] by key, filled from a watch, and whether it was listed yet.
#[derive(Clone, Debug, Default)]
pub struct Compact {
    map: relist::Shared<Key, Meta>,
    ready: Arc<AtomicBool>,
    ready_notify: Arc<Notify>,
}

impl Compact {
    pub fn get(&self, ns: &str, name: &str) -> Option<Meta> {
        self.map.get(&(ns.to_string(), name.to_string()))
    }

    /// Every object that is a mirror of `cluster`, with its uid.
    pub fn ours(&self, cluster: &str) -> Vec<(Key, Option<String>)> {
        self.map
            .read()
            .iter()
            .filter(|(_, m)| m.is_ours(cluster))
            .map(|(k, m)| (k.clone(), m.uid.clone()))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Waits for the first complete list.
    pub async fn wait_until_ready(&self) {
        loop {
            let notified = self.ready_notify.notified();
            if self.ready.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

impl FromIterator<(Key, Meta)> for Compact {
    fn from_iter<I: IntoIterator<Item = (Key, Meta)>>(iter: I) -> Self {
        Self {
            map: iter.into_iter().collect(),
            ..Default::default()
        }
    }
}

impl relist::Store for Compact {
    type Key = Key;
    type Value = Meta;

    fn upsert(&mut self, key: Key, meta: Meta) {
        self.map.upsert(key, meta);
    }

    fn remove(&mut self, key: &Key) {
        relist::Store::remove(&mut self.map, key);
    }

    /// Also marks the store ready: it holds a complete list.
    fn replace(&mut self, all: HashMap<Key, Meta>) {
        self.map.replace(all);
        self.ready.store(true, Ordering::Release);
        self.ready_notify.notify_waiters();
    }
}

/// Applies watch events of `K` to a [`Compact`] store.
pub type Writer<K> = relist::Writer<K, Compact>;

/// A writer of every object's [`Meta`] into `store`.
pub fn writer<K: kube::Resource + 'static>(store: Compact) -> Writer<K> {
    relist::Writer::new(store, |o: &K| {
        Some((relist::name_key(o), Some(Meta::of(o.meta()))))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;
    use kube::runtime::watcher::Event;

    fn svc(name: &str, cluster: Option<&str>) -> Service {
        let mut labels = serde_json::Map::new();
        if let Some(c) = cluster {
            labels.insert(labels::MIRRORED_SERVICE.into(), "true".into());
            labels.insert(labels::CLUSTER_NAME.into(), c.into());
        }
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("u-{name}"), "labels": labels,
                "annotations": {crate::mirror::SPEC_HASH: "h"}},
        }))
        .expect("svc")
    }

    #[test]
    fn relist_replaces_and_watch_updates() {
        let store = Compact::default();
        let mut w = writer::<Service>(store.clone());
        w.apply(&Event::<Service>::Init);
        w.apply(&Event::InitApply(svc("a-east", Some("east"))));
        w.apply(&Event::InitApply(svc("b-west", Some("west"))));
        assert!(store.is_empty(), "not visible before InitDone");
        w.apply(&Event::<Service>::InitDone);
        assert_eq!(store.len(), 2);
        let a = store.get("ns", "a-east").expect("a");
        assert!(a.is_ours("east") && !a.is_ours("west"));
        assert_eq!(a.hash.as_deref(), Some("h"));
        assert_eq!(store.ours("east").len(), 1);
        w.apply(&Event::Delete(svc("a-east", Some("east"))));
        w.apply(&Event::Apply(svc("foreign", None)));
        assert!(store.get("ns", "a-east").is_none());
        assert!(!store.get("ns", "foreign").expect("f").is_ours("east"));
        // A re-list that no longer holds b-west drops it.
        w.apply(&Event::<Service>::Init);
        w.apply(&Event::<Service>::InitDone);
        assert!(store.is_empty());
    }
}
