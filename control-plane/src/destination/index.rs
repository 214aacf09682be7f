//! The shared cache: Services, EndpointSlices and Pods (as [`model`](super::model)
//! projections), indexed by name and by address, plus one *topic* per looked-up target.
//!
//! ```text
//!  watch Services ──┐                         ┌─► topic shop/web ──► Get streams (N)
//!  watch Slices ────┼─► Index (one Mutex) ────┼─► topic shop/db  ──► Get streams
//!  watch Pods ──────┘   recompute the views   └─► topic 198.18.0.7 ─► Get/GetProfile
//!                       a change touches
//! ```
//!
//! A topic is a `tokio::sync::watch` channel holding the latest [`View`] of its target; it
//! exists only while some stream holds a [`Subscription`] to it. Watch channels keep only the
//! newest value, so a slow stream skips intermediate states and diffs against what it last
//! sent: memory per stream is bounded, and nothing ever blocks the watchers.

use super::authority::ServiceKey;
use super::model::{ObjKey, PodInfo, ServiceInfo, SliceInfo};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// What a topic follows.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TopicKey {
    Service(ServiceKey),
    Pod(IpAddr),
}

/// Everything a stream needs to compute its answer for one target.
#[derive(Clone, Debug, PartialEq)]
pub enum View {
    /// A Service (or its absence), its slices, and the pods its ready endpoints name.
    Service {
        key: ServiceKey,
        service: Option<Arc<ServiceInfo>>,
        slices: Vec<Arc<SliceInfo>>,
        pods: BTreeMap<String, Arc<PodInfo>>,
    },
    /// A pod address (or its absence).
    Pod {
        ip: IpAddr,
        pod: Option<(ObjKey, Arc<PodInfo>)>,
    },
}

/// The three kinds the index watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Service,
    Slice,
    Pod,
}

#[derive(Debug, Default)]
struct State {
    services: HashMap<ServiceKey, Arc<ServiceInfo>>,
    slices: HashMap<ObjKey, Arc<SliceInfo>>,
    slices_by_service: HashMap<ServiceKey, BTreeSet<String>>,
    pods: HashMap<ObjKey, Arc<PodInfo>>,
    /// Which Services' slices name a pod (with a count of naming endpoints), so that a pod
    /// change wakes only those Services' streams.
    pod_services: HashMap<ObjKey, HashMap<ServiceKey, usize>>,
    cluster_ips: HashMap<IpAddr, ServiceKey>,
    /// The federated Services that list a local Service's pods (it is their local member),
    /// so that its changes wake their streams too.
    federated_by: HashMap<ServiceKey, BTreeSet<ServiceKey>>,
    pod_ips: HashMap<IpAddr, ObjKey>,
    topics: HashMap<TopicKey, watch::Sender<Arc<View>>>,
}

/// The cache and its topics. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Index {
    state: Mutex<State>,
    synced: watch::Sender<[bool; 3]>,
}

/// A stream's hold on a topic. Dropping it drops the receiver and, if it was the last one,
/// the topic.
#[derive(Debug)]
pub struct Subscription {
    rx: Option<watch::Receiver<Arc<View>>>,
    index: Arc<Index>,
    key: TopicKey,
}

impl Subscription {
    pub fn rx(&mut self) -> &mut watch::Receiver<Arc<View>> {
        self.rx.as_mut().expect("receiver is taken only in drop")
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        drop(self.rx.take());
        self.index.release(&self.key);
    }
}

impl Default for Index {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            synced: watch::Sender::new([false; 3]),
        }
    }
}

