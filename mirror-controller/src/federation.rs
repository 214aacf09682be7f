//! Federated Services: one local Service `<svc>-federated` whose endpoints are the union of
//! every member's, where a member is a Service named `<svc>` in the same namespace that a
//! Link's `federatedServiceSelector` selects, in a linked cluster or in this one.
//!
//! ```text
//!  Link workers ──report: their cluster's members──► Hub ──► reconciler (one per controller)
//!  local Services the Links' selectors select ─────────────┘     │ decide (pure): ports and
//!                                                                 │ metadata of the oldest
//!   <svc>-federated (owned here: cluster-name "") ◄── write ──────┤ member, who is refused
//!   <svc>-federated-<cluster> slices (owned by each Link's worker) ◄── decision, per worker
//! ```
//!
//! Ownership is split so that no two writers touch one object: the reconciler alone writes
//! the federated Service (labelled [`labels::MIRRORED_SERVICE`] with the empty
//! [`labels::CLUSTER_NAME`], [`labels::FEDERATED_OWNER`], which no Link's cluster can have);
//! each Link's worker writes only its own member's slice(s), labelled with its cluster like
//! its mirrors, so its usual orphan collection removes them when its member leaves and its
//! finalizer when the Link goes. The local member's pods are not copied: the Service names
//! it ([`labels::FEDERATED_LOCAL_MEMBER`]) and the destination service reads its slices.
//!
//! A federated Service exists while it has a member that is not refused; it is deleted
//! (by uid) only when every Link's worker has reported a complete remote view and every
//! local watch has listed, so a restart or an unreachable remote never removes one.

use crate::remote::{Port, RemoteSvc};
use crate::store::Compact;
use crate::write::{self, WriteError};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use kube::api::ObjectMeta;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use strait_core::labels;
use tokio::sync::{Notify, watch};

/// (namespace, member Service name): one federation, `<name>-federated` in that namespace.
pub type FedKey = (String, String);

/// Where a member lives.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// This cluster.
    Local,
    /// A linked cluster, by name.
    Cluster(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Local => f.write_str("local"),
            Source::Cluster(c) => f.write_str(c),
        }
    }
}

/// One port of a member, as the federated Service declares it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FedPort {
    pub name: Option<String>,
    pub port: i32,
    pub protocol: String,
    pub app_protocol: Option<String>,
}

/// What the federation needs of one member Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    /// Sorted by port number.
    pub ports: Vec<FedPort>,
    /// creationTimestamp, in seconds.
    pub created: Option<i64>,
    pub headless: bool,
    /// The labels and annotations a federated Service copies from it (none of Strait's).
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

fn fed_ports<'a>(
    ports: impl Iterator<Item = (Option<&'a str>, i32, Option<&'a str>, Option<&'a str>)>,
) -> Vec<FedPort> {
    let mut out: Vec<FedPort> = ports
        .map(|(name, port, protocol, app)| FedPort {
            name: name.map(String::from),
            port,
            protocol: protocol.unwrap_or("TCP").to_string(),
            app_protocol: app.map(String::from),
        })
        .collect();
    out.sort();
    out
}

