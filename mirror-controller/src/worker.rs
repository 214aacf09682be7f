//! One Link's worker: its own tasks, so a broken remote never slows another Link.
//!
//! ```text
//!  credentials Secret ──► remote session (session.rs) ───────────────────────┐
//!  gatewayAddress ──► resolve (TTL) ──┐                                      │ notify
//!  probe every period ± jitter ───────┴─► GatewayState ──────────────────────┤
//!  local reflectors (Services, our EndpointSlices, Namespaces) ──────────────┤
//!                                                                            ▼
//!                          sync pass: desired − actual ─► ≤N writes in flight (SSA), GC
//!                                                                            │
//!                          status (counts, capped list) ◄────────────────────┘ ─► debounced write
//! ```
//!
//! Every pass is level-triggered: it derives all mirrors from the remote stores and writes only
//! those whose [`mirror::SPEC_HASH`] differs. Orphans are deleted only once the remote list is
//! complete (after the first list and after every re-list).

use crate::mirror::{self, GatewayView, InvalidService, RdGroup, Via};
use crate::plan::Plan;
use crate::session::RemoteView;
use crate::{Context, probe, resolve};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use rand::Rng;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strait_k8s_api::link::{NOT_MIRRORED_CAP, NotMirrored, Reason};
use strait_k8s_api::{Link, LinkStatus};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

/// How long a write is trusted while the local reflector catches up.
const WRITE_GRACE: Duration = Duration::from_secs(10);
/// A full pass at least this often, even when nothing was notified.
const RESYNC: Duration = Duration::from_secs(300);
/// Changes arriving within this window are handled in one pass.
const COALESCE: Duration = Duration::from_millis(100);

/// Why one step of a Link's work failed. Reported in status and metrics, then retried.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the credentials Secret has no key `kubeconfig`")]
    NoKubeconfig,
    #[error("the kubeconfig in the credentials Secret does not parse")]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    #[error("building a client from the credentials kubeconfig")]
    RemoteClient(#[source] kube::Error),
    #[error("writing {kind} {namespace}/{name}")]
    Apply {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("encoding the update of {kind} {namespace}/{name}")]
    Encode {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("deleting {kind} {namespace}/{name}")]
    Delete {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("creating namespace {0}")]
    CreateNamespace(String, #[source] kube::Error),
    #[error("writing the Link status")]
    Status(#[source] kube::Error),
    #[error("conflict: {kind} {namespace}/{name} exists and is not ours; left alone")]
    Conflict {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error("checking who owns {kind} {namespace}/{name}")]
    Ownership {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::NoKubeconfig | Error::Kubeconfig(_) | Error::RemoteClient(_) => "credentials",
            Error::Apply { .. } | Error::Encode { .. } => "apply",
            Error::Delete { .. } => "delete",
            Error::CreateNamespace(..) => "create_namespace",
            Error::Status(_) => "status",
            Error::Conflict { .. } => "conflict",
            Error::Ownership { .. } => "ownership",
        }
    }
}

/// The gateway as probed and resolved.
#[derive(Clone, Debug, Default, PartialEq)]
struct GatewayState {
    addrs: Vec<std::net::IpAddr>,
    alive: Option<bool>,
}

/// Runs one Link until the task is aborted.
pub(crate) async fn run(ctx: Arc<Context>, link: Arc<Link>) {
    let name = link.metadata.name.clone().unwrap_or_default();
    let (status_tx, status_rx) = watch::channel(LinkStatus {
        observed_generation: link.metadata.generation,
        ..Default::default()
    });
    let mut tasks = JoinSet::new();
    tasks.spawn(write_status(ctx.clone(), name.clone(), status_rx));
    let plan = match Plan::new(&link.spec) {
        Ok(plan) => Arc::new(plan),
        Err(e) => {
            tracing::warn!(link = %name, error = %e, "Link is invalid; not serving it");
            ctx.metrics.error(&name, "invalid_link");
            status_tx.send_modify(|s| s.link_error = Some(e.to_string()));
            // Keep the status writer alive until the Link changes (the worker is then replaced).
            let _ = tasks.join_next().await;
            return;
        }
    };
    for w in &plan.warnings {
        tracing::warn!(link = %name, "{w}");
    }
    status_tx.send_if_modified(|s| {
        let changed = s.warnings != plan.warnings;
        s.warnings.clone_from(&plan.warnings);
        changed
    });
    let trigger = Arc::new(Notify::new());
    let (gw_tx, gw_rx) = watch::channel(GatewayState {
        addrs: Vec::new(),
        alive: None,
    });
    let (remote_tx, remote_rx) = watch::channel::<Option<RemoteView>>(None);
    tasks.spawn(gateway(
        ctx.clone(),
        name.clone(),
        plan.clone(),
        gw_tx,
        status_tx.clone(),
    ));
    tasks.spawn(credentials(
        ctx.clone(),
        name.clone(),
        plan.clone(),
        remote_tx,
        status_tx.clone(),
        trigger.clone(),
    ));
    let mut sync = Sync {
        ctx,
        link: name,
        plan,
        written: HashMap::new(),
        memo: HashMap::new(),
        slice_memo: HashMap::new(),
        rd_memo: HashMap::new(),
        conflicts: HashMap::new(),
    };
    sync.run(trigger, gw_rx, remote_rx, status_tx).await;
}

/// Writes the Link status at most once per `ctx.status_interval`, only when it changed.
async fn write_status(ctx: Arc<Context>, link: String, mut rx: watch::Receiver<LinkStatus>) {
    let api: Api<Link> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let mut last: Option<LinkStatus> = None;
    loop {
        if rx.changed().await.is_err() {
            return;
        }
        tokio::time::sleep(ctx.status_interval).await;
        let status = rx.borrow_and_update().clone();
        if last.as_ref() == Some(&status) {
            continue;
        }
        let body = serde_json::json!({
            "apiVersion": "multicluster.strait.dev/v1alpha1",
            "kind": "Link",
            "status": status,
        });
        ctx.metrics.count_request("patch");
        let pp = PatchParams::apply(mirror::FIELD_MANAGER).force();
        match api.patch_status(&link, &pp, &Patch::Apply(&body)).await {
            Ok(_) => last = Some(status),
            Err(e) => {
                let e = Error::Status(e);
                tracing::warn!(%link, error = %e, source = %source_of(&e), "status write failed");
                ctx.metrics.error(&link, e.metric_label());
                // Try again at the next interval.
                rx.mark_changed();
            }
        }
    }
}

/// Resolves the gateway's addresses (again when the TTL runs out) and probes it.
async fn gateway(
    ctx: Arc<Context>,
    link: String,
    plan: Arc<Plan>,
    tx: watch::Sender<GatewayState>,
    status: watch::Sender<LinkStatus>,
) {
    let labels = crate::metrics::Metrics::link(&link);
    let mut next_resolve = tokio::time::Instant::now();
    let mut next_probe = tokio::time::Instant::now();
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next_resolve) => {
                let (addrs, next, errors) = resolve::resolve_all(&ctx.resolver, &plan.gateway).await;
                for e in &errors {
                    tracing::warn!(%link, error = %e, source = %source_of(e), "resolving the gateway failed");
                    ctx.metrics.error(&link, "resolve");
                }
                next_resolve = tokio::time::Instant::from_std(next);
                // A failed lookup keeps the previous addresses rather than emptying the mirrors.
                if errors.is_empty() || !addrs.is_empty() {
                    tx.send_if_modified(|g| {
                        let changed = g.addrs != addrs;
                        g.addrs = addrs.clone();
                        changed
                    });
                    status.send_if_modified(|s| {
                        let a: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
                        let changed = s.gateway_addresses != a;
                        s.gateway_addresses = a;
                        changed
                    });
                }
            }
            _ = tokio::time::sleep_until(next_probe) => {
                let addrs = tx.borrow().addrs.clone();
                let mut result = Err("no gateway address resolved".to_string());
                for addr in addrs {
                    match probe::probe(ctx.tls.clone(), addr, plan.probe_port, &plan.probe_path, &plan.gateway_identity, plan.probe_timeout).await {
                        Ok(latency) => { result = Ok(latency); break; }
                        Err(e) => result = Err(format!("{e}: {}", source_of(&e))),
                    }
                }
                let alive = match result {
                    Ok(latency) => {
                        failures = 0;
                        let ms = latency.as_secs_f64() * 1000.0;
                        ctx.metrics.probe_latency_ms.get_or_create(&labels).observe(ms);
                        status.send_if_modified(|s| {
                            let v = Some(ms.round() as u64);
                            let changed = s.gateway_latency_ms != v;
                            s.gateway_latency_ms = v;
                            changed
                        });
                        true
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        tracing::debug!(%link, failures, error = %e, "gateway probe failed");
                        ctx.metrics.error(&link, "probe");
                        // Unknown stays unknown (alive) until the threshold is reached.
                        failures < plan.failure_threshold && tx.borrow().alive != Some(false)
                    }
                };
                ctx.metrics.gateway_alive.get_or_create(&labels).set(i64::from(alive));
                let known = tx.borrow().alive.is_some() || failures == 0 || !alive;
                if known {
                    tx.send_if_modified(|g| {
                        let changed = g.alive != Some(alive);
                        if changed {
                            tracing::info!(%link, alive, "gateway liveness changed");
                        }
                        g.alive = Some(alive);
                        changed
                    });
                    status.send_if_modified(|s| {
                        let changed = s.gateway_alive != Some(alive);
                        s.gateway_alive = Some(alive);
                        changed
                    });
                }
                let jitter = rand::rng().random_range(0.9..1.1);
                next_probe = tokio::time::Instant::now() + plan.probe_period.mul_f64(jitter);
            }
        }
    }
}

