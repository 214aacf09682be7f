//! Compact local stores: of each local object labelled as a mirror, only what a sync pass
//! reads (uid, the cluster it mirrors, the spec hash we wrote), not the object. At 10,000
//! mirrors a reflector of even metadata-only objects costs about a kilobyte each, twice.
//!
//! Fed by a watcher's events through [`strait_k8s_api::relist`]: a (re-)list replaces the
//! whole map at `InitDone`, so a deletion missed during a watch outage disappears with the
//! re-list.

use k8s_openapi::api::core::v1::Service;
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
    /// The cluster IP of a Service, where the store keeps it (a headless mirror's slice lists
    /// its per-pod mirrors by it).
    pub cluster_ip: Option<std::net::IpAddr>,
    /// A Service that is headless (`clusterIP: None`).
    pub headless: bool,
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
            cluster_ip: None,
            headless: false,
        }
    }

    /// [`Meta::of`] a Service, with its cluster IP.
    pub fn of_service(svc: &Service) -> Self {
        let ip = svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref());
        Self {
            cluster_ip: ip.and_then(|ip| ip.parse().ok()),
            headless: ip == Some("None"),
            ..Self::of(&svc.metadata)
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

/// A writer of every Service's [`Meta`], with its cluster IP, into `store`.
pub fn service_writer(store: Compact) -> Writer<Service> {
    relist::Writer::new(store, |s: &Service| {
        Some((relist::name_key(s), Some(Meta::of_service(s))))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn the_service_writer_keeps_cluster_ips_and_headlessness() {
        let store = Compact::default();
        let mut w = service_writer(store.clone());
        let mut a = svc("web-0-east", Some("east"));
        a.spec = Some(k8s_openapi::api::core::v1::ServiceSpec {
            cluster_ip: Some("198.19.0.7".into()),
            ..Default::default()
        });
        w.apply(&Event::<Service>::Init);
        w.apply(&Event::InitApply(a));
        let mut h = svc("db-east", Some("east"));
        h.spec = Some(k8s_openapi::api::core::v1::ServiceSpec {
            cluster_ip: Some("None".into()),
            ..Default::default()
        });
        w.apply(&Event::InitApply(h));
        w.apply(&Event::InitApply(svc("pending-east", Some("east"))));
        w.apply(&Event::<Service>::InitDone);
        let a = store.get("ns", "web-0-east").expect("a");
        assert_eq!(a.cluster_ip, Some("198.19.0.7".parse().expect("ip")));
        assert!(a.is_ours("east") && !a.headless);
        let h = store.get("ns", "db-east").expect("h");
        assert!(h.headless && h.cluster_ip.is_none());
        assert_eq!(store.get("ns", "pending-east").expect("p").cluster_ip, None);
    }
}
