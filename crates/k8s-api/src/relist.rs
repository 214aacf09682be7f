//! A store fed by a kube-runtime watcher, with the reflector's recovery story: a (re-)list
//! replaces the whole store at once, at `InitDone`.
//!
//! This is how every Strait controller recovers from a watch outage. After an error or an
//! expired resourceVersion the watcher lists again (`Init`, `InitApply`…, `InitDone`); the
//! listed objects are buffered and swap in for the store's whole content only when the list
//! is complete, so
//! - a deletion missed during the outage disappears with the re-list;
//! - no reader ever sees a half-listed store (nor an empty one while a list runs);
//! - between lists, `Apply` and `Delete` change one entry each.
//!
//! ```text
//!             Init                InitApply(o): pending[key(o)] = keep(o)
//!  watching ───────► listing ─────────────────────┐
//!     ▲  Apply(o): upsert / remove                │ InitDone: store.replace(pending)
//!     │  Delete(o): remove                        ▼
//!     └───────────────────────────────────────── watching
//! ```
//!
//! The [`Writer`] is that state machine; a [`Store`] is what it writes into (a plain
//! `HashMap`, a [`Shared`] map that readers on other tasks see, an index that maintains its
//! own secondary maps). What is
//! kept of an object is a [`Projection`]: its key, and its value or `None` when nothing of it
//! is kept (an `Apply` of an object that stopped being kept removes its entry).

use kube::runtime::watcher::Event;
use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// What a [`Writer`] writes into.
pub trait Store {
    type Key: Eq + Hash;
    type Value;
    /// One object was added or changed.
    fn upsert(&mut self, key: Self::Key, value: Self::Value);
    /// One object was deleted, or is no longer kept.
    fn remove(&mut self, key: &Self::Key);
    /// A list completed: `all` is now everything the store holds.
    fn replace(&mut self, all: HashMap<Self::Key, Self::Value>);
}

impl<K: Eq + Hash, V> Store for HashMap<K, V> {
    type Key = K;
    type Value = V;

    fn upsert(&mut self, key: K, value: V) {
        self.insert(key, value);
    }

    fn remove(&mut self, key: &K) {
        HashMap::remove(self, key);
    }

    fn replace(&mut self, all: HashMap<K, V>) {
        *self = all;
    }
}

/// A map that one [`Writer`] fills and any number of readers share (clones share one map).
/// A panic while the lock is held leaves a consistent map (every change is one insert,
/// remove or swap), so a poisoned lock is used on.
pub struct Shared<K, V> {
    map: Arc<RwLock<HashMap<K, V>>>,
}

impl<K, V> Clone for Shared<K, V> {
    fn clone(&self) -> Self {
        Self {
            map: self.map.clone(),
        }
    }
}

impl<K, V> Default for Shared<K, V> {
    fn default() -> Self {
        Self {
            map: Arc::default(),
        }
    }
}

impl<K, V> std::fmt::Debug for Shared<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("len", &self.read().len())
            .finish()
    }
}

impl<K: Eq + Hash, V> FromIterator<(K, V)> for Shared<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self {
            map: Arc::new(RwLock::new(iter.into_iter().collect())),
        }
    }
}

impl<K, V> Shared<K, V> {
    /// The map, read-locked: hold it briefly (the writer waits).
    pub fn read(&self) -> RwLockReadGuard<'_, HashMap<K, V>> {
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<K, V>> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl<K: Eq + Hash, V> Shared<K, V> {
    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, key: &K) -> bool {
        self.read().contains_key(key)
    }

    pub fn get(&self, key: &K) -> Option<V>
    where
        V: Clone,
    {
        self.read().get(key).cloned()
    }

    /// Every key held.
    pub fn keys(&self) -> HashSet<K>
    where
        K: Clone,
    {
        self.read().keys().cloned().collect()
    }

    /// A snapshot of every value held.
    pub fn values(&self) -> Vec<V>
    where
        V: Clone,
    {
        self.read().values().cloned().collect()
    }

    /// Removes one entry outside the watch (for a source that no longer keeps it).
    pub fn remove(&self, key: &K) -> Option<V> {
        self.write().remove(key)
    }

