//! Compact remote stores. Of each remote Service the Link selects, only what its mirror is
//! derived from (name, namespace, resourceVersion, the labels and annotations the mirror
//! copies, ports, and whether it is headless or ExternalName); of each remote EndpointSlice,
//! only its Service's name, and only while it has a ready endpoint. A reflector of even
//! trimmed `Service` objects costs a few kilobytes each; these cost a few hundred bytes.
//!
//! The mirror itself is derived from [`RemoteSvc::to_service`] only when a pass needs it, and
//! is identical to the one derived from the full object (the filters are idempotent).
//!
//! Fed by a watcher's events with the reflector's semantics: a (re-)list replaces the whole
//! map at `InitDone`, so a deletion missed during a watch outage disappears with the re-list.

use crate::mirror;
use crate::plan::Plan;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ObjectMeta;
use kube::runtime::watcher::Event;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};

/// (namespace, name).
pub type Key = (String, String);

type Pairs = Box<[(Box<str>, Box<str>)]>;

/// One port of a remote Service, as the mirror copies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    pub name: Option<Box<str>>,
    pub port: i32,
    pub protocol: Option<Box<str>>,
    pub app_protocol: Option<Box<str>>,
}

/// What a mirror is derived from, of one remote Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteSvc {
    pub namespace: Box<str>,
    pub name: Box<str>,
    pub resource_version: Option<Box<str>>,
    pub external_name: bool,
    pub headless: bool,
    /// Only the labels and annotations the mirror copies, sorted by key.
    pub labels: Pairs,
    pub annotations: Pairs,
    pub ports: Box<[Port]>,
}

fn boxed(s: &Option<String>) -> Option<Box<str>> {
    s.as_deref().map(Box::from)
}

fn pairs(m: &Option<BTreeMap<String, String>>, keep: impl Fn(&str) -> bool) -> Pairs {
    m.iter()
        .flatten()
        .filter(|(k, _)| keep(k))
        .map(|(k, v)| (Box::from(k.as_str()), Box::from(v.as_str())))
        .collect()
}