/// Watches the credentials Secret; on every change of its kubeconfig, reconnects.
async fn credentials(
    ctx: Arc<Context>,
    link: String,
    plan: Arc<Plan>,
    remote: watch::Sender<Option<RemoteView>>,
    status: watch::Sender<LinkStatus>,
    trigger: Arc<Notify>,
) {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let cfg =
        watcher::Config::default().fields(&format!("metadata.name={}", plan.credentials_secret));
    let mut events = std::pin::pin!(watcher::watcher(api, cfg).default_backoff());
    // The session runs in its own task; the guard aborts it when this task is aborted too
    // (a dropped JoinHandle alone would leave it running against the remote API).
    let mut current: Option<(u64, AbortOnDrop)> = None;
    let set_error = |e: Option<String>| {
        status.send_if_modified(|s| {
            let changed = s.link_error != e;
            s.link_error = e.clone();
            changed
        });
    };
    while let Some(ev) = events.next().await {
        let secret = match ev {
            Ok(Event::Apply(s) | Event::InitApply(s)) => s,
            Ok(Event::Delete(_)) => {
                set_error(Some(format!(
                    "credentials Secret {} is missing",
                    plan.credentials_secret
                )));
                continue;
            }
            Ok(Event::Init | Event::InitDone) => continue,
            Err(e) => {
                tracing::warn!(%link, error = %e, "watching the credentials Secret failed");
                continue;
            }
        };
        let kubeconfig = secret
            .data
            .as_ref()
            .and_then(|d| d.get("kubeconfig"))
            .map(|b| b.0.clone());
        let hash = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            kubeconfig.hash(&mut h);
            h.finish()
        };
        if current.as_ref().is_some_and(|(h, _)| *h == hash) {
            continue;
        }
        match remote_client(kubeconfig).await {
            Ok(client) => {
                set_error(None);
                if current.take().is_some() {
                    tracing::info!(%link, "credentials changed; reconnecting");
                }
                let (view, session) = crate::session::session(
                    ctx.clone(),
                    link.clone(),
                    plan.clone(),
                    client,
                    status.clone(),
                    trigger.clone(),
                );
                remote.send_replace(Some(view));
                current = Some((hash, AbortOnDrop(tokio::spawn(session))));
                trigger.notify_one();
            }
            Err(e) => {
                // Never log the kubeconfig; the error names only the step.
                tracing::warn!(%link, error = %e, "credentials are unusable");
                ctx.metrics.error(&link, e.metric_label());
                set_error(Some(e.to_string()));
            }
        }
    }
    drop(current);
}