    /// Keeps only the entries for which `keep` holds.
    pub fn retain(&self, mut keep: impl FnMut(&K, &V) -> bool) {
        self.write().retain(|k, v| keep(k, v));
    }

    /// Empties the map (for a source that stopped: nothing it kept holds any more).
    pub fn clear(&self) {
        *self.write() = HashMap::new();
    }
}

impl<K: Eq + Hash, V> Store for Shared<K, V> {
    type Key = K;
    type Value = V;

    fn upsert(&mut self, key: K, value: V) {
        self.write().insert(key, value);
    }

    fn remove(&mut self, key: &K) {
        self.write().remove(key);
    }

    fn replace(&mut self, mut all: HashMap<K, V>) {
        all.shrink_to_fit();
        *self.write() = all;
    }
}

/// Of one watched object: its key, `None` when it has none (it is ignored), and what is kept
/// of it, `None` to keep nothing.
pub type Projection<K, V> = Option<(K, Option<V>)>;

type Project<O, K, V> = Box<dyn Fn(&O) -> Projection<K, V> + Send>;

/// Applies watch events of objects `O` to a [`Store`]; see the [module docs](self).
pub struct Writer<O, S: Store> {
    store: S,
    project: Project<O, S::Key, S::Value>,
    /// The list in progress, from `Init` to `InitDone`.
    pending: Option<HashMap<S::Key, S::Value>>,
}

impl<O, S: Store + std::fmt::Debug> std::fmt::Debug for Writer<O, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("store", &self.store)
            .field("listing", &self.pending.is_some())
            .finish_non_exhaustive()
    }
}

impl<O, S: Store> Writer<O, S> {
    /// A writer keeping `project(o)` of every object `o`.
    pub fn new(
        store: S,
        project: impl Fn(&O) -> Projection<S::Key, S::Value> + Send + 'static,
    ) -> Self {
        Self {
            store,
            project: Box::new(project),
            pending: None,
        }
    }

    /// Applies one watch event.
    pub fn apply(&mut self, ev: &Event<O>) {
        match ev {
            Event::Init => self.pending = Some(HashMap::new()),
            Event::InitApply(o) => {
                let Some((key, value)) = (self.project)(o) else {
                    return;
                };
                // A list that did not announce itself still buffers until `InitDone`.
                let pending = self.pending.get_or_insert_with(HashMap::new);
                match value {
                    Some(v) => pending.insert(key, v),
                    None => pending.remove(&key),
                };
            }
            Event::InitDone => {
                let all = self.pending.take().unwrap_or_default();
                self.store.replace(all);
            }
            Event::Apply(o) => match (self.project)(o) {
                Some((key, Some(v))) => self.store.upsert(key, v),
                Some((key, None)) => self.store.remove(&key),
                None => {}
            },
            Event::Delete(o) => {
                if let Some((key, _)) = (self.project)(o) {
                    self.store.remove(&key);
                }
            }
        }
    }

    /// Whether a list is in progress (between `Init` and `InitDone`).
    pub fn listing(&self) -> bool {
        self.pending.is_some()
    }

    pub fn store(&self) -> &S {
        &self.store
    }
}

