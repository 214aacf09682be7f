//! One remote session: the watches of one remote cluster, made with one set of credentials,
//! and the compact stores they feed (`RemoteView`). Read-only: nothing here writes to the
//! remote cluster.
//!
//! ```text
//!  EndpointSlices (all) ─────────────────────► slices: readiness per Service
//!  Services (label `selector`) ───────────────► services
//!  ServiceExports (keys; 404/403 = none) ─────► exports ─┐ first one: start ──┐
//!                                                        └ new key: re-list ──┤
//!  Services (all, only while exports exist) ──► exported: those with an export ◄┘
//!  Services (label `remoteDiscoverySelector`) ─► rd_services ─┐ new key: re-list ─┐
//!  EndpointSlices of those, by name ───────────► rd_slices: ready addresses, ports ◄┘
//!  Pods (all, only with remoteDiscoverySelector) ► pods: service account, meshed
//! ```
//!
//! A Service exported by a `ServiceExport` carries no label a watch could select, and a label
//! selector cannot say "A or B", so such Services need a watch of every remote Service. It runs
//! only while the remote holds at least one `ServiceExport`, and keeps only the exported ones:
//! a remote without the MCS API (or without exports) costs exactly what it did before. An
//! export created after its Service's last event finds nothing kept; the all-Services watch is
//! then re-listed (coalesced, at most once per [`RELIST_MIN_INTERVAL`]), which keeps the
//! reflector's guarantee that a store is a list of the remote at some point in time.
//!
//! Remote discovery needs the remote pods' addresses, which the compact readiness store
//! drops. They are kept only for the Services selected by `remoteDiscoverySelector`, from a
//! watch of just their slices: `kubernetes.io/service-name in (<their names>)` (every slice
//! past [`RD_SELECTOR_MAX`] bytes of names, filtered as they arrive), re-listed when a new
//! Service is selected. With no such selector, none of these three watches runs.
//!
//! Every watch is polled by this one task, so the stores change in the order events arrive.

use crate::Context;
use crate::plan::Plan;
use crate::remote;
use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use strait_k8s_api::link::RemoteApiStatus;
use strait_k8s_api::{LinkStatus, ServiceExport};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// How often a remote without the `ServiceExport` API (or without access to it) is asked
/// again, by default ([`crate::Config::exports_recheck`]).
pub const EXPORTS_RECHECK: Duration = Duration::from_secs(60);
/// New exports arriving within this window share one re-list.
const RELIST_COALESCE: Duration = Duration::from_millis(500);
/// How often the remote API is asked whether it still accepts the credentials. A watch
/// that was authenticated before its credentials were revoked runs on until it times out
/// (minutes); this request is authenticated afresh, so a revoked account shows in the
/// Link's status within one period.
const CREDENTIALS_PING: Duration = Duration::from_secs(20);
/// The shortest time between two lists of every remote Service.
pub const RELIST_MIN_INTERVAL: Duration = Duration::from_secs(5);
/// The longest label selector of remote-discovery slices by Service name; past it, every
/// remote slice is watched and only theirs kept.
pub const RD_SELECTOR_MAX: usize = 4096;

/// A complete (or not yet) view of the remote cluster, from one set of credentials.
#[derive(Clone, Debug)]
pub(crate) struct RemoteView {
    /// Selected by the Link's `selector`.
    pub services: remote::Services,
    /// Exported by a `ServiceExport` (and not selected by `selector`).
    pub exported: remote::Services,
    pub exports: remote::Exports,
    pub slices: remote::Slices,
    /// Selected by `remoteDiscoverySelector`, with their slices' ready addresses and every
    /// remote pod (only when the Link has that selector).
    pub rd_services: remote::Services,
    pub rd_slices: remote::RdSlices,
    pub pods: remote::Pods,
    /// Selected by `federatedServiceSelector` (members of federated Services; only when the
    /// Link has that selector).
    pub fed_services: remote::Services,
    synced: Arc<AtomicBool>,
}