/// Aborts its task when dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn remote_client(kubeconfig: Option<Vec<u8>>) -> Result<kube::Client, Error> {
    let bytes = kubeconfig.ok_or(Error::NoKubeconfig)?;
    let text = String::from_utf8_lossy(&bytes);
    let kc = kube::config::Kubeconfig::from_yaml(&text).map_err(Error::Kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(Error::Kubeconfig)?;
    kube::Client::try_from(cfg).map_err(Error::RemoteClient)
}

/// How long a name found taken by someone else is left alone before it is checked again.
const CONFLICT_RECHECK: Duration = Duration::from_secs(60);

type Key = (String, String);

/// A derived mirror, as little as a pass needs to compare: its name and spec hash.
#[derive(Clone)]
struct Derived {
    name: String,
    hash: String,
}

/// What one write did: the mirror it was for (to report errors), what was written (kind,
/// key, spec hash) and how it ended.
struct Outcome {
    key: Option<Key>,
    wrote: Vec<(bool, Key, String)>,
    result: Result<(), Error>,
}

/// One write the pass decided on.
enum Op {
    /// Apply a mirror's Service and/or slice, derived from `remote` only when the write runs
    /// (a cold start queues thousands; they stay small). `claim_*`: the name is not in our
    /// stores, so prove it is free (or already ours) before writing.
    Mirror {
        key: Key,
        remote: Arc<crate::remote::RemoteSvc>,
        remote_ready: bool,
        write_svc: bool,
        claim_svc: bool,
        write_slice: bool,
        claim_slice: bool,
    },
    /// Apply a remote-discovery mirror's Service and/or the slices named in `slices` (with
    /// whether each must be claimed first), derived from `remote` and `groups` when the write
    /// runs.
    RdMirror {
        key: Key,
        remote: Arc<crate::remote::RemoteSvc>,
        groups: Vec<RdGroup>,
        write_svc: bool,
        claim_svc: bool,
        slices: Vec<(String, bool)>,
    },
    DeleteService(Key, Option<String>),
    DeleteSlice(Key, Option<String>),
    CreateNamespace(String),
}

struct Sync {
    ctx: Arc<Context>,
    link: String,
    plan: Arc<Plan>,
    /// What we wrote recently, by (kind, ns, name): the spec hash and when.
    written: HashMap<(bool, String, String), (String, Instant)>,
    /// Derived mirrors by remote (ns, name), with the remote resourceVersion and the way
    /// they came from.
    memo: HashMap<Key, (String, Via, Result<Derived, InvalidService>)>,
    /// Derived slice hashes by mirror key, with what they were derived from (the Service's
    /// hash, a fingerprint of the gateway view, remote readiness).
    slice_memo: HashMap<Key, (String, u64, bool, String)>,
    /// Remote-discovery mirrors' slices (name, spec hash) by mirror key, with a fingerprint
    /// of what they were derived from (the Service's hash and the endpoint groups).
    rd_memo: HashMap<Key, (u64, Vec<(String, String)>)>,
    /// Mirror names taken by someone else's object: the message, and when last checked.
    conflicts: HashMap<Key, (String, Instant)>,
}

impl Sync {
    async fn run(
        &mut self,
        trigger: Arc<Notify>,
        mut gw: watch::Receiver<GatewayState>,
        remote: watch::Receiver<Option<RemoteView>>,
        status: watch::Sender<LinkStatus>,
    ) {
        let mut local = self.ctx.local.changed.clone();
        let mut retry: Option<tokio::time::Instant> = None;
        let mut backoff = Duration::from_millis(500);
        loop {
            let retry_at = retry.unwrap_or_else(|| tokio::time::Instant::now() + RESYNC);
            tokio::select! {
                _ = trigger.notified() => {}
                r = local.changed() => if r.is_err() { return },
                r = gw.changed() => if r.is_err() { return },
                _ = tokio::time::sleep_until(retry_at) => {}
            }
            tokio::time::sleep(COALESCE).await;
            let view = remote.borrow().clone();
            let Some(view) = view else { continue };
            if !view.synced() {
                continue;
            }
            let gateway = gw.borrow_and_update().clone();
            let (s, failed) = self.pass(&view, &gateway).await;
            status.send_if_modified(|st| {
                let changed = st.services != s.services
                    || st.not_mirrored != s.not_mirrored
                    || st.not_mirrored_omitted != s.not_mirrored_omitted;
                st.services = s.services.clone();
                st.not_mirrored = s.not_mirrored.clone();
                st.not_mirrored_omitted = s.not_mirrored_omitted;
                changed
            });
            if failed {
                retry = Some(tokio::time::Instant::now() + backoff);
                backoff = (backoff * 2).min(Duration::from_secs(30));
            } else {
                retry = None;
                backoff = Duration::from_millis(500);
            }
        }
    }