impl Index {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent maps (every update is a plain
        // insert/remove), so a poisoned lock is safe to keep using.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until every watch has listed its kind once.
    pub async fn synced(&self) {
        let mut rx = self.synced.subscribe();
        // The sender lives as long as `self`, so this cannot fail while we borrow it.
        let _ = rx.wait_for(|s| s.iter().all(|b| *b)).await;
    }

    pub fn is_synced(&self) -> bool {
        self.synced.borrow().iter().all(|b| *b)
    }

    fn mark_synced(&self, kind: Kind) {
        self.synced.send_modify(|s| s[kind as usize] = true);
    }

    /// How many topics are open (for tests and metrics).
    pub fn topics(&self) -> usize {
        self.lock().topics.len()
    }

    pub fn service(&self, key: &ServiceKey) -> Option<Arc<ServiceInfo>> {
        self.lock().services.get(key).cloned()
    }

    /// The Service whose cluster IP is `ip`.
    pub fn service_by_ip(&self, ip: IpAddr) -> Option<(ServiceKey, Arc<ServiceInfo>)> {
        let st = self.lock();
        let key = st.cluster_ips.get(&ip)?;
        Some((key.clone(), st.services.get(key)?.clone()))
    }

    pub fn has_pod_ip(&self, ip: IpAddr) -> bool {
        self.lock().pod_ips.contains_key(&ip)
    }

    /// Subscribes to a target's topic, creating it with the current view if needed. The
    /// receiver's current value is marked unseen, so the first `changed()` yields at once.
    pub fn subscribe(self: &Arc<Self>, key: TopicKey) -> Subscription {
        let mut st = self.lock();
        let mut rx = match st.topics.get(&key) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = watch::channel(Arc::new(st.view(&key)));
                st.topics.insert(key.clone(), tx);
                rx
            }
        };
        rx.mark_changed();
        Subscription {
            rx: Some(rx),
            index: self.clone(),
            key,
        }
    }

    fn release(&self, key: &TopicKey) {
        let mut st = self.lock();
        if st
            .topics
            .get(key)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            st.topics.remove(key);
        }
    }

    /// An object was added or changed.
    pub fn apply_service(&self, key: ServiceKey, info: ServiceInfo) {
        let mut st = self.lock();
        st.put_service(key.clone(), info);
        st.publish(&[TopicKey::Service(key)]);
    }

    pub fn delete_service(&self, key: &ServiceKey) {
        let mut st = self.lock();
        st.drop_service(key);
        st.publish(&[TopicKey::Service(key.clone())]);
    }

    pub fn apply_slice(&self, key: ObjKey, info: SliceInfo) {
        let mut st = self.lock();
        let mut touched = vec![TopicKey::Service(info.service.clone())];
        if let Some(old) = st.put_slice(key, info) {
            touched.push(TopicKey::Service(old.service.clone()));
        }
        st.publish(&touched);
    }

    pub fn delete_slice(&self, key: &ObjKey) {
        let mut st = self.lock();
        if let Some(old) = st.drop_slice(key) {
            st.publish(&[TopicKey::Service(old.service.clone())]);
        }
    }

    pub fn apply_pod(&self, key: ObjKey, info: PodInfo) {
        let mut st = self.lock();
        let mut touched = st.pod_topics(&key, &info.ips);
        if let Some(old) = st.put_pod(key, info) {
            touched.extend(old.ips.iter().map(|ip| TopicKey::Pod(*ip)));
        }
        st.publish(&touched);
    }

    pub fn delete_pod(&self, key: &ObjKey) {
        let mut st = self.lock();
        if let Some(old) = st.drop_pod(key) {
            let touched = st.pod_topics(key, &old.ips);
            st.publish(&touched);
        }
    }

    /// Replaces everything of one kind after a (re)list, then republishes every topic.
    pub fn reset_services(&self, all: impl IntoIterator<Item = (ServiceKey, ServiceInfo)>) {
        let mut st = self.lock();
        let keys: Vec<_> = st.services.keys().cloned().collect();
        keys.iter().for_each(|k| st.drop_service(k));
        all.into_iter().for_each(|(k, v)| st.put_service(k, v));
        st.publish_all();
        drop(st);
        self.mark_synced(Kind::Service);
    }

    pub fn reset_slices(&self, all: impl IntoIterator<Item = (ObjKey, SliceInfo)>) {
        let mut st = self.lock();
        st.slices.clear();
        st.slices_by_service.clear();
        st.pod_services.clear();
        all.into_iter().for_each(|(k, v)| {
            st.put_slice(k, v);
        });
        st.publish_all();
        drop(st);
        self.mark_synced(Kind::Slice);
    }

    pub fn reset_pods(&self, all: impl IntoIterator<Item = (ObjKey, PodInfo)>) {
        let mut st = self.lock();
        st.pods.clear();
        st.pod_ips.clear();
        all.into_iter().for_each(|(k, v)| {
            st.put_pod(k, v);
        });
        st.publish_all();
        drop(st);
        self.mark_synced(Kind::Pod);
    }
}