/// The (namespace, name) of an object; the namespace is empty for cluster-scoped objects.
pub fn name_key<O: kube::Resource>(o: &O) -> (String, String) {
    let m = o.meta();
    (
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    /// A ConfigMap `name` in `ns` whose data `v` is kept; `None` keeps nothing of it.
    fn cm(name: &str, v: Option<&str>) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            data: v.map(|v| [("v".to_string(), v.to_string())].into()),
            ..Default::default()
        }
    }

    fn writer() -> Writer<ConfigMap, HashMap<String, String>> {
        Writer::new(HashMap::new(), |o: &ConfigMap| {
            let name = o.metadata.name.clone()?;
            let v = o.data.as_ref().and_then(|d| d.get("v")).cloned();
            Some((name, v))
        })
    }

    fn state(w: &Writer<ConfigMap, HashMap<String, String>>) -> Vec<(String, String)> {
        let mut v: Vec<_> = w
            .store()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort();
        v
    }

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_list_is_invisible_until_done_then_replaces_everything() {
        let mut w = writer();
        w.apply(&Event::Apply(cm("old", Some("1"))));
        w.apply(&Event::Init);
        assert!(w.listing());
        w.apply(&Event::InitApply(cm("a", Some("1"))));
        w.apply(&Event::InitApply(cm("b", Some("2"))));
        w.apply(&Event::InitApply(cm("unkept", None)));
        // Readers still see the previous state, whole.
        assert_eq!(state(&w), kv(&[("old", "1")]));
        w.apply(&Event::InitDone);
        assert!(!w.listing());
        // `old` was deleted during the outage: gone with the re-list.
        assert_eq!(state(&w), kv(&[("a", "1"), ("b", "2")]));
    }

    #[test]
    fn between_lists_each_event_changes_one_entry() {
        let mut w = writer();
        w.apply(&Event::Init);
        w.apply(&Event::InitDone);
        assert!(state(&w).is_empty());
        w.apply(&Event::Apply(cm("a", Some("1"))));
        w.apply(&Event::Apply(cm("b", Some("2"))));
        w.apply(&Event::Apply(cm("a", Some("3"))));
        assert_eq!(state(&w), kv(&[("a", "3"), ("b", "2")]));
        // No longer kept: its entry goes.
        w.apply(&Event::Apply(cm("a", None)));
        w.apply(&Event::Delete(cm("b", Some("2"))));
        assert!(state(&w).is_empty());
        // An object without a key is ignored.
        w.apply(&Event::Apply(ConfigMap::default()));
        assert!(state(&w).is_empty());
    }

    #[test]
    fn an_empty_relist_empties_and_an_unannounced_list_still_buffers() {
        let mut w = writer();
        w.apply(&Event::Apply(cm("a", Some("1"))));
        w.apply(&Event::Init);
        w.apply(&Event::InitDone);
        assert!(state(&w).is_empty());
        // `InitApply` without `Init` (never sent by kube's watcher, but harmless).
        w.apply(&Event::InitApply(cm("b", Some("2"))));
        assert!(state(&w).is_empty());
        w.apply(&Event::InitApply(cm("b", None)));
        w.apply(&Event::InitApply(cm("c", Some("3"))));
        w.apply(&Event::InitDone);
        assert_eq!(state(&w), kv(&[("c", "3")]));
        // A new list starts from nothing, not from a list left unfinished.
        w.apply(&Event::Init);
        w.apply(&Event::InitApply(cm("d", Some("4"))));
        w.apply(&Event::Init);
        w.apply(&Event::InitDone);
        assert!(state(&w).is_empty());
    }

    #[test]
    fn a_shared_store_is_seen_by_every_clone() {
        let shared: Shared<String, String> = Shared::default();
        let reader = shared.clone();
        let mut w = Writer::new(shared, |o: &ConfigMap| {
            let v = o.data.as_ref().and_then(|d| d.get("v")).cloned();
            Some((o.metadata.name.clone()?, v))
        });
        w.apply(&Event::Init);
        w.apply(&Event::InitApply(cm("a", Some("1"))));
        assert!(reader.is_empty());
        w.apply(&Event::InitDone);
        w.apply(&Event::Apply(cm("b", Some("2"))));
        assert_eq!(reader.len(), 2);
        assert_eq!(reader.get(&"a".to_string()).as_deref(), Some("1"));
        assert!(reader.contains(&"b".to_string()));
        reader.retain(|k, _| k == "b");
        assert_eq!(reader.values(), vec!["2".to_string()]);
        assert_eq!(w.store().remove(&"b".to_string()).as_deref(), Some("2"));
        let filled: Shared<String, u8> = [("x".to_string(), 1)].into_iter().collect();
        assert_eq!(filled.keys(), HashSet::from(["x".to_string()]));
        filled.clear();
        assert!(filled.is_empty());
    }

    #[test]
    fn name_key_of_namespaced_and_cluster_objects() {
        assert_eq!(
            name_key(&cm("a", None)),
            ("ns".to_string(), "a".to_string())
        );
        let ns = k8s_openapi::api::core::v1::Namespace {
            metadata: ObjectMeta {
                name: Some("shop".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(name_key(&ns), (String::new(), "shop".to_string()));
    }
}