    /// Derives every mirror, writes the differences, removes orphans. Returns the status
    /// counts and whether anything failed (to retry with backoff).
    async fn pass(&mut self, view: &RemoteView, gateway: &GatewayState) -> (LinkStatus, bool) {
        let plan = self.plan.clone();
        let ctx = self.ctx.clone();
        let local = &ctx.local;
        let gwv = GatewayView {
            addrs: gateway.addrs.clone(),
            alive: gateway.alive != Some(false),
        };
        let gw_fp = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            gwv.hash(&mut h);
            h.finish()
        };
        let ready: HashSet<Key> = view.slices.ready();
        let remote_services = exported_services(view);
        let rd_slices = view.rd_slices.by_service();
        let mut not_mirrored: Vec<NotMirrored> = Vec::new();
        // Mirror Services and mirror slices this pass wants (ours that are not are removed).
        let mut desired_keys: HashSet<Key> = HashSet::new();
        let mut desired_slices: HashSet<Key> = HashSet::new();
        let mut creates = Vec::new();
        let mut updates = Vec::new();
        let mut namespaces_to_create = BTreeMap::new();
        let mut mirrored_ok: Vec<Key> = Vec::new();
        let now = Instant::now();
        let mut seen: HashSet<Key> = HashSet::new();
        for (remote, via) in remote_services.iter() {
            let via = *via;
            let (ns, name) = (&remote.namespace.to_string(), &remote.name.to_string());
            let nm = |reason, message: String| NotMirrored {
                namespace: ns.clone(),
                name: name.clone(),
                reason,
                message,
            };
            // Deriving a mirror serialises and hashes it; do it once per remote
            // resourceVersion, and keep only its name and hash between passes.
            let rv = remote
                .resource_version
                .as_deref()
                .unwrap_or_default()
                .to_string();
            let memo_key = (ns.clone(), name.clone());
            let mut desired_svc: Option<Service> = None;
            let derived = match self.memo.get(&memo_key) {
                Some((v, w, d)) if *v == rv && *w == via => d.clone(),
                _ => {
                    let d = mirror::service(&remote.to_service(), &plan, via);
                    let summary = d.as_ref().map(derived_of).map_err(Clone::clone);
                    desired_svc = d.ok();
                    self.memo
                        .insert(memo_key.clone(), (rv, via, summary.clone()));
                    summary
                }
            };
            seen.insert(memo_key);
            let derived = match derived {
                Ok(d) => d,
                Err(
                    e @ (InvalidService::ExternalName
                    | InvalidService::Headless
                    | InvalidService::NoPorts
                    | InvalidService::NameTooLong(_)),
                ) => {
                    not_mirrored.push(nm(Reason::InvalidService, e.to_string()));
                    continue;
                }
            };
            let mname = derived.name.clone();
            let key = (ns.clone(), mname.clone());
            desired_keys.insert(key.clone());
            if via == Via::Gateway {
                desired_slices.insert(key.clone());
            }
            if local.namespaces.get("", ns).is_none() {
                if plan.create_namespaces {
                    namespaces_to_create.insert(ns.clone(), ());
                }
                not_mirrored.push(nm(
                    Reason::MissingNamespace,
                    format!("namespace {ns} does not exist in this cluster"),
                ));
                continue;
            }
            if via == Via::RemoteDiscovery {
                let remote_slices = rd_slices.get(&(ns.clone(), name.clone()));
                let groups = mirror::rd_groups(
                    remote_slices.map(Vec::as_slice).unwrap_or_default(),
                    ns,
                    &plan,
                    |pod| view.pods.get(&(ns.clone(), pod.to_string())),
                );
                let fp = {
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    (&derived.hash, &groups).hash(&mut h);
                    h.finish()
                };
                let slices = match self.rd_memo.get(&key) {
                    Some((f, v)) if *f == fp => v.clone(),
                    _ => {
                        let svc = desired_svc.get_or_insert_with(|| derive(remote, &plan, via));
                        let v: Vec<(String, String)> = mirror::rd_slices(svc, &plan, &groups)
                            .iter()
                            .map(|es| {
                                (
                                    es.metadata.name.clone().unwrap_or_default(),
                                    hash_of(&es.metadata),
                                )
                            })
                            .collect();
                        self.rd_memo.insert(key.clone(), (fp, v.clone()));
                        v
                    }
                };
                // Wanted even while the mirror is in conflict, so ours stay meanwhile.
                desired_slices.extend(slices.iter().map(|(n, _)| (ns.clone(), n.clone())));
                let actual = local.services.get(ns, &mname);
                let foreign = match &actual {
                    Some(a) if !a.is_ours(&plan.cluster) => Some(("Service", mname.clone())),
                    _ => slices.iter().find_map(|(n, _)| {
                        let a = local.slices.get(ns, n)?;
                        (!a.is_ours(&plan.cluster)).then(|| ("EndpointSlice", n.clone()))
                    }),
                };
                if let Some((kind, name)) = &foreign {
                    let e = Error::Conflict {
                        kind,
                        namespace: ns.clone(),
                        name: name.clone(),
                    };
                    self.note_conflict(&key, e.to_string(), now);
                }
                if let Some((msg, at)) = self.conflicts.get(&key)
                    && (foreign.is_some() || now.duration_since(*at) < CONFLICT_RECHECK)
                {
                    not_mirrored.push(nm(Reason::Error, msg.clone()));
                    continue;
                }
                mirrored_ok.push(key.clone());
                let write_svc = !self.fresh(
                    true,
                    &key,
                    actual.as_ref().and_then(|a| a.hash.as_deref()),
                    &derived.hash,
                    now,
                );
                let mut new = actual.is_none();
                let mut to_write = Vec::new();
                for (n, h) in &slices {
                    let a = local.slices.get(ns, n);
                    let k = (ns.clone(), n.clone());
                    if !self.fresh(
                        false,
                        &k,
                        a.as_ref().and_then(|a| a.hash.as_deref()),
                        h,
                        now,
                    ) {
                        new |= a.is_none();
                        to_write.push((n.clone(), a.is_none()));
                    }
                }
                if !write_svc && to_write.is_empty() {
                    continue;
                }
                let op = Op::RdMirror {
                    key: key.clone(),
                    remote: remote.clone(),
                    groups,
                    write_svc,
                    claim_svc: write_svc && actual.is_none(),
                    slices: to_write,
                };
                if new {
                    creates.push(op);
                } else {
                    updates.push(op);
                }
                continue;
            }
            let actual = local.services.get(ns, &mname);
            let actual_slice = local.slices.get(ns, &mname);
            // Labelled as a mirror, but of another cluster: not ours either.
            let foreign = match (&actual, &actual_slice) {
                (Some(a), _) if !a.is_ours(&plan.cluster) => Some("Service"),
                (_, Some(a)) if !a.is_ours(&plan.cluster) => Some("EndpointSlice"),
                _ => None,
            };
            if let Some(kind) = foreign {
                let e = Error::Conflict {
                    kind,
                    namespace: ns.clone(),
                    name: mname.clone(),
                };
                self.note_conflict(&key, e.to_string(), now);
            }
            if let Some((msg, at)) = self.conflicts.get(&key)
                && (foreign.is_some() || now.duration_since(*at) < CONFLICT_RECHECK)
            {
                not_mirrored.push(nm(Reason::Error, msg.clone()));
                continue;
            }
            let is_ready = ready.contains(&(ns.clone(), name.clone()));
            let slice_hash = match self.slice_memo.get(&key) {
                Some((h, g, r, sh)) if *h == derived.hash && *g == gw_fp && *r == is_ready => {
                    sh.clone()
                }
                _ => {
                    let svc = desired_svc.get_or_insert_with(|| derive(remote, &plan, via));
                    let es = mirror::slice(svc, &plan, &gwv, is_ready);
                    let sh = hash_of(&es.metadata);
                    self.slice_memo.insert(
                        key.clone(),
                        (derived.hash.clone(), gw_fp, is_ready, sh.clone()),
                    );
                    sh
                }
            };
            mirrored_ok.push(key.clone());
            let write_svc = !self.fresh(
                true,
                &key,
                actual.as_ref().and_then(|a| a.hash.as_deref()),
                &derived.hash,
                now,
            );
            let write_slice = !self.fresh(
                false,
                &key,
                actual_slice.as_ref().and_then(|a| a.hash.as_deref()),
                &slice_hash,
                now,
            );
            if !(write_svc || write_slice) {
                continue;
            }
            let op = Op::Mirror {
                key: key.clone(),
                remote: remote.clone(),
                remote_ready: is_ready,
                write_svc,
                claim_svc: write_svc && actual.is_none(),
                write_slice,
                claim_slice: write_slice && actual_slice.is_none(),
            };
            if actual.is_none() || actual_slice.is_none() {
                creates.push(op);
            } else {
                updates.push(op);
            }
        }
        self.memo.retain(|k, _| seen.contains(k));
        self.slice_memo.retain(|k, _| desired_keys.contains(k));
        self.rd_memo.retain(|k, _| desired_keys.contains(k));
        self.conflicts.retain(|k, _| desired_keys.contains(k));
        // Orphans: ours, for this cluster, with no remote twin.
        // What we wrote of them no longer vouches for anything: were the same object wanted
        // again within the grace, it must be written again (remote-discovery slices come
        // and go with their pods).
        let mut deletes = Vec::new();
        for (key, uid) in local.services.ours(&plan.cluster) {
            if !desired_keys.contains(&key) {
                self.written.remove(&(true, key.0.clone(), key.1.clone()));
                deletes.push(Op::DeleteService(key, uid));
            }
        }
        for (key, uid) in local.slices.ours(&plan.cluster) {
            if !desired_slices.contains(&key) {
                self.written.remove(&(false, key.0.clone(), key.1.clone()));
                deletes.push(Op::DeleteSlice(key, uid));
            }
        }
        let mut ops: Vec<Op> = namespaces_to_create
            .into_keys()
            .map(Op::CreateNamespace)
            .collect();
        // New exports first, so a large update never starves them.
        ops.extend(creates);
        ops.extend(updates);
        ops.extend(deletes);
        let n_ops = ops.len();
        let started = Instant::now();
        let gwv = Arc::new(gwv);
        let results: Vec<Outcome> =
            futures::stream::iter(ops.into_iter().map(|op| self.execute(op, gwv.clone())))
                .buffer_unordered(self.ctx.write_concurrency.max(1))
                .collect()
                .await;
        let mut failed = false;
        let mut errors: HashMap<Key, String> = HashMap::new();
        let now = Instant::now();
        for Outcome { key, wrote, result } in results {
            for (kind, k, hash) in wrote {
                self.written.insert((kind, k.0, k.1), (hash, now));
            }
            match result {
                Ok(()) => {
                    if let Some(k) = &key {
                        self.conflicts.remove(k);
                    }
                }
                Err(e @ Error::Conflict { .. }) => {
                    tracing::warn!(link = %self.link, error = %e, "mirror name taken");
                    if let Some(k) = key {
                        self.note_conflict(&k, e.to_string(), now);
                        errors.insert(k, e.to_string());
                    }
                }
                Err(e) => {
                    failed = true;
                    self.ctx.metrics.error(&self.link, e.metric_label());
                    tracing::warn!(link = %self.link, error = %e, source = %source_of(&e), "write failed; will retry");
                    if let Some(k) = key {
                        errors.insert(k, format!("{e}: {}", source_of(&e)));
                    }
                }
            }
        }
        if n_ops > 0 {
            tracing::info!(link = %self.link, writes = n_ops, elapsed_ms = started.elapsed().as_millis() as u64, "sync pass wrote changes");
        }
        self.written.retain(|_, (_, at)| at.elapsed() < WRITE_GRACE);
        // Status: counts by reason, and a capped list of what is not mirrored.
        let mut status = LinkStatus::default();
        let mut mirrored = 0u32;
        for key in &mirrored_ok {
            match errors.get(key) {
                None => mirrored += 1,
                Some(msg) => not_mirrored.push(NotMirrored {
                    namespace: key.0.clone(),
                    name: key
                        .1
                        .strip_suffix(&format!("-{}", plan.cluster))
                        .unwrap_or(&key.1)
                        .to_string(),
                    reason: Reason::Error,
                    message: msg.chars().take(200).collect(),
                }),
            }
        }
        status.services.mirrored = mirrored;
        for n in &not_mirrored {
            match n.reason {
                Reason::InvalidService => status.services.invalid_service += 1,
                Reason::MissingNamespace => status.services.missing_namespace += 1,
                Reason::Error => status.services.error += 1,
            }
        }
        not_mirrored.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let total = not_mirrored.len();
        not_mirrored.truncate(NOT_MIRRORED_CAP);
        status.not_mirrored_omitted = u32::try_from(total - not_mirrored.len()).unwrap_or(u32::MAX);
        status.not_mirrored = not_mirrored;
        self.ctx
            .metrics
            .mirrors
            .get_or_create(&crate::metrics::Metrics::link(&self.link))
            .set(i64::from(mirrored));
        (status, failed)
    }

    /// Remembers that `key`'s name is taken; counts a conflict only when it is new.
    fn note_conflict(&mut self, key: &Key, msg: String, now: Instant) {
        if self.conflicts.insert(key.clone(), (msg, now)).is_none() {
            self.ctx.metrics.error(&self.link, "conflict");
        }
    }

    /// Whether `actual` already carries `hash`, or we wrote exactly this a moment ago and
    /// the local reflector has not caught up yet.
    fn fresh(
        &self,
        is_svc: bool,
        key: &Key,
        actual_hash: Option<&str>,
        hash: &str,
        now: Instant,
    ) -> bool {
        if actual_hash == Some(hash) {
            return true;
        }
        self.written
            .get(&(is_svc, key.0.clone(), key.1.clone()))
            .is_some_and(|(h, at)| h == hash && now.duration_since(*at) < WRITE_GRACE)
    }

    fn execute(
        &self,
        op: Op,
        gateway: Arc<GatewayView>,
    ) -> impl std::future::Future<Output = Outcome> + use<> {
        let client = self.ctx.client.clone();
        let metrics = self.ctx.metrics.clone();
        let plan = self.plan.clone();
        async move {
            let cluster = &plan.cluster;
            match op {
                Op::Mirror {
                    key,
                    remote,
                    remote_ready,
                    write_svc,
                    claim_svc,
                    write_slice,
                    claim_slice,
                } => {
                    let fail = |key, wrote, e| Outcome {
                        key: Some(key),
                        wrote,
                        result: Err(e),
                    };
                    // The Service first: a slice is never written for a name that is not ours.
                    let svc = derive(&remote, &plan, Via::Gateway);
                    let mut wrote = Vec::new();
                    let mut created = None;
                    if write_svc {
                        match write(&client, &metrics, &svc, claim_svc, cluster).await {
                            Ok(w) => {
                                created = w.created_uid;
                                wrote.push((true, key.clone(), w.hash));
                            }
                            Err(e) => return fail(key, wrote, e),
                        }
                    }
                    if write_slice {
                        let es = mirror::slice(&svc, &plan, &gateway, remote_ready);
                        match write(&client, &metrics, &es, claim_slice, cluster).await {
                            Ok(w) => wrote.push((false, key.clone(), w.hash)),
                            // Someone else's slice has the mirror's name: it would lend its
                            // endpoints to the Service we just created, so take that back.
                            Err(e @ Error::Conflict { .. }) => {
                                take_back(&client, &metrics, &key, created, &mut wrote).await;
                                return fail(key, wrote, e);
                            }
                            Err(e) => return fail(key, wrote, e),
                        }
                    }
                    Outcome {
                        key: Some(key),
                        wrote,
                        result: Ok(()),
                    }
                }
                Op::RdMirror {
                    key,
                    remote,
                    groups,
                    write_svc,
                    claim_svc,
                    slices,
                } => {
                    let ns = key.0.clone();
                    let mut wrote = Vec::new();
                    let mut created = None;
                    let result = async {
                        // The Service first: no slice is written for a name that is not ours.
                        let svc = derive(&remote, &plan, Via::RemoteDiscovery);
                        if write_svc {
                            let w = write(&client, &metrics, &svc, claim_svc, cluster).await?;
                            created = w.created_uid;
                            wrote.push((true, key.clone(), w.hash));
                        }
                        for es in mirror::rd_slices(&svc, &plan, &groups) {
                            let name = es.metadata.name.clone().unwrap_or_default();
                            let Some((_, new)) = slices.iter().find(|(n, _)| *n == name) else {
                                continue;
                            };
                            let w = write(&client, &metrics, &es, *new, cluster).await?;
                            wrote.push((false, (ns.clone(), name), w.hash));
                        }
                        Ok(())
                    }
                    .await;
                    if let Err(Error::Conflict { .. }) = &result {
                        take_back(&client, &metrics, &key, created, &mut wrote).await;
                    }
                    Outcome {
                        key: Some(key),
                        wrote,
                        result,
                    }
                }
                Op::DeleteService((ns, name), uid) => {
                    metrics.count_request("delete");
                    let r = delete::<Service>(client, &ns, &name, uid).await;
                    Outcome {
                        key: None,
                        wrote: Vec::new(),
                        result: r.map_err(|source| Error::Delete {
                            kind: "Service",
                            namespace: ns,
                            name,
                            source,
                        }),
                    }
                }
                Op::DeleteSlice((ns, name), uid) => {
                    metrics.count_request("delete");
                    let r = delete::<EndpointSlice>(client, &ns, &name, uid).await;
                    Outcome {
                        key: None,
                        wrote: Vec::new(),
                        result: r.map_err(|source| Error::Delete {
                            kind: "EndpointSlice",
                            namespace: ns,
                            name,
                            source,
                        }),
                    }
                }
                Op::CreateNamespace(ns) => {
                    metrics.count_request("create");
                    let obj = Namespace {
                        metadata: kube::api::ObjectMeta {
                            name: Some(ns.clone()),
                            ..Default::default()
                        },
                        ..Default::default()
                    };
                    let r = match Api::<Namespace>::all(client)
                        .create(&PostParams::default(), &obj)
                        .await
                    {
                        Ok(_) => Ok(()),
                        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                        Err(e) => Err(Error::CreateNamespace(ns, e)),
                    };
                    Outcome {
                        key: None,
                        wrote: Vec::new(),
                        result: r,
                    }
                }
            }
        }
    }
}