impl State {
    fn put_service(&mut self, key: ServiceKey, info: ServiceInfo) {
        self.drop_service(&key);
        for ip in &info.cluster_ips {
            self.cluster_ips.insert(*ip, key.clone());
        }
        if let Some(member) = info.local_member(&key) {
            self.federated_by
                .entry(member)
                .or_default()
                .insert(key.clone());
        }
        self.services.insert(key, Arc::new(info));
    }

    fn drop_service(&mut self, key: &ServiceKey) {
        if let Some(old) = self.services.remove(key) {
            for ip in &old.cluster_ips {
                if self.cluster_ips.get(ip) == Some(key) {
                    self.cluster_ips.remove(ip);
                }
            }
            if let Some(member) = old.local_member(key)
                && let Some(by) = self.federated_by.get_mut(&member)
            {
                by.remove(key);
                if by.is_empty() {
                    self.federated_by.remove(&member);
                }
            }
        }
    }

    fn put_slice(&mut self, key: ObjKey, info: SliceInfo) -> Option<Arc<SliceInfo>> {
        let old = self.drop_slice(&key);
        for pod in info.endpoints.iter().filter_map(|e| e.pod.as_ref()) {
            *self
                .pod_services
                .entry((key.0.clone(), pod.clone()))
                .or_default()
                .entry(info.service.clone())
                .or_default() += 1;
        }
        self.slices_by_service
            .entry(info.service.clone())
            .or_default()
            .insert(key.1.clone());
        self.slices.insert(key, Arc::new(info));
        old
    }

    fn drop_slice(&mut self, key: &ObjKey) -> Option<Arc<SliceInfo>> {
        let old = self.slices.remove(key)?;
        for pod in old.endpoints.iter().filter_map(|e| e.pod.as_ref()) {
            let pod_key = (key.0.clone(), pod.clone());
            if let Some(services) = self.pod_services.get_mut(&pod_key) {
                if let Some(n) = services.get_mut(&old.service) {
                    *n -= 1;
                    if *n == 0 {
                        services.remove(&old.service);
                    }
                }
                if services.is_empty() {
                    self.pod_services.remove(&pod_key);
                }
            }
        }
        if let Some(names) = self.slices_by_service.get_mut(&old.service) {
            names.remove(&key.1);
            if names.is_empty() {
                self.slices_by_service.remove(&old.service);
            }
        }
        Some(old)
    }

    fn put_pod(&mut self, key: ObjKey, info: PodInfo) -> Option<Arc<PodInfo>> {
        let old = self.drop_pod(&key);
        for ip in &info.ips {
            self.pod_ips.insert(*ip, key.clone());
        }
        self.pods.insert(key, Arc::new(info));
        old
    }

    fn drop_pod(&mut self, key: &ObjKey) -> Option<Arc<PodInfo>> {
        let old = self.pods.remove(key)?;
        for ip in &old.ips {
            if self.pod_ips.get(ip) == Some(key) {
                self.pod_ips.remove(ip);
            }
        }
        Some(old)
    }

    /// The topics a pod change can touch: Services whose slices name it, and its addresses.
    fn pod_topics(&self, pod: &ObjKey, ips: &[IpAddr]) -> Vec<TopicKey> {
        let services = self
            .pod_services
            .get(pod)
            .into_iter()
            .flat_map(|s| s.keys());
        services
            .flat_map(|s| self.with_federated(s))
            .map(TopicKey::Service)
            .chain(ips.iter().map(|ip| TopicKey::Pod(*ip)))
            .filter(|k| self.topics.contains_key(k))
            .collect()
    }

    /// `svc` and the federated Services whose local member it is.
    fn with_federated(&self, svc: &ServiceKey) -> Vec<ServiceKey> {
        std::iter::once(svc.clone())
            .chain(self.federated_by.get(svc).into_iter().flatten().cloned())
            .collect()
    }