impl MemberInfo {
    /// A remote member, as its Link's worker keeps it (labels and annotations already
    /// filtered by the Link's exclusions).
    pub fn of_remote(svc: &RemoteSvc) -> Self {
        let pairs = |p: &[(Box<str>, Box<str>)]| {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Self {
            ports: fed_ports(svc.ports.iter().map(|p: &Port| {
                (
                    p.name.as_deref(),
                    p.port,
                    p.protocol.as_deref(),
                    p.app_protocol.as_deref(),
                )
            })),
            created: svc.created,
            headless: svc.headless,
            labels: pairs(&svc.labels),
            annotations: pairs(&svc.annotations),
        }
    }

    /// The local member `svc`.
    pub fn of_local(svc: &Service) -> Self {
        let spec = svc.spec.as_ref();
        let copied = |m: &Option<BTreeMap<String, String>>| {
            m.iter()
                .flatten()
                .filter(|(k, _)| copies(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        Self {
            ports: fed_ports(
                spec.and_then(|s| s.ports.as_ref())
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        (
                            p.name.as_deref(),
                            p.port,
                            p.protocol.as_deref(),
                            p.app_protocol.as_deref(),
                        )
                    }),
            ),
            created: svc
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second()),
            headless: spec.and_then(|s| s.cluster_ip.as_deref()) == Some("None"),
            labels: copied(&svc.metadata.labels),
            annotations: copied(&svc.metadata.annotations),
        }
    }
}

/// Whether a federated Service copies a member's label or annotation `k`: never Strait's
/// own, never `kubectl`'s last-applied configuration.
fn copies(k: &str) -> bool {
    !k.starts_with(labels::PREFIX) && k != "kubectl.kubernetes.io/last-applied-configuration"
}

/// What one Link's worker reports: its cluster, the selector of its local members, and the
/// members its complete remote view holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub cluster: String,
    /// `federatedServiceSelector` as a label selector string; `None`: it selects nothing.
    pub selector: Option<String>,
    pub members: BTreeMap<FedKey, MemberInfo>,
}

/// What a Link's worker reports of its complete remote `view`.
pub(crate) fn report(plan: &crate::plan::Plan, view: &crate::session::RemoteView) -> Report {
    Report {
        cluster: plan.cluster.clone(),
        selector: plan.federated_string(),
        members: view
            .fed_services
            .values()
            .iter()
            .map(|s| (s.key(), MemberInfo::of_remote(s)))
            .collect(),
    }
}

/// What the reconciler decided for one federation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Federation {
    /// The oldest member that is not refused: the federated Service's ports and metadata
    /// are its.
    pub oldest: Source,
    pub ports: Vec<FedPort>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Members whose endpoints the federated Service lists.
    pub accepted: BTreeSet<Source>,
    /// Members refused, and why.
    pub refused: BTreeMap<Source, String>,
}

/// Every federation, by member key. A federation with no accepted member has no Service
/// (it is here for its refusals).
pub type Decision = BTreeMap<FedKey, Federation>;

fn show_ports(ports: &[FedPort]) -> String {
    let v: Vec<String> = ports
        .iter()
        .map(|p| match &p.name {
            Some(n) if !n.is_empty() => format!("{n}:{}/{}", p.port, p.protocol),
            _ => format!("{}/{}", p.port, p.protocol),
        })
        .collect();
    format!("[{}]", v.join(", "))
}

/// Decides every federation from the workers' reports and the local members. Pure.
///
/// The oldest member (by creationTimestamp, then by source: this cluster first, then linked
/// clusters by name) that is not headless gives the ports and metadata; a member whose ports
/// differ from those (name, number, protocol, appProtocol) is refused, and so is a headless
/// member (a federated Service is balanced by the destination service, not by DNS).
pub fn decide<'a>(
    reports: impl IntoIterator<Item = &'a Report>,
    local: &BTreeMap<FedKey, MemberInfo>,
) -> Decision {
    let mut members: BTreeMap<FedKey, Vec<(Source, &MemberInfo)>> = BTreeMap::new();
    for (k, m) in local {
        members
            .entry(k.clone())
            .or_default()
            .push((Source::Local, m));
    }
    for r in reports {
        for (k, m) in &r.members {
            members
                .entry(k.clone())
                .or_default()
                .push((Source::Cluster(r.cluster.clone()), m));
        }
    }
    let mut out = Decision::new();
    for (key, ms) in members {
        let mut refused = BTreeMap::new();
        for (src, _) in ms.iter().filter(|(_, m)| m.headless) {
            refused.insert(
                src.clone(),
                format!(
                    "a headless Service cannot join federated Service {}: its endpoints are balanced by the destination service, not by DNS",
                    labels::federated_name(&key.1)
                ),
            );
        }
        let Some((oldest, first)) = ms
            .iter()
            .filter(|(_, m)| !m.headless)
            .min_by_key(|(src, m)| (m.created.unwrap_or(i64::MAX), src.clone()))
        else {
            out.insert(key, no_service(refused));
            continue;
        };
        let mut accepted = BTreeSet::new();
        for (src, m) in ms.iter().filter(|(_, m)| !m.headless) {
            if m.ports == first.ports {
                accepted.insert(src.clone());
            } else {
                refused.insert(
                    src.clone(),
                    format!(
                        "ports {} differ from {}'s {}, which federated Service {} takes from its oldest member ({oldest}); give every member the same ports",
                        show_ports(&m.ports),
                        labels::federated_name(&key.1),
                        show_ports(&first.ports),
                        labels::federated_name(&key.1),
                    ),
                );
            }
        }
        out.insert(
            key,
            Federation {
                oldest: oldest.clone(),
                ports: first.ports.clone(),
                labels: first.labels.clone(),
                annotations: first.annotations.clone(),
                accepted,
                refused,
            },
        );
    }
    out
}