/// Every remote Service the Link mirrors, and how: selected by `remoteDiscoverySelector`
/// (which wins), by `selector`, or by a `ServiceExport`.
fn exported_services(view: &RemoteView) -> Vec<(Arc<crate::remote::RemoteSvc>, Via)> {
    let rd = &view.rd_services;
    let mut all: Vec<_> = rd
        .state()
        .into_iter()
        .map(|s| (s, Via::RemoteDiscovery))
        .collect();
    all.extend(
        view.services
            .state()
            .into_iter()
            .filter(|s| !rd.contains(&s.key()))
            .map(|s| (s, Via::Gateway)),
    );
    all.extend(
        view.exported
            .state()
            .into_iter()
            .filter(|s| {
                let k = s.key();
                view.is_exported(&k) && !view.services.contains(&k) && !rd.contains(&k)
            })
            .map(|s| (s, Via::Gateway)),
    );
    all
}

/// The spec hash a derived object carries.
fn hash_of(m: &kube::api::ObjectMeta) -> String {
    m.annotations
        .as_ref()
        .and_then(|a| a.get(mirror::SPEC_HASH))
        .cloned()
        .unwrap_or_default()
}

fn derived_of(svc: &Service) -> Derived {
    Derived {
        name: svc.metadata.name.clone().unwrap_or_default(),
        hash: hash_of(&svc.metadata),
    }
}