    /// The slices of Service `key`.
    fn slices_of<'a>(&'a self, key: &'a ServiceKey) -> impl Iterator<Item = Arc<SliceInfo>> + 'a {
        self.slices_by_service
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|name| {
                self.slices
                    .get(&(key.namespace.clone(), name.clone()))
                    .cloned()
            })
    }

    fn view(&self, key: &TopicKey) -> View {
        match key {
            TopicKey::Service(key) => {
                let service = self.services.get(key).cloned();
                // A federated Service lists its local member's pods too.
                let member = service.as_ref().and_then(|s| s.local_member(key));
                let slices: Vec<Arc<SliceInfo>> = self
                    .slices_of(key)
                    .chain(member.iter().flat_map(|m| self.slices_of(m)))
                    .collect();
                let pods = slices
                    .iter()
                    .flat_map(|s| s.endpoints.iter())
                    .filter(|e| e.ready)
                    .filter_map(|e| e.pod.as_ref())
                    .filter_map(|name| {
                        let pod = self.pods.get(&(key.namespace.clone(), name.clone()))?;
                        Some((name.clone(), pod.clone()))
                    })
                    .collect();
                View::Service {
                    key: key.clone(),
                    service,
                    slices,
                    pods,
                }
            }
            TopicKey::Pod(ip) => View::Pod {
                ip: *ip,
                pod: self.pod_ips.get(ip).and_then(|k| {
                    let pod = self.pods.get(k)?;
                    Some((k.clone(), pod.clone()))
                }),
            },
        }
    }

    /// Recomputes the views of `keys` (and of the federated Services whose local member one
    /// is) and wakes their streams if a view changed.
    fn publish(&self, keys: &[TopicKey]) {
        let mut all: Vec<TopicKey> = Vec::with_capacity(keys.len());
        for key in keys {
            match key {
                TopicKey::Service(s) => {
                    all.extend(self.with_federated(s).into_iter().map(TopicKey::Service))
                }
                TopicKey::Pod(_) => all.push(key.clone()),
            }
        }
        for key in &all {
            if let Some(tx) = self.topics.get(key) {
                let view = self.view(key);
                tx.send_if_modified(|cur| {
                    if **cur == view {
                        return false;
                    }
                    *cur = Arc::new(view);
                    true
                });
            }
        }
    }

    fn publish_all(&self) {
        let keys: Vec<_> = self.topics.keys().cloned().collect();
        self.publish(&keys);
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::{PortInfo, SliceEndpoint};
    use super::*;

    fn slice(svc: &str, ips: &[(&str, bool)]) -> SliceInfo {
        SliceInfo {
            service: ServiceKey::new("shop", svc),
            ports: vec![PortInfo {
                name: "http".into(),
                port: 8080,
            }],
            endpoints: ips
                .iter()
                .map(|(ip, ready)| SliceEndpoint {
                    ips: vec![ip.parse().unwrap()],
                    ready: *ready,
                    pod: None,
                    hostname: None,
                })
                .collect(),
            identity: None,
            remote_discovery: false,
            remote_fq_name: None,
        }
    }

    fn key(n: &str) -> ObjKey {
        ("shop".into(), n.into())
    }

    #[tokio::test]
    async fn topics_follow_changes_and_go_away() {
        let index = Arc::new(Index::default());
        let web = ServiceKey::new("shop", "web");
        let mut sub = index.subscribe(TopicKey::Service(web.clone()));
        let mut sub2 = index.subscribe(TopicKey::Service(web.clone()));
        assert_eq!(index.topics(), 1);
        assert!(sub.rx().has_changed().unwrap());
        sub.rx().borrow_and_update();
        sub2.rx().borrow_and_update();

        index.apply_slice(key("web-1"), slice("web", &[("198.18.0.1", true)]));
        assert!(sub.rx().has_changed().unwrap());
        let view = sub.rx().borrow_and_update().clone();
        let View::Service {
            slices, service, ..
        } = &*view
        else {
            panic!("service view")
        };
        assert!(service.is_none());
        assert_eq!(slices.len(), 1);

        // An unrelated slice does not wake the stream; an identical write neither.
        index.apply_slice(key("db-1"), slice("db", &[("198.18.0.9", true)]));
        index.apply_slice(key("web-1"), slice("web", &[("198.18.0.1", true)]));
        assert!(!sub.rx().has_changed().unwrap());

        // A slice moving to another service leaves the first.
        index.apply_slice(key("web-1"), slice("db", &[("198.18.0.1", true)]));
        let view = sub.rx().borrow_and_update().clone();
        let View::Service { slices, .. } = &*view else {
            panic!("service view")
        };
        assert!(slices.is_empty());

        drop(sub);
        assert_eq!(index.topics(), 1);
        drop(sub2);
        assert_eq!(index.topics(), 0);
    }

    #[tokio::test]
    async fn pod_changes_wake_only_services_naming_the_pod() {
        let index = Arc::new(Index::default());
        let mut with_pod = slice("web", &[("198.18.0.1", true)]);
        with_pod.endpoints[0].pod = Some("web-1".into());
        index.apply_slice(key("web-1"), with_pod);
        index.apply_slice(key("db-1"), slice("db", &[("198.18.0.9", true)]));
        let mut web = index.subscribe(TopicKey::Service(ServiceKey::new("shop", "web")));
        let mut db = index.subscribe(TopicKey::Service(ServiceKey::new("shop", "db")));
        web.rx().borrow_and_update();
        db.rx().borrow_and_update();
        let pod = PodInfo {
            ips: vec!["198.18.0.1".parse().unwrap()],
            service_account: "web".into(),
            meshed: true,
            opaque_ports: vec![],
        };
        index.apply_pod(key("web-1"), pod);
        assert!(web.rx().has_changed().unwrap());
        assert!(!db.rx().has_changed().unwrap());
        let view = web.rx().borrow_and_update().clone();
        let View::Service { pods, .. } = &*view else {
            panic!("service view")
        };
        assert!(pods.contains_key("web-1"));
        // Once the slice no longer names it, the pod is forgotten by that Service.
        index.apply_slice(key("web-1"), slice("web", &[("198.18.0.1", true)]));
        web.rx().borrow_and_update();
        index.delete_pod(&key("web-1"));
        assert!(!web.rx().has_changed().unwrap());
    }

    #[tokio::test]
    async fn a_federated_service_sees_its_local_members_slices_and_pods() {
        let index = Arc::new(Index::default());
        let fed = ServiceKey::new("shop", "web-federated");
        let service = |local: Option<&str>| ServiceInfo {
            cluster_ips: vec![],
            ports: vec![],
            external_name: false,
            mirror: None,
            opaque_ports: vec![],
            federated_local_member: local.map(str::to_owned),
        };
        index.apply_service(fed.clone(), service(Some("web")));
        index.apply_slice(
            key("web-federated-east"),
            slice("web-federated", &[("198.18.64.1", true)]),
        );
        let mut sub = index.subscribe(TopicKey::Service(fed.clone()));
        let ips = |sub: &mut Subscription| -> Vec<String> {
            let view = sub.rx().borrow_and_update().clone();
            let View::Service { slices, .. } = &*view else {
                panic!("service view")
            };
            slices
                .iter()
                .flat_map(|s| s.endpoints.iter().flat_map(|e| e.ips.iter()))
                .map(|ip| ip.to_string())
                .collect()
        };
        assert_eq!(ips(&mut sub), vec!["198.18.64.1"]);
        // The local member's slice wakes the federated Service's streams.
        let mut local = slice("web", &[("198.18.0.1", true)]);
        local.endpoints[0].pod = Some("web-1".into());
        index.apply_slice(key("web-abc"), local);
        assert!(sub.rx().has_changed().unwrap());
        assert_eq!(ips(&mut sub), vec!["198.18.64.1", "198.18.0.1"]);
        // So does its pod.
        let pod = PodInfo {
            ips: vec!["198.18.0.1".parse().unwrap()],
            service_account: "web".into(),
            meshed: true,
            opaque_ports: vec![],
        };
        index.apply_pod(key("web-1"), pod);
        assert!(sub.rx().has_changed().unwrap());
        sub.rx().borrow_and_update();
        // Without a local member, its pods are no longer listed, and no longer wake it.
        index.apply_service(fed.clone(), service(None));
        assert_eq!(ips(&mut sub), vec!["198.18.64.1"]);
        index.delete_slice(&key("web-abc"));
        assert!(!sub.rx().has_changed().unwrap());
    }

    #[tokio::test]
    async fn resets_replace_state_and_sync() {
        let index = Arc::new(Index::default());
        assert!(!index.is_synced());
        index.reset_services(vec![]);
        index.reset_slices(vec![(key("web-1"), slice("web", &[]))]);
        index.reset_pods(vec![(
            key("web-1"),
            PodInfo {
                ips: vec!["198.18.0.1".parse().unwrap()],
                service_account: "web".into(),
                meshed: true,
                opaque_ports: vec![],
            },
        )]);
        assert!(index.is_synced());
        index.synced().await;
        assert!(index.has_pod_ip("198.18.0.1".parse().unwrap()));
        index.reset_pods(vec![]);
        assert!(!index.has_pod_ip("198.18.0.1".parse().unwrap()));
    }
}