fn no_service(refused: BTreeMap<Source, String>) -> Federation {
    Federation {
        oldest: Source::Local,
        ports: Vec::new(),
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
        accepted: BTreeSet::new(),
        refused,
    }
}

/// The federated Service of federation `key`, if it has a member to list. Pure.
pub fn service(key: &FedKey, fed: &Federation) -> Option<Service> {
    if fed.accepted.is_empty() {
        return None;
    }
    let (ns, member) = key;
    let mut lbls = fed.labels.clone();
    lbls.insert(labels::MIRRORED_SERVICE.into(), "true".into());
    lbls.insert(labels::CLUSTER_NAME.into(), labels::FEDERATED_OWNER.into());
    lbls.insert(labels::FEDERATED_SERVICE.into(), "true".into());
    let mut annos = fed.annotations.clone();
    let members: Vec<String> = fed.accepted.iter().map(Source::to_string).collect();
    annos.insert(labels::FEDERATED_MEMBERS.into(), members.join(","));
    if fed.accepted.contains(&Source::Local) {
        annos.insert(labels::FEDERATED_LOCAL_MEMBER.into(), member.clone());
    }
    let ports = fed
        .ports
        .iter()
        .map(|p| ServicePort {
            name: p.name.clone(),
            port: p.port,
            protocol: Some(p.protocol.clone()),
            app_protocol: p.app_protocol.clone(),
            ..Default::default()
        })
        .collect();
    let mut svc = Service {
        metadata: ObjectMeta {
            name: Some(labels::federated_name(member)),
            namespace: Some(ns.clone()),
            labels: Some(lbls),
            annotations: Some(annos),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            ports: Some(ports),
            ..Default::default()
        }),
        status: None,
    };
    crate::mirror::stamp(&mut svc.metadata, &svc.spec);
    Some(svc)
}

/// What a Link's worker reads of the decision for its cluster's member `key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// Not decided yet (the reconciler has not seen this member): keep what is there.
    Pending,
    Accepted,
    Refused(&'a str),
}

/// The verdict on cluster `cluster`'s member `key`.
pub fn verdict<'a>(decision: &'a Decision, key: &FedKey, cluster: &str) -> Verdict<'a> {
    let src = Source::Cluster(cluster.to_string());
    match decision.get(key) {
        None => Verdict::Pending,
        Some(f) if f.accepted.contains(&src) => Verdict::Accepted,
        Some(f) => match f.refused.get(&src) {
            Some(why) => Verdict::Refused(why),
            None => Verdict::Pending,
        },
    }
}