/// Derives a mirror the memo already found valid (so this cannot fail but for a race with a
/// newer remote version, which the next pass handles).
fn derive(remote: &crate::remote::RemoteSvc, plan: &Plan, via: Via) -> Service {
    mirror::service(&remote.to_service(), plan, via).unwrap_or_default()
}

/// A mirror object the controller writes: which of its fields a write replaces.
trait MirrorObject:
    kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + serde::Serialize
    + serde::de::DeserializeOwned
    + std::fmt::Debug
{
    /// JSON pointers of the fields a mirror sets; an update replaces each one whole.
    const FIELDS: &'static [&'static str];
}

impl MirrorObject for Service {
    const FIELDS: &'static [&'static str] = &[
        "/metadata/labels",
        "/metadata/annotations",
        "/spec/type",
        "/spec/ports",
    ];
}

impl MirrorObject for EndpointSlice {
    const FIELDS: &'static [&'static str] = &[
        "/metadata/labels",
        "/metadata/annotations",
        "/endpoints",
        "/ports",
    ];
}

/// Someone else's slice has a name our new mirror needs: it would lend its endpoints to the
/// Service this write just `created`, so delete that Service again (by uid) and forget what
/// this write wrote.
async fn take_back(
    client: &kube::Client,
    metrics: &crate::Metrics,
    key: &Key,
    created: Option<String>,
    wrote: &mut Vec<(bool, Key, String)>,
) {
    let Some(uid) = created else { return };
    metrics.count_request("delete");
    if let Err(e) = delete::<Service>(client.clone(), &key.0, &key.1, Some(uid)).await {
        tracing::warn!(namespace = %key.0, name = %key.1, error = %e, "taking back a mirror Service");
    }
    wrote.clear();
}

