//! The harness's stand-in for the controller-manager's EndpointSlice controller.
//!
//! No controller-manager runs, so this task watches Pods and Services and writes one
//! EndpointSlice per selecting Service (`<svc>-localcluster`, managed-by
//! `localcluster.strait.dev`), listing the matching pods' addresses with their Ready condition.
//! It is level-triggered: every change marks its namespace dirty and the whole namespace is
//! recomputed; a slice is written only when it differs from what was last written. Services
//! without a selector (mirrors, for one) are left alone, as the real controller leaves them.

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

pub(crate) const MANAGED_BY: &str = "localcluster.strait.dev";
const SUFFIX: &str = "-localcluster";

enum Change {
    Namespace(String),
    All,
}

pub(crate) async fn run(client: kube::Client, cluster: String) {
    let (pods, pods_writer) = reflector::store::<Pod>();
    let (svcs, svcs_writer) = reflector::store::<Service>();
    let cfg = watcher::Config::default();
    let pod_events = watcher::watcher(Api::<Pod>::all(client.clone()), cfg.clone())
        .default_backoff()
        .reflect(pods_writer)
        .map(|e| change_of(&e));
    let svc_events = watcher::watcher(Api::<Service>::all(client.clone()), cfg)
        .default_backoff()
        .reflect(svcs_writer)
        .map(|e| change_of(&e));
    let mut events = std::pin::pin!(futures::stream::select(pod_events, svc_events));
    let mut written: HashMap<(String, String), serde_json::Value> = HashMap::new();
    let mut dirty: HashSet<String> = HashSet::new();
    let mut all = false;
    loop {
        // Collect a burst of changes, then recompute each dirty namespace once.
        let Some(first) = events.next().await else {
            return;
        };
        let mut note = |c: Option<Change>| match c {
            Some(Change::Namespace(ns)) => {
                dirty.insert(ns);
            }
            Some(Change::All) => all = true,
            None => {}
        };
        note(first);
        while let Ok(Some(c)) = tokio::time::timeout(Duration::from_millis(20), events.next()).await
        {
            note(c);
        }
        // Until both initial lists are in, the stores are partial: keep the marks and go on
        // polling the streams (which is what fills the stores).
        if !is_ready(&pods) || !is_ready(&svcs) {
            continue;
        }
        if std::mem::take(&mut all) {
            dirty.extend(
                svcs.state()
                    .iter()
                    .filter_map(|s| s.metadata.namespace.clone()),
            );
            dirty.extend(written.keys().map(|(ns, _)| ns.clone()));
        }
        for ns in std::mem::take(&mut dirty) {
            if let Err(e) = sync_namespace(&client, &ns, &pods, &svcs, &mut written).await {
                tracing::warn!(%cluster, namespace = %ns, error = %e, "writing EndpointSlices failed; will retry");
                dirty.insert(ns);
            }
        }
        if !dirty.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn is_ready<K>(store: &Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    matches!(store.wait_until_ready().now_or_never(), Some(Ok(())))
}

fn change_of<K: kube::Resource>(e: &Result<Event<K>, watcher::Error>) -> Option<Change> {
    match e {
        Ok(Event::Apply(o) | Event::Delete(o)) => o.meta().namespace.clone().map(Change::Namespace),
        Ok(Event::InitDone) => Some(Change::All),
        _ => None,
    }
}

async fn sync_namespace(
    client: &kube::Client,
    ns: &str,
    pods: &Store<Pod>,
    svcs: &Store<Service>,
    written: &mut HashMap<(String, String), serde_json::Value>,
) -> Result<(), kube::Error> {
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), ns);
    let pods: Vec<_> = pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns))
        .collect();
    let mut wanted = HashSet::new();
    for svc in svcs
        .state()
        .iter()
        .filter(|s| s.metadata.namespace.as_deref() == Some(ns))
    {
        let Some(desired) = desired_slice(svc, &pods) else {
            continue;
        };
        let name = desired["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        wanted.insert(name.clone());
        let key = (ns.to_owned(), name.clone());
        if written.get(&key) == Some(&desired) {
            continue;
        }
        slices
            .patch(
                &name,
                &PatchParams::apply(MANAGED_BY).force(),
                &Patch::Apply(&desired),
            )
            .await?;
        written.insert(key, desired);
    }
    let stale: Vec<_> = written
        .keys()
        .filter(|(n, name)| n == ns && !wanted.contains(name))
        .cloned()
        .collect();
    for key in stale {
        match slices.delete(&key.1, &DeleteParams::default()).await {
            Ok(_) => {
                written.remove(&key);
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {
                written.remove(&key);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The slice a selecting Service should have, or `None` for a Service without a selector.
fn desired_slice(svc: &Service, pods: &[std::sync::Arc<Pod>]) -> Option<serde_json::Value> {
    let spec = svc.spec.as_ref()?;
    let selector = spec.selector.as_ref().filter(|s| !s.is_empty())?;
    let svc_name = svc.metadata.name.as_deref()?;
    let uid = svc.metadata.uid.as_deref().unwrap_or_default();
    let matching: Vec<&Pod> = pods
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| selects(selector, p.metadata.labels.as_ref()))
        .collect();
    let ports: Vec<serde_json::Value> = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|sp| {
            let target = match &sp.target_port {
                None => Some(sp.port),
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(p)) => Some(*p),
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(n)) => {
                    named_port(&matching, n)
                }
            }?;
            Some(serde_json::json!({
                "name": sp.name.clone().unwrap_or_default(),
                "port": target,
                "protocol": sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
            }))
        })
        .collect();
    let endpoints: Vec<serde_json::Value> = matching
        .iter()
        .filter_map(|p| {
            let ip = p.status.as_ref()?.pod_ip.clone()?;
            let ready = p
                .status
                .as_ref()?
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            Some(serde_json::json!({
                "addresses": [ip],
                "conditions": {"ready": ready, "serving": ready, "terminating": false},
                "nodeName": p.spec.as_ref().and_then(|s| s.node_name.clone()),
                "targetRef": {
                    "kind": "Pod",
                    "namespace": p.metadata.namespace,
                    "name": p.metadata.name,
                    "uid": p.metadata.uid,
                },
            }))
        })
        .collect();
    let mut name = format!("{svc_name}{SUFFIX}");
    name.truncate(63);
    Some(serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": svc.metadata.namespace,
            "labels": {
                "kubernetes.io/service-name": svc_name,
                "endpointslice.kubernetes.io/managed-by": MANAGED_BY,
            },
            "ownerReferences": [{
                "apiVersion": "v1", "kind": "Service", "name": svc_name, "uid": uid,
                "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": endpoints,
    }))
}

fn selects(selector: &BTreeMap<String, String>, labels: Option<&BTreeMap<String, String>>) -> bool {
    let Some(labels) = labels else {
        return false;
    };
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn named_port(pods: &[&Pod], name: &str) -> Option<i32> {
    pods.iter()
        .filter_map(|p| p.spec.as_ref())
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(name))
        .map(|p| p.container_port)
}