/// Where the workers' reports meet the reconciler: the reports by Link name (`None` until a
/// Link's worker has a complete view), and the decision every worker reads.
#[derive(Debug)]
pub struct Hub {
    reports: Mutex<BTreeMap<String, Option<Report>>>,
    changed: Notify,
    decision: watch::Sender<Arc<Decision>>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            reports: Mutex::new(BTreeMap::new()),
            changed: Notify::new(),
            decision: watch::channel(Arc::new(Decision::new())).0,
        }
    }
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Option<Report>>> {
        self.reports.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A worker for `link` starts: until it reports, no federated Service is deleted.
    pub fn expect(&self, link: &str) {
        self.lock().entry(link.to_string()).or_insert(None);
        self.changed.notify_one();
    }

    /// `link`'s worker's members, from a complete remote view.
    pub fn report(&self, link: &str, report: Report) {
        let mut reports = self.lock();
        let slot = reports.entry(link.to_string()).or_insert(None);
        if slot.as_ref() != Some(&report) {
            *slot = Some(report);
            drop(reports);
            self.changed.notify_one();
        }
    }

    /// `link` is gone: its members leave.
    pub fn forget(&self, link: &str) {
        if self.lock().remove(link).is_some() {
            self.changed.notify_one();
        }
    }

    /// The decision, for workers.
    pub fn decision(&self) -> watch::Receiver<Arc<Decision>> {
        self.decision.subscribe()
    }

    /// The reports, and whether every expected one is in.
    fn snapshot(&self) -> (Vec<Report>, bool) {
        let reports = self.lock();
        let complete = reports.values().all(Option::is_some);
        (reports.values().flatten().cloned().collect(), complete)
    }
}

/// A watch of the local Services one selector selects.
struct LocalWatch {
    store: kube::runtime::reflector::Store<Service>,
    /// Its first list is complete.
    listed: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LocalWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Watches the local Services `selector` selects; every change wakes the reconciler.
fn local_watch(client: &kube::Client, selector: &str, hub: Arc<Hub>) -> LocalWatch {
    use futures::StreamExt;
    use kube::runtime::WatchStreamExt;
    use kube::runtime::watcher::Event;
    use std::sync::atomic::{AtomicBool, Ordering};
    let (store, writer) = kube::runtime::reflector::store();
    let api = kube::Api::<Service>::all(client.clone());
    let cfg = kube::runtime::watcher::Config::default().labels(selector);
    let stream = kube::runtime::watcher(api, cfg)
        .default_backoff()
        .reflect(writer);
    let selector = selector.to_string();
    let listed = Arc::new(AtomicBool::new(false));
    let flag = listed.clone();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(r) = stream.next().await {
            match r {
                Ok(Event::InitDone) => flag.store(true, Ordering::Release),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(%selector, error = %e, "local federated-members watch failed; retrying");
                    continue;
                }
            }
            hub.changed.notify_one();
        }
    });
    LocalWatch {
        store,
        listed,
        task,
    }
}

/// How often the reconciler passes even when nothing was notified.
const RESYNC: Duration = Duration::from_secs(30);