/// What [`write`] did.
struct Written {
    /// The spec hash written.
    hash: String,
    /// The uid of the object, if this write created it.
    created_uid: Option<String>,
}

/// Writes one mirror object. Two requests at most, one in
/// the common cases:
/// - a name not in our stores (`new`) is created, which fails rather than touch an existing
///   object; only then a metadata GET tells whether the existing object is ours (our store
///   lagged) or someone else's (a conflict, left alone);
/// - an object of ours is updated with a JSON patch whose first operations `test` our
///   labels, so the API server refuses it atomically if the object stopped being ours.
///
/// Not server-side apply: creating a ClusterIP Service by apply costs the API server about
/// twice the CPU of a create (`bench/src/bin/mirror.rs` measures both), and a mirror's
/// fields are ours whole, so replacing them needs no field-ownership merge.
async fn write<K: MirrorObject>(
    client: &kube::Client,
    metrics: &crate::Metrics,
    desired: &K,
    new: bool,
    cluster: &str,
) -> Result<Written, Error> {
    let meta = desired.meta();
    let ns = meta.namespace.clone().unwrap_or_default();
    let name = meta.name.clone().unwrap_or_default();
    let hash = hash_of(meta);
    let kind = kind_of::<K>();
    let api = Api::<K>::namespaced(client.clone(), &ns);
    let failed = |source| Error::Apply {
        kind,
        namespace: ns.clone(),
        name: name.clone(),
        source,
    };
    if new {
        let pp = PostParams {
            field_manager: Some(mirror::FIELD_MANAGER.into()),
            ..Default::default()
        };
        metrics.count_request("create");
        match api.create(&pp, desired).await {
            Ok(o) => {
                return Ok(Written {
                    hash,
                    created_uid: o.meta().uid.clone(),
                });
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                claim::<K>(client, metrics, &ns, &name, cluster).await?;
            }
            Err(e) => return Err(failed(e)),
        }
    }
    let patch = update_patch(desired, cluster).map_err(|e| Error::Encode {
        kind,
        namespace: ns.clone(),
        name: name.clone(),
        source: e,
    })?;
    let pp = PatchParams {
        field_manager: Some(mirror::FIELD_MANAGER.into()),
        ..Default::default()
    };
    metrics.count_request("patch");
    match api.patch(&name, &pp, &Patch::<()>::Json(patch)).await {
        Ok(_) => Ok(Written {
            hash,
            created_uid: None,
        }),
        // A failed `test`: someone else's object now (or an invalid change); tell which.
        Err(kube::Error::Api(s)) if s.code == 422 => {
            claim::<K>(client, metrics, &ns, &name, cluster).await?;
            Err(failed(kube::Error::Api(s)))
        }
        Err(e) => Err(failed(e)),
    }
}