fn map(p: &Pairs) -> Option<BTreeMap<String, String>> {
    Some(
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

impl RemoteSvc {
    /// The compact form of `svc`; `None` when it has no name or namespace, or `plan` does not
    /// select it (neither is ever mirrored).
    pub fn of(svc: &Service, plan: &Plan) -> Option<Self> {
        let m = &svc.metadata;
        let (namespace, name) = (m.namespace.as_deref()?, m.name.as_deref()?);
        if !plan.selects(m.labels.as_ref().unwrap_or(&BTreeMap::new())) {
            return None;
        }
        let spec = svc.spec.as_ref();
        Some(Self {
            namespace: namespace.into(),
            name: name.into(),
            resource_version: boxed(&m.resource_version),
            external_name: spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName"),
            headless: spec.and_then(|s| s.cluster_ip.as_deref()) == Some("None"),
            labels: pairs(&m.labels, |k| mirror::copies_label(plan, k)),
            annotations: pairs(&m.annotations, |k| mirror::copies_annotation(plan, k)),
            ports: spec
                .and_then(|s| s.ports.as_ref())
                .into_iter()
                .flatten()
                .map(|p| Port {
                    name: boxed(&p.name),
                    port: p.port,
                    protocol: boxed(&p.protocol),
                    app_protocol: boxed(&p.app_protocol),
                })
                .collect(),
        })
    }

    pub fn key(&self) -> Key {
        (self.namespace.to_string(), self.name.to_string())
    }

    /// A `Service` carrying everything the mirror is derived from.
    pub fn to_service(&self) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(self.name.to_string()),
                namespace: Some(self.namespace.to_string()),
                resource_version: self.resource_version.as_deref().map(String::from),
                labels: map(&self.labels),
                annotations: map(&self.annotations),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: self.external_name.then(|| "ExternalName".into()),
                cluster_ip: self.headless.then(|| "None".into()),
                ports: Some(
                    self.ports
                        .iter()
                        .map(|p| ServicePort {
                            name: p.name.as_deref().map(String::from),
                            port: p.port,
                            protocol: p.protocol.as_deref().map(String::from),
                            app_protocol: p.app_protocol.as_deref().map(String::from),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: None,
        }
    }
}

/// A shared map by (namespace, name) of what is kept of each remote object.
#[derive(Debug)]
pub struct Map<V> {
    map: Arc<RwLock<HashMap<Key, V>>>,
}

impl<V> Clone for Map<V> {
    fn clone(&self) -> Self {
        Self {
            map: self.map.clone(),
        }
    }
}

impl<V> Default for Map<V> {
    fn default() -> Self {
        Self {
            map: Arc::default(),
        }
    }
}

/// The selected remote Services.
pub type Services = Map<Arc<RemoteSvc>>;
/// Remote EndpointSlices with a ready endpoint: the name of their Service.
pub type Slices = Map<Box<str>>;

impl<V> Map<V> {
    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Key, V>> {
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Key, V>> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl Services {
    /// A snapshot of every selected remote Service.
    pub fn state(&self) -> Vec<Arc<RemoteSvc>> {
        self.read().values().cloned().collect()
    }
}

impl Slices {
    /// (namespace, Service name) of every remote Service with a ready endpoint.
    pub fn ready(&self) -> HashSet<Key> {
        self.read()
            .iter()
            .map(|((ns, _), svc)| (ns.clone(), svc.to_string()))
            .collect()
    }
}

/// Of a remote EndpointSlice, its Service when any endpoint is ready (unset counts as ready).
pub fn ready_service(es: &EndpointSlice) -> Option<Box<str>> {
    let ready = es
        .endpoints
        .iter()
        .any(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true));
    let svc = es.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    ready.then(|| svc.as_str().into())
}

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

type Keep<K, V> = Box<dyn Fn(&K) -> Option<V> + Send>;

/// Applies watch events to a [`Map`]: `keep` is what is kept of an object, `None` to keep
/// nothing (the entry is removed); `pending` holds a re-list until it is done.
pub struct Writer<K, V> {
    store: Map<V>,
    keep: Keep<K, V>,
    pending: Option<HashMap<Key, V>>,
}

impl<K, V> std::fmt::Debug for Writer<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

impl<K: kube::Resource, V> Writer<K, V> {
    pub fn new(store: Map<V>, keep: impl Fn(&K) -> Option<V> + Send + 'static) -> Self {
        Self {
            store,
            keep: Box::new(keep),
            pending: None,
        }
    }

    pub fn apply(&mut self, ev: &Event<K>) {
        let key = |o: &K| {
            let m = o.meta();
            (
                m.namespace.clone().unwrap_or_default(),
                m.name.clone().unwrap_or_default(),
            )
        };
        match ev {
            Event::Init => self.pending = Some(HashMap::new()),
            Event::InitApply(o) => {
                let pending = self.pending.get_or_insert_with(HashMap::new);
                match (self.keep)(o) {
                    Some(v) => pending.insert(key(o), v),
                    None => pending.remove(&key(o)),
                };
            }
            Event::InitDone => {
                let mut fresh = self.pending.take().unwrap_or_default();
                fresh.shrink_to_fit();
                *self.store.write() = fresh;
            }
            Event::Apply(o) => {
                let v = (self.keep)(o);
                let mut w = self.store.write();
                match v {
                    Some(v) => w.insert(key(o), v),
                    None => w.remove(&key(o)),
                };
            }
            Event::Delete(o) => {
                self.store.write().remove(&key(o));
            }
        }
    }
}

/// A writer of the selected remote Services of `plan`.
pub fn services_writer(store: Services, plan: Arc<Plan>) -> Writer<Service, Arc<RemoteSvc>> {
    Writer::new(store, move |s: &Service| {
        RemoteSvc::of(s, &plan).map(Arc::new)
    })
}

/// A writer of remote EndpointSlice readiness.
pub fn slices_writer(store: Slices) -> Writer<EndpointSlice, Box<str>> {
    Writer::new(store, ready_service)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan::new(
            &serde_json::from_value(serde_json::json!({
                "targetClusterName": "east",
                "clusterCredentialsSecret": "c",
                "gatewayAddress": "10.0.0.1",
                "gatewayPort": 4143,
                "gatewayIdentity": "strait-gateway.strait-multicluster.serviceaccount.identity.strait.cluster.local",
                "selector": {"matchLabels": {"mirror.strait.dev/exported": "true"}},
                "excludedLabels": ["secret.io/*"],
                "excludedAnnotations": ["drop-me"],
            }))
            .expect("spec"),
        )
        .expect("plan")
    }

    fn full(name: &str, exported: bool) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "shop", "resourceVersion": "42",
                "labels": {"app": "web", "mirror.strait.dev/exported": exported.to_string(), "secret.io/x": "1"},
                "annotations": {"keep": "1", "drop-me": "1",
                    "service.kubernetes.io/topology-mode": "Auto",
                    "kubectl.kubernetes.io/last-applied-configuration": "{}"},
                "managedFields": [{"manager": "m", "operation": "Update"}]},
            "spec": {"selector": {"app": "web"}, "clusterIP": "10.1.1.1", "clusterIPs": ["10.1.1.1"],
                "sessionAffinity": "None",
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "appProtocol": "http"},
                          {"port": 53, "protocol": "UDP"}]},
            "status": {"loadBalancer": {}},
        }))
        .expect("svc")
    }

    #[test]
    fn compact_keeps_the_mirror_identical() {
        let plan = plan();
        let f = full("web", true);
        let c = RemoteSvc::of(&f, &plan).expect("selected");
        assert_eq!(c.labels.len(), 1, "only what the mirror copies");
        assert_eq!(c.annotations.len(), 1);
        assert_eq!(
            mirror::service(&f, &plan),
            mirror::service(&c.to_service(), &plan)
        );
        for edit in [
            |s: &mut ServiceSpec| s.cluster_ip = Some("None".into()),
            |s: &mut ServiceSpec| s.type_ = Some("ExternalName".into()),
            |s: &mut ServiceSpec| s.ports = None,
        ] {
            let mut f = full("web", true);
            edit(f.spec.as_mut().expect("spec"));
            let c = RemoteSvc::of(&f, &plan).expect("selected");
            assert_eq!(
                mirror::service(&f, &plan),
                mirror::service(&c.to_service(), &plan)
            );
        }
        assert!(RemoteSvc::of(&full("web", false), &plan).is_none());
    }

    #[test]
    fn relist_replaces_and_unselected_drops() {
        let store = Services::default();
        let mut w = services_writer(store.clone(), Arc::new(plan()));
        w.apply(&Event::Init);
        w.apply(&Event::InitApply(full("a", true)));
        w.apply(&Event::InitApply(full("b", true)));
        w.apply(&Event::InitApply(full("c", false)));
        assert!(store.is_empty(), "not visible before InitDone");
        w.apply(&Event::InitDone);
        assert_eq!(store.len(), 2);
        w.apply(&Event::Apply(full("a", false)));
        assert_eq!(store.len(), 1);
        w.apply(&Event::Delete(full("b", true)));
        assert!(store.is_empty());
        w.apply(&Event::Apply(full("c", true)));
        assert_eq!(store.state()[0].key(), ("shop".into(), "c".into()));
        w.apply(&Event::Apply(full("c", true)));
        assert_eq!(store.len(), 1);
        w.apply(&Event::Init);
        w.apply(&Event::InitDone);
        assert!(store.is_empty());
    }

    #[test]
    fn slices_keep_only_ready_services() {
        let slice = |name: &str, svc: Option<&str>, ready: Option<bool>| -> EndpointSlice {
            let labels = svc.map(|s| serde_json::json!({SERVICE_NAME_LABEL: s, "other": "x"}));
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "shop", "labels": labels},
                "addressType": "IPv4",
                "endpoints": [
                    {"addresses": ["10.0.0.1"], "conditions": {"ready": false}},
                    {"addresses": ["10.0.0.2"], "conditions": {"ready": ready}},
                ],
            }))
            .expect("slice")
        };
        let store = Slices::default();
        let mut w = slices_writer(store.clone());
        w.apply(&Event::Init);
        w.apply(&Event::InitApply(slice("web-a", Some("web"), None)));
        w.apply(&Event::InitApply(slice("web-b", Some("web"), Some(false))));
        w.apply(&Event::InitApply(slice("db-a", Some("db"), Some(false))));
        w.apply(&Event::InitApply(slice("x", None, Some(true))));
        w.apply(&Event::InitDone);
        assert_eq!(
            store.ready(),
            HashSet::from([("shop".to_string(), "web".to_string())])
        );
        w.apply(&Event::Apply(slice("web-a", Some("web"), Some(false))));
        w.apply(&Event::Apply(slice("db-a", Some("db"), Some(true))));
        assert_eq!(
            store.ready(),
            HashSet::from([("shop".to_string(), "db".to_string())])
        );
        w.apply(&Event::Delete(slice("db-a", Some("db"), Some(true))));
        assert!(store.ready().is_empty());
    }
}