/// The federation reconciler: runs until dropped.
pub(crate) async fn run(ctx: Arc<crate::Context>) {
    let hub = ctx.federation.clone();
    let mut watches: BTreeMap<String, LocalWatch> = BTreeMap::new();
    let mut local_changed = ctx.local.changed.clone();
    let mut written: BTreeMap<FedKey, (String, Instant)> = BTreeMap::new();
    loop {
        let (reports, complete) = hub.snapshot();
        // One watch per distinct selector of the Links.
        let selectors: BTreeSet<String> =
            reports.iter().filter_map(|r| r.selector.clone()).collect();
        watches.retain(|s, _| selectors.contains(s));
        for s in &selectors {
            if !watches.contains_key(s) {
                watches.insert(s.clone(), local_watch(&ctx.client, s, hub.clone()));
            }
        }
        let mut locals_listed = true;
        let mut local = BTreeMap::new();
        for w in watches.values() {
            locals_listed &= w.listed.load(std::sync::atomic::Ordering::Acquire);
            for svc in w.store.state() {
                let m = &svc.metadata;
                let mirrored = m
                    .labels
                    .as_ref()
                    .is_some_and(|l| l.contains_key(labels::MIRRORED_SERVICE));
                if let (Some(ns), Some(name), false) = (&m.namespace, &m.name, mirrored) {
                    local.insert((ns.clone(), name.clone()), MemberInfo::of_local(&svc));
                }
            }
        }
        let decision = decide(&reports, &local);
        hub.decision.send_if_modified(|d| {
            let changed = **d != decision;
            if changed {
                *d = Arc::new(decision.clone());
            }
            changed
        });
        let may_delete = complete && locals_listed;
        let failed = reconcile(&ctx, &decision, may_delete, &mut written).await;
        let wait = if failed {
            Duration::from_secs(2)
        } else {
            RESYNC
        };
        tokio::select! {
            () = hub.changed.notified() => {}
            r = local_changed.changed() => if r.is_err() { return },
            () = tokio::time::sleep(wait) => {}
        }
        // Changes arriving together are handled in one pass.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One pass: writes every federated Service the decision wants and deletes ours it does not
/// (only when `may_delete`). Whether a write failed.
async fn reconcile(
    ctx: &crate::Context,
    decision: &Decision,
    may_delete: bool,
    written: &mut BTreeMap<FedKey, (String, Instant)>,
) -> bool {
    let services: &Compact = &ctx.local.services;
    let now = Instant::now();
    written.retain(|_, (_, at)| now.duration_since(*at) < crate::diff::WRITE_GRACE);
    let mut wanted = BTreeSet::new();
    let mut failed = false;
    for (key, fed) in decision {
        let Some(svc) = service(key, fed) else {
            continue;
        };
        let name = labels::federated_name(&key.1);
        let k = (key.0.clone(), name.clone());
        wanted.insert(k.clone());
        let hash = crate::mirror::spec_hash(&svc.metadata);
        let actual = services.get(&key.0, &name);
        match &actual {
            Some(a) if !a.is_ours(labels::FEDERATED_OWNER) => {
                tracing::warn!(namespace = %key.0, %name, "federated Service name taken by a Service that is not Strait's; left alone");
                continue;
            }
            Some(a) if a.hash.as_deref() == Some(hash.as_str()) => continue,
            _ => {}
        }
        if written.get(&k).is_some_and(|(h, _)| *h == hash) {
            continue;
        }
        let new = actual.is_none();
        match write::write(
            &ctx.client,
            &ctx.metrics,
            &svc,
            new,
            labels::FEDERATED_OWNER,
        )
        .await
        {
            Ok(w) => {
                tracing::info!(namespace = %key.0, %name, members = ?fed.accepted, "federated Service written");
                written.insert(k, (w.hash, Instant::now()));
            }
            Err(e @ WriteError::Conflict { .. }) => {
                tracing::warn!(error = %e, "federated Service name taken; left alone");
            }
            Err(e) => {
                failed = true;
                tracing::warn!(error = %e, source = %crate::source_of(&e), "writing a federated Service failed; will retry");
            }
        }
    }
    for (key, uid) in services.ours(labels::FEDERATED_OWNER) {
        if wanted.contains(&key) || !may_delete {
            continue;
        }
        ctx.metrics.count_request("delete");
        match write::delete::<Service>(ctx.client.clone(), &key.0, &key.1, uid).await {
            Ok(()) => {
                written.remove(&key);
                tracing::info!(namespace = %key.0, name = %key.1, "federated Service removed: its last member left");
            }
            Err(e) => {
                failed = true;
                tracing::warn!(namespace = %key.0, name = %key.1, error = %e, "removing a federated Service failed; will retry");
            }
        }
    }
    failed
}

#[cfg(test)]
mod tests;