/// The JSON patch that makes an object of ours match `desired`: `test`s that it still
/// carries our labels, then every field in [`MirrorObject::FIELDS`] replaced whole (`add`
/// replaces a member that exists and creates one that does not).
fn update_patch<K: MirrorObject>(
    desired: &K,
    cluster: &str,
) -> Result<json_patch::Patch, serde_json::Error> {
    let body = serde_json::to_value(desired)?;
    let label = |k: &str| {
        format!(
            "/metadata/labels/{}",
            k.replace('~', "~0").replace('/', "~1")
        )
    };
    let mut ops = vec![
        serde_json::json!({"op": "test", "path": label(strait_core::labels::MIRRORED_SERVICE), "value": "true"}),
        serde_json::json!({"op": "test", "path": label(strait_core::labels::CLUSTER_NAME), "value": cluster}),
    ];
    for path in K::FIELDS {
        let value = body
            .pointer(path)
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        ops.push(serde_json::json!({"op": "add", "path": path, "value": value}));
    }
    serde_json::from_value(serde_json::Value::Array(ops))
}

fn kind_of<K: MirrorObject>() -> &'static str {
    if K::kind(&()) == "Service" {
        "Service"
    } else {
        "EndpointSlice"
    }
}

/// Tells whether the existing `ns/name` is ours: `Ok` if it is or if it is gone, a
/// [`Error::Conflict`] if someone else's. A metadata-only GET.
async fn claim<K: MirrorObject>(
    client: &kube::Client,
    metrics: &crate::Metrics,
    ns: &str,
    name: &str,
    cluster: &str,
) -> Result<(), Error> {
    let kind = kind_of::<K>();
    metrics.count_request("get");
    match Api::<K>::namespaced(client.clone(), ns)
        .get_metadata_opt(name)
        .await
    {
        Ok(None) => Ok(()),
        Ok(Some(m)) if mirror::is_ours(&m.metadata, cluster) => Ok(()),
        Ok(Some(_)) => Err(Error::Conflict {
            kind,
            namespace: ns.to_string(),
            name: name.to_string(),
        }),
        Err(source) => Err(Error::Ownership {
            kind,
            namespace: ns.to_string(),
            name: name.to_string(),
            source,
        }),
    }
}

/// Deletes one object, only if it is still the one we saw (uid precondition); gone is fine.
pub(crate) async fn delete<K>(
    client: kube::Client,
    ns: &str,
    name: &str,
    uid: Option<String>,
) -> Result<(), kube::Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let dp = DeleteParams {
        preconditions: uid.map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..Default::default()
    };
    match Api::<K>::namespaced(client, ns).delete(name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// The innermost cause, for logs (the outer message names the step).
pub(crate) fn source_of(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_update_tests_ownership_then_replaces_every_mirror_field() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-east", "namespace": "ns",
                "labels": {"mirror.strait.dev/mirrored-service": "true",
                           "mirror.strait.dev/cluster-name": "east", "a~b": "c"},
                "annotations": {"x": "y"}},
            "spec": {"type": "ClusterIP", "ports": [{"name": "http", "port": 80}]},
        }))
        .unwrap();
        let patch = serde_json::to_value(update_patch(&svc, "east").unwrap()).unwrap();
        assert_eq!(
            patch,
            serde_json::json!([
                {"op": "test", "path": "/metadata/labels/mirror.strait.dev~1mirrored-service", "value": "true"},
                {"op": "test", "path": "/metadata/labels/mirror.strait.dev~1cluster-name", "value": "east"},
                {"op": "add", "path": "/metadata/labels", "value": svc.metadata.labels},
                {"op": "add", "path": "/metadata/annotations", "value": {"x": "y"}},
                {"op": "add", "path": "/spec/type", "value": "ClusterIP"},
                {"op": "add", "path": "/spec/ports", "value": [{"name": "http", "port": 80}]},
            ])
        );
    }

    #[test]
    fn an_update_of_a_slice_replaces_endpoints_and_ports() {
        let es: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-east", "namespace": "ns"},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["198.18.0.1"], "conditions": {"ready": false}}],
            "ports": [{"name": "http", "port": 4143}],
        }))
        .unwrap();
        let patch = serde_json::to_value(update_patch(&es, "east").unwrap()).unwrap();
        let ops = patch.as_array().unwrap();
        let paths: Vec<&str> = ops.iter().map(|o| o["path"].as_str().unwrap()).collect();
        assert_eq!(
            paths[2..],
            [
                "/metadata/labels",
                "/metadata/annotations",
                "/endpoints",
                "/ports"
            ]
        );
        assert_eq!(ops[4]["value"][0]["conditions"]["ready"], false);
        // Absent metadata is written as null, which clears the field: nothing stale stays.
        assert_eq!(ops[2]["value"], serde_json::Value::Null);
    }
}