impl RemoteView {
    /// Empty stores, not listed yet.
    fn new() -> Self {
        Self {
            services: remote::Services::default(),
            exported: remote::Services::default(),
            exports: remote::Exports::default(),
            slices: remote::Slices::default(),
            rd_services: remote::Services::default(),
            rd_slices: remote::RdSlices::default(),
            pods: remote::Pods::default(),
            fed_services: remote::Services::default(),
            synced: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Empty stores, as complete (or not) as `synced` says: for tests of what a pass does.
    #[cfg(test)]
    pub(crate) fn listed(synced: bool) -> Self {
        let view = Self::new();
        view.synced.store(synced, Ordering::Release);
        view
    }

    /// Whether every watch the view needs has completed a list: only then may a pass
    /// remove mirrors whose remote twin is missing.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Whether `key` is exported by a `ServiceExport`.
    pub fn is_exported(&self, key: &remote::Key) -> bool {
        self.exports.contains(key)
    }
}

type Watch<K> = BoxStream<'static, Result<Event<K>, watcher::Error>>;
type ExportMeta = PartialObjectMeta<ServiceExport>;

fn watch<K>(api: Api<K>, cfg: watcher::Config) -> Watch<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher::watcher(api, cfg).default_backoff().boxed()
}

/// The next event of an optional watch; never, when there is none.
async fn next<K>(w: &mut Option<Watch<K>>) -> Option<Result<Event<K>, watcher::Error>> {
    match w {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Whether a watch error says the resource is not served (404) or not ours to read (403).
fn unavailable(e: &watcher::Error) -> Option<u16> {
    let code = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code,
        watcher::Error::WatchError(s) => s.code,
        _ => return None,
    };
    matches!(code, 403 | 404).then_some(code)
}

/// What the `ServiceExport` watch saw.
enum ExportEvent {
    Event(Box<Event<ExportMeta>>),
    /// The remote does not serve `ServiceExport`s (404) or refuses us (403): no exports.
    Absent(u16),
    Error(watcher::Error),
}

/// The remote `ServiceExport`s, or their absence, which is not an error: it is reported
/// once and checked again every `recheck`, so installing the CRD later just works.
enum ExportWatch {
    Start,
    Watching(Watch<ExportMeta>),
    Absent(Instant),
}

impl ExportWatch {
    /// Cancel-safe: the state changes only after an await completes.
    async fn next(&mut self, client: &kube::Client, recheck: Duration) -> ExportEvent {
        loop {
            match self {
                ExportWatch::Start => {
                    let api = Api::<ExportMeta>::all(client.clone());
                    *self = ExportWatch::Watching(watch(api, watcher::Config::default()));
                }
                ExportWatch::Absent(until) => {
                    tokio::time::sleep_until(*until).await;
                    *self = ExportWatch::Start;
                }
                ExportWatch::Watching(w) => match w.next().await {
                    Some(Ok(ev)) => return ExportEvent::Event(Box::new(ev)),
                    Some(Err(e)) => match unavailable(&e) {
                        Some(code) => {
                            *self = ExportWatch::Absent(Instant::now() + recheck);
                            return ExportEvent::Absent(code);
                        }
                        None => return ExportEvent::Error(e),
                    },
                    None => *self = ExportWatch::Start,
                },
            }
        }
    }
}

/// Starts watching the remote cluster; returns the stores and the future that feeds them.
pub(crate) fn session(
    ctx: Arc<Context>,
    link: String,
    plan: Arc<Plan>,
    client: kube::Client,
    status: watch::Sender<LinkStatus>,
    trigger: Arc<Notify>,
) -> (
    RemoteView,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let view = RemoteView::new();
    let session = Session {
        ctx,
        link,
        client,
        status,
        trigger,
        slices_w: remote::slices_writer(view.slices.clone()),
        services_w: remote::services_writer(view.services.clone(), plan.clone()),
        exported_w: remote::exported_writer(
            view.exported.clone(),
            plan.clone(),
            view.exports.clone(),
        ),
        exports_w: remote::exports_writer(view.exports.clone()),
        rd_services_w: remote::remote_discovery_writer(view.rd_services.clone(), plan.clone()),
        rd_slices_w: remote::rd_slices_writer(view.rd_slices.clone(), view.rd_services.clone()),
        pods_w: remote::pods_writer(view.pods.clone()),
        fed_services_w: remote::federated_writer(view.fed_services.clone(), plan.clone()),
        rd_selected: BTreeSet::new(),
        rd_relist_at: None,
        plan,
        view: view.clone(),
        synced: Synced::default(),
        exports_present: None,
        relist_at: None,
        last_list: None,
    };
    (view, session.run())
}

/// Which watches have completed their first list.
#[derive(Debug, Default)]
struct Synced {
    slices: bool,
    services: bool,
    exports: bool,
    /// The all-Services watch, since it last started from stopped.
    exported: bool,
    rd_services: bool,
    /// The remote-discovery slices watch, since it last started from stopped.
    rd_slices: bool,
    pods: bool,
    fed_services: bool,
}

struct Session {
    ctx: Arc<Context>,
    link: String,
    plan: Arc<Plan>,
    client: kube::Client,
    status: watch::Sender<LinkStatus>,
    trigger: Arc<Notify>,
    view: RemoteView,
    slices_w: remote::Writer<EndpointSlice, Arc<remote::SliceSummary>>,
    services_w: remote::Writer<Service, Arc<remote::RemoteSvc>>,
    exported_w: remote::Writer<Service, Arc<remote::RemoteSvc>>,
    exports_w: remote::Writer<ExportMeta, ()>,
    rd_services_w: remote::Writer<Service, Arc<remote::RemoteSvc>>,
    rd_slices_w: remote::Writer<EndpointSlice, Arc<remote::RdSlice>>,
    pods_w: remote::Writer<Pod, remote::PodMeta>,
    fed_services_w: remote::Writer<Service, Arc<remote::RemoteSvc>>,
    /// The remote-discovery Services whose slices the current slices watch selects.
    rd_selected: BTreeSet<remote::Key>,
    /// When the remote-discovery slices watch is to be re-listed.
    rd_relist_at: Option<Instant>,
    synced: Synced,
    /// Whether the remote serves `ServiceExport`s to us; `None` before the first answer.
    exports_present: Option<bool>,
    /// When the all-Services watch is to be re-listed.
    relist_at: Option<Instant>,
    /// When it last started a list.
    last_list: Option<Instant>,
}

impl Session {
    async fn run(mut self) {
        let labels = crate::metrics::Metrics::link(&self.link);
        let mut slices = watch(
            Api::<EndpointSlice>::all(self.client.clone()),
            watcher::Config::default(),
        );
        let mut services: Option<Watch<Service>> = self.plan.selector_string().map(|sel| {
            watch(
                Api::<Service>::all(self.client.clone()),
                watcher::Config::default().labels(&sel),
            )
        });
        self.synced.services = services.is_none();
        let mut exports = ExportWatch::Start;
        let mut exported: Option<Watch<Service>> = None;
        let rd = self.plan.remote_discovery_string();
        let mut rd_services: Option<Watch<Service>> = rd.as_ref().map(|sel| {
            watch(
                Api::<Service>::all(self.client.clone()),
                watcher::Config::default().labels(sel),
            )
        });
        let mut pods: Option<Watch<Pod>> = rd.as_ref().map(|_| {
            watch(
                Api::<Pod>::all(self.client.clone()),
                watcher::Config::default(),
            )
        });
        let mut rd_slices: Option<Watch<EndpointSlice>> = None;
        self.synced.rd_services = rd.is_none();
        self.synced.pods = rd.is_none();
        let mut fed_services: Option<Watch<Service>> = self.plan.federated_string().map(|sel| {
            watch(
                Api::<Service>::all(self.client.clone()),
                watcher::Config::default().labels(&sel),
            )
        });
        self.synced.fed_services = fed_services.is_none();
        let mut ping =
            tokio::time::interval_at(Instant::now() + CREDENTIALS_PING, CREDENTIALS_PING);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Each branch applies its event and says whether it was a watch error.
            let result: Result<(), watcher::Error> = tokio::select! {
                Some(ev) = slices.next() => ev.map(|ev| {
                    self.slices_w.apply(&ev);
                    self.listed(&ev, "endpointslices", |s| &mut s.slices);
                }),
                Some(ev) = next(&mut services) => ev.map(|ev| {
                    self.services_w.apply(&ev);
                    self.listed(&ev, "services", |s| &mut s.services);
                }),
                ev = exports.next(&self.client, self.ctx.exports_recheck) => match ev {
                    ExportEvent::Event(ev) => {
                        self.on_export(&ev, &mut exported);
                        Ok(())
                    }
                    ExportEvent::Absent(code) => {
                        self.on_exports_absent(code, &mut exported);
                        Ok(())
                    }
                    ExportEvent::Error(e) => Err(e),
                },
                Some(ev) = next(&mut exported) => ev.map(|ev| {
                    self.exported_w.apply(&ev);
                    self.listed(&ev, "exported services", |s| &mut s.exported);
                }),
                Some(ev) = next(&mut rd_services) => ev.map(|ev| {
                    self.rd_services_w.apply(&ev);
                    self.listed(&ev, "remote-discovery services", |s| &mut s.rd_services);
                    if self.synced.rd_services {
                        self.rd_changed(&mut rd_slices);
                    }
                }),
                Some(ev) = next(&mut rd_slices) => ev.map(|ev| {
                    self.rd_slices_w.apply(&ev);
                    self.listed(&ev, "remote-discovery endpointslices", |s| &mut s.rd_slices);
                }),
                Some(ev) = next(&mut pods) => ev.map(|ev| {
                    self.pods_w.apply(&ev);
                    self.listed(&ev, "pods", |s| &mut s.pods);
                }),
                Some(ev) = next(&mut fed_services) => ev.map(|ev| {
                    self.fed_services_w.apply(&ev);
                    self.listed(&ev, "federated services", |s| &mut s.fed_services);
                }),
                _ = ping.tick() => {
                    if let Err(e) = self.client.apiserver_version().await {
                        tracing::warn!(link = %self.link, error = %e, "the remote API does not accept a request");
                        self.set_reachable(Some(format!("the remote API refuses a request: {e}")));
                    }
                    continue;
                }
                () = sleep_until(self.rd_relist_at) => {
                    self.rd_relist_at = None;
                    if rd_slices.is_some() {
                        tracing::debug!(link = %self.link, "new remote-discovery Services; re-listing their slices");
                        rd_slices = Some(self.rd_slices_watch());
                    }
                    continue;
                }
                () = sleep_until(self.relist_at) => {
                    self.relist_at = None;
                    if exported.is_some() {
                        tracing::debug!(link = %self.link, "new ServiceExports; re-listing remote Services");
                        exported = Some(self.exported_watch());
                    }
                    continue;
                }
            };
            match result {
                Ok(()) => self.set_reachable(None),
                Err(e) => {
                    self.ctx.metrics.watch_restarts.get_or_create(&labels).inc();
                    tracing::warn!(link = %self.link, error = %e, "remote watch failed; retrying with backoff, mirrors kept");
                    self.set_reachable(Some(e.to_string()));
                }
            }
            let s = &self.synced;
            let synced = s.slices
                && s.services
                && s.exports
                && (exported.is_none() || s.exported)
                && s.rd_services
                && s.pods
                && s.fed_services
                && (rd_slices.is_none() || s.rd_slices);
            self.view.synced.store(synced, Ordering::Release);
            self.trigger.notify_one();
        }
    }

    /// Marks a watch listed at its `InitDone`.
    fn listed<K>(
        &mut self,
        ev: &Event<K>,
        what: &str,
        flag: impl FnOnce(&mut Synced) -> &mut bool,
    ) {
        if matches!(ev, Event::InitDone) {
            *flag(&mut self.synced) = true;
            tracing::info!(link = %self.link, what, "remote list complete; resyncing");
        }
    }

    fn set_reachable(&self, error: Option<String>) {
        self.status.send_if_modified(|s| {
            let new = Some(RemoteApiStatus {
                reachable: error.is_none(),
                message: error.clone(),
            });
            let changed = s.remote_api != new;
            s.remote_api = new;
            changed
        });
    }

    /// Keeps the remote-discovery slices watch selecting exactly the selected Services:
    /// started for the first, re-listed (coalesced) for a new one, stopped after the last.
    fn rd_changed(&mut self, rd_slices: &mut Option<Watch<EndpointSlice>>) {
        let keys = self.view.rd_services.keys();
        let rd = &self.view.rd_services;
        if self.rd_selected.iter().any(|k| !keys.contains(k)) {
            self.view
                .rd_slices
                .retain(|(ns, _), s| rd.contains(&(ns.clone(), s.service.to_string())));
            self.rd_selected.retain(|k| keys.contains(k));
        }
        if keys.is_empty() {
            *rd_slices = None;
            self.view.rd_slices.clear();
            self.rd_relist_at = None;
            return;
        }
        if keys.iter().all(|k| self.rd_selected.contains(k)) {
            return;
        }
        if rd_slices.is_none() {
            self.synced.rd_slices = false;
            *rd_slices = Some(self.rd_slices_watch());
        } else if self.rd_relist_at.is_none() {
            self.rd_relist_at = Some(Instant::now() + RELIST_COALESCE);
        }
    }

    /// A watch of the slices of the selected remote-discovery Services, by name (and by
    /// namespace, when they share one).
    fn rd_slices_watch(&mut self) -> Watch<EndpointSlice> {
        self.rd_selected = self.view.rd_services.keys().into_iter().collect();
        let (cfg, namespace) = rd_slices_selector(&self.rd_selected);
        let api = match namespace {
            Some(ns) => Api::<EndpointSlice>::namespaced(self.client.clone(), ns),
            None => Api::<EndpointSlice>::all(self.client.clone()),
        };
        watch(api, cfg)
    }

    fn exported_watch(&mut self) -> Watch<Service> {
        self.last_list = Some(Instant::now());
        watch(
            Api::<Service>::all(self.client.clone()),
            watcher::Config::default(),
        )
    }

    /// Applies a `ServiceExport` event; starts, stops or re-lists the all-Services watch.
    fn on_export(&mut self, ev: &Event<ExportMeta>, exported: &mut Option<Watch<Service>>) {
        // A watcher announces `Init` before it lists; only a completed list says the API is there.
        if matches!(ev, Event::InitDone) && self.exports_present != Some(true) {
            if self.exports_present == Some(false) {
                tracing::info!(link = %self.link, "the remote serves ServiceExports now; watching them");
            }
            self.exports_present = Some(true);
        }
        let key = |o: &ExportMeta| {
            (
                o.metadata.namespace.clone().unwrap_or_default(),
                o.metadata.name.clone().unwrap_or_default(),
            )
        };
        // Exports that are new to the store, to look for their Services.
        let before = match ev {
            Event::InitDone => Some(self.view.exports.keys()),
            _ => None,
        };
        let added_one = match ev {
            Event::Apply(o) => Some(key(o)).filter(|k| !self.view.exports.contains(k)),
            _ => None,
        };
        self.exports_w.apply(ev);
        match ev {
            Event::InitDone => {
                self.synced.exports = true;
                let before = before.unwrap_or_default();
                let added: Vec<_> = self
                    .view
                    .exports
                    .keys()
                    .into_iter()
                    .filter(|k| !before.contains(k))
                    .collect();
                // Unexported since the last list: drop them now rather than at the next list.
                for k in before.iter().filter(|k| !self.view.exports.contains(k)) {
                    self.view.exported.remove(k);
                }
                self.exports_changed(&added, exported);
            }
            Event::Apply(_) => {
                let added: Vec<_> = added_one.into_iter().collect();
                self.exports_changed(&added, exported);
            }
            Event::Delete(o) => {
                self.view.exported.remove(&key(o));
                self.exports_changed(&[], exported);
            }
            Event::Init | Event::InitApply(_) => {}
        }
    }

    fn on_exports_absent(&mut self, code: u16, exported: &mut Option<Watch<Service>>) {
        if self.exports_present != Some(false) {
            let why = if code == 403 {
                "the credentials may not list ServiceExports"
            } else {
                "the remote cluster does not serve the ServiceExport API"
            };
            tracing::info!(link = %self.link, code, "{why}; only Services selected by labels are exported (checking again every {:?})", self.ctx.exports_recheck);
            self.exports_present = Some(false);
        }
        self.exports_w.apply(&Event::Init);
        self.exports_w.apply(&Event::InitDone);
        self.synced.exports = true;
        self.exports_changed(&[], exported);
    }

    /// Keeps the all-Services watch running exactly while exports exist, and re-lists it when
    /// an export's Service may have been missed.
    fn exports_changed(&mut self, added: &[remote::Key], exported: &mut Option<Watch<Service>>) {
        if self.view.exports.is_empty() {
            if exported.take().is_some() {
                tracing::info!(link = %self.link, "no ServiceExports left; stopped watching every remote Service");
            }
            self.view.exported.clear();
            self.relist_at = None;
            return;
        }
        if exported.is_none() {
            tracing::info!(link = %self.link, exports = self.view.exports.len(), "ServiceExports found; watching every remote Service for them");
            self.synced.exported = false;
            *exported = Some(self.exported_watch());
            return;
        }
        let missed = added
            .iter()
            .any(|k| !self.view.exported.contains(k) && !self.view.services.contains(k));
        if missed && self.relist_at.is_none() {
            let soonest = self
                .last_list
                .map_or_else(Instant::now, |t| t + RELIST_MIN_INTERVAL);
            self.relist_at = Some(soonest.max(Instant::now() + RELIST_COALESCE));
        }
    }
}

/// The watch config (and namespace, when all share one) of the remote slices of Services
/// `keys`: `kubernetes.io/service-name in (...)`, or every slice when that selector would be
/// longer than [`RD_SELECTOR_MAX`].
fn rd_slices_selector(keys: &BTreeSet<remote::Key>) -> (watcher::Config, Option<&str>) {
    let names: BTreeSet<&str> = keys.iter().map(|(_, n)| n.as_str()).collect();
    let mut namespaces = keys.iter().map(|(ns, _)| ns.as_str());
    let first = namespaces.next();
    let namespace = first.filter(|f| namespaces.all(|ns| ns == *f));
    let list = names.into_iter().collect::<Vec<_>>().join(",");
    let cfg = watcher::Config::default();
    if list.is_empty() || list.len() > RD_SELECTOR_MAX {
        return (cfg, namespace);
    }
    let sel = format!("{} in ({list})", remote::SERVICE_NAME_LABEL);
    (cfg.labels(&sel), namespace)
}

#[cfg(test)]
mod tests;
