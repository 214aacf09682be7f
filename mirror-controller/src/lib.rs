//! # strait-mirror
//!
//! The service-mirror controller. For every `Link` in its namespace it watches the remote
//! cluster's exported Services and keeps a local mirror `<svc>-<cluster>` of each, whose
//! endpoints are the remote cluster's gateway; it probes that gateway and marks the mirrors
//! not ready when it stops answering. Services the Link selects for remote discovery get a
//! mirror whose endpoints are the remote pods themselves (a flat network).
//!
//! ```text
//!           Lease (leader election)
//!                 │ held
//!  Links ──► controller (finalizer) ──► one worker per Link (worker.rs)
//!                                         ├─ credentials Secret (credentials.rs) ─► remote session (session.rs: read-only watches)
//!                                         │    └─ token renewal (renew.rs): TokenRequest on the remote ─► patch the Secret
//!                                         ├─ gateway (gateway.rs): resolve (hickory, TTL) + probe (TLS 1.3, identity)
//!                                         └─ sync (sync.rs): diff (diff.rs, pure) ─► create / JSON patch (write.rs, bounded), GC
//!                                              └─ federated members ─► federation.rs: <svc>-federated (one reconciler)
//!  local watches (compact stores of our mirrors, their slices, Namespaces) ─┘ shared by every worker
//!  admin :9999 ─► /metrics, /ready
//! ```
//!
//! Start it with [`run`] (or [`run_until`]) and a [`Config`]; [`cli`] builds the config from
//! flags and env.
//! The pure parts are [`plan`] (what a Link asks for), [`mirror`] (what a mirror looks like)
//! and the sync pass's diff (which writes to make, what the status says).
//!
//! ## Three ways in
//!
//! | a remote Service is mirrored when | its mirror's endpoints | TLS identity |
//! |---|---|---|
//! | the Link's `selector` matches its labels | the gateway, at `gatewayPort` | `gatewayIdentity` |
//! | a `ServiceExport` (MCS API, KEP-1645) has its name | the gateway, the same | the same |
//! | `remoteDiscoverySelector` matches (wins over both) | its ready pods, at their ports | each pod's, per slice |
//!
//! The remote is only read; nothing is written there but the TokenRequests that renew the
//! Link's own ServiceAccount token ([`renew`]). The credentials need `list` and
//! `watch` on Services and EndpointSlices; on `serviceexports.multicluster.x-k8s.io` to
//! honour exports; on Pods only for a Link with a `remoteDiscoverySelector`; and `create` on
//! their own `serviceaccounts/token` to be renewed before they expire (else they simply
//! expire, and the Link status says so). Renewal writes the new kubeconfig back into the
//! credentials Secret, so the local Role needs `patch` on Secrets. A remote without the `ServiceExport`
//! API (404), or whose credentials may not read it (403), simply has no exports; it is asked
//! again every [`Config::exports_recheck`]. Every remote Service is watched only while at
//! least one `ServiceExport` exists, and only the exported ones are kept ([`session`]).
//!
//! A remote-discovery mirror carries `mirror.strait.dev/remote-discovery=<cluster>` and no
//! gateway identity; its EndpointSlices list the ready remote pods, one slice per identity
//! (`<sa>.<ns>.serviceaccount.identity.<control-ns>.<trust-domain>`, the last two taken from
//! `gatewayIdentity`) in `mirror.strait.dev/remote-identity`, and a slice without it for pods
//! without a proxy. The gateway's liveness does not touch them. Pod addresses are kept only
//! for these Services, and remote pods (service account, meshed or not) only while the Link
//! has a `remoteDiscoverySelector`; the gateway mirrors' stores are as small as before.
//!
//! ## Only ours
//!
//! The controller writes and deletes only Services and EndpointSlices labelled
//! `mirrored-service=true` + `cluster-name=<the Link's cluster>`, and every write proves it
//! atomically, with no window between a check and the write:
//! - a name not in our stores is *created*, which fails on any existing object; a metadata
//!   GET then tells ours (the store lagged) from someone else's;
//! - an update is a JSON patch whose first operations `test` our two labels, so the API
//!   server refuses the whole patch if the object stopped being ours;
//! - a delete carries a uid precondition.
//!
//! A name taken by someone else is reported in the Link status (`Error`, `conflict: ...`),
//! counted once in `reconcile_errors{reason="conflict"}`, left alone, and checked again after
//! a minute. The Service is written before its slice, so a slice never lends endpoints to a
//! Service that is not ours. The same holds for every slice of a remote-discovery mirror.
//!
//! ## Two replicas
//!
//! Replicas with different `holder_identity`s share one Lease ([`lease`]); only its holder
//! runs the Link controller and writes. A replica standing by sends no write but its Lease
//! reads, shows `strait_mirror_leader 0` and answers `/ready` with 200 `standby` (ready to take
//! over, so a rolling update of two replicas proceeds). When the
//! leader dies, a follower takes over once the Lease has gone unrenewed for its duration; when
//! it is shut down (SIGTERM), it stops its workers and clears the holder, and a follower takes
//! over at its next try. A leader that cannot renew stops serving ([`run`] returns
//! [`Error::Lease`], the binary exits) before any follower may take over. What no lease can
//! fence: a write already sent when the leader stops.

pub mod cli;
pub mod controller;
pub mod credentials;
mod diff;
pub mod federation;
mod gateway;
pub mod lease;
pub mod metrics;
pub mod mirror;
pub mod plan;
pub mod probe;
pub mod remote;
pub mod renew;
pub mod resolve;
pub mod session;
pub mod store;
mod sync;
pub mod worker;
pub mod write;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;

pub use metrics::Metrics;

/// The controller's configuration (see `main.rs` for the flags).
#[derive(Clone, Debug)]
pub struct Config {
    /// The namespace whose Links this process serves.
    pub namespace: String,
    /// PEM of the trust anchors that the gateway's certificate must chain to.
    pub trust_anchors_pem: Vec<u8>,
    /// Where `/metrics` and `/ready` are served.
    pub admin_addr: SocketAddr,
    /// This replica's name in the Lease.
    pub holder_identity: String,
    /// The Lease's name and duration.
    pub lease_name: String,
    pub lease_duration: Duration,
    /// Writes in flight at once, per Link.
    pub write_concurrency: usize,
    /// The shortest time between two status writes of one Link.
    pub status_interval: Duration,
    /// Keep mirrors when a Link is deleted (also per Link with an annotation).
    pub keep_mirrors_on_delete: bool,
    /// Resolve gateway hostnames with only this nameserver instead of the system's.
    pub nameserver: Option<SocketAddr>,
    /// How often a remote cluster that does not serve `ServiceExport`s (or refuses them to
    /// the Link's credentials) is asked again.
    pub exports_recheck: Duration,
    /// When to renew a credentials token: this percent of the way from its `iat` to its
    /// `exp` (1..=99).
    pub credentials_renew_at_percent: u8,
}

impl Config {
    pub fn new(namespace: impl Into<String>, trust_anchors_pem: Vec<u8>) -> Self {
        Self {
            namespace: namespace.into(),
            trust_anchors_pem,
            admin_addr: SocketAddr::from(([0, 0, 0, 0], strait_core::ports::MIRROR_ADMIN)),
            holder_identity: format!("strait-mirror-{}", std::process::id()),
            lease_name: "strait-mirror".into(),
            lease_duration: Duration::from_secs(15),
            write_concurrency: 32,
            status_interval: Duration::from_secs(1),
            keep_mirrors_on_delete: false,
            nameserver: None,
            exports_recheck: session::EXPORTS_RECHECK,
            credentials_renew_at_percent: renew::DEFAULT_RENEW_AT_PERCENT,
        }
    }
}

/// Why the controller stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("loading the trust anchors")]
    Anchors(#[source] strait_tls::TlsError),
    #[error("building the DNS resolver")]
    Resolver(#[source] resolve::ResolveError),
    #[error("binding the admin server on {0}")]
    Bind(SocketAddr, #[source] std::io::Error),
    #[error("leadership lost")]
    Lease(#[source] lease::LeaseError),
}

/// The local cluster as every worker sees it: only objects labelled as mirrors, and only what
/// a pass reads of them ([`store::Meta`]). A name that is not in these stores may still be
/// taken by someone else's object; a worker proves ownership before its first write of such
/// a name.
#[derive(Clone, Debug)]
pub struct LocalStores {
    pub services: store::Compact,
    pub slices: store::Compact,
    /// Namespace names, keyed ("", name).
    pub namespaces: store::Compact,
    /// Bumped on every local change.
    pub changed: watch::Receiver<u64>,
}

/// What every part of the controller shares.
pub struct Context {
    pub client: kube::Client,
    pub namespace: String,
    pub metrics: Arc<Metrics>,
    pub tls: Arc<rustls::ClientConfig>,
    pub resolver: resolve::Resolver,
    pub local: LocalStores,
    pub write_concurrency: usize,
    pub status_interval: Duration,
    pub keep_mirrors_on_delete: bool,
    pub exports_recheck: Duration,
    pub credentials_renew_at_percent: u8,
    /// Where the workers' federated members meet the federation reconciler.
    pub federation: Arc<federation::Hub>,
}

/// Runs the controller until leadership is lost (an error) or the task is dropped; dropping
/// it stops every task it started. See [`run_until`] to stop it gracefully.
pub async fn run(client: kube::Client, config: Config, metrics: Arc<Metrics>) -> Result<(), Error> {
    run_until(client, config, metrics, std::future::pending()).await
}

/// Runs the controller until leadership is lost (an error) or `shutdown` completes. A leader
/// that is shut down stops its workers, then gives up the Lease so that another replica takes
/// over at its next try instead of after the lease duration.
pub async fn run_until(
    client: kube::Client,
    config: Config,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let tls = probe::client_config(&config.trust_anchors_pem).map_err(Error::Anchors)?;
    let resolver = resolve::resolver(config.nameserver).map_err(Error::Resolver)?;
    let listener = tokio::net::TcpListener::bind(config.admin_addr)
        .await
        .map_err(|e| Error::Bind(config.admin_addr, e))?;
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(metrics::serve(listener, metrics.clone()));
    let mut shutdown = std::pin::pin!(shutdown);

    let mut elector = lease::Elector::new(
        Api::namespaced(client.clone(), &config.namespace),
        &config.lease_name,
        &config.holder_identity,
        config.lease_duration,
    );
    tracing::info!(holder = %config.holder_identity, lease = %config.lease_name, "standing by for the leader Lease");
    let renewed = tokio::select! {
        t = elector.acquire() => t,
        () = &mut shutdown => {
            tracing::info!("shutting down while standing by");
            return Ok(());
        }
    };
    metrics.leader.set(1);
    tracing::info!(holder = %config.holder_identity, "leader; serving Links in {}", config.namespace);

    // Renewal runs from the moment the lease is ours, also while the local stores sync.
    let result = tokio::select! {
        () = lead(client, &config, metrics.clone(), tls, resolver) => Ok(()),
        e = elector.hold(renewed) => Err(Error::Lease(e)),
        () = &mut shutdown => {
            tracing::info!("shutting down");
            Ok(())
        }
    };
    // The leader's futures are dropped by now, and with them every worker.
    metrics.ready.store(false, Ordering::Relaxed);
    metrics.leader.set(0);
    if result.is_ok() {
        match elector.release().await {
            Ok(()) => tracing::info!(lease = %config.lease_name, "released the leader Lease"),
            Err(e) => tracing::warn!(error = %e, "releasing the leader Lease failed; it expires"),
        }
    }
    result
}

/// The leader's work: the local stores, then the Link controller until its stream ends.
async fn lead(
    client: kube::Client,
    config: &Config,
    metrics: Arc<Metrics>,
    tls: Arc<rustls::ClientConfig>,
    resolver: resolve::Resolver,
) {
    let mut tasks = tokio::task::JoinSet::new();
    let (local, feeders) = local_stores(client.clone());
    for f in feeders {
        tasks.spawn(f);
    }
    local.services.wait_until_ready().await;
    local.slices.wait_until_ready().await;
    local.namespaces.wait_until_ready().await;
    let ctx = Arc::new(Context {
        client,
        namespace: config.namespace.clone(),
        metrics: metrics.clone(),
        tls,
        resolver,
        local,
        write_concurrency: config.write_concurrency,
        status_interval: config.status_interval,
        keep_mirrors_on_delete: config.keep_mirrors_on_delete,
        exports_recheck: config.exports_recheck,
        credentials_renew_at_percent: config.credentials_renew_at_percent,
        federation: Arc::default(),
    });
    metrics.ready.store(true, Ordering::Relaxed);
    tokio::select! {
        () = controller::run(ctx.clone()) => {}
        () = federation::run(ctx) => {}
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

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

type Feeder = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Local watches shared by all workers, into compact stores: our mirror Services (with their
/// cluster IPs) and EndpointSlices labelled `mirrored-service=true` (slices metadata-only),
/// and Namespace names (metadata-only).
fn local_stores(client: kube::Client) -> (LocalStores, Vec<Feeder>) {
    let (tx, rx) = watch::channel(0u64);
    let tx = Arc::new(tx);
    let (services, slices, namespaces) =
        <(store::Compact, store::Compact, store::Compact)>::default();
    let ours = watcher::Config::default()
        .labels(&format!("{}=true", strait_core::labels::MIRRORED_SERVICE));
    fn feed<S, K>(s: S, mut writer: store::Writer<K>, tx: Arc<watch::Sender<u64>>) -> Feeder
    where
        S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
        K: kube::Resource + Send + 'static,
    {
        Box::pin(async move {
            let mut s = std::pin::pin!(s);
            while let Some(ev) = s.next().await {
                match ev {
                    Ok(ev) => writer.apply(&ev),
                    Err(e) => tracing::warn!(error = %e, "local watch failed; retrying"),
                }
                tx.send_modify(|n| *n = n.wrapping_add(1));
            }
        })
    }
    let feeders = vec![
        // Whole Services, not metadata: a pass reads their cluster IPs (a headless mirror's
        // slice lists its per-pod mirrors by them; a mirror that must change between
        // headless and not is replaced).
        feed(
            watcher::watcher(Api::<Service>::all(client.clone()), ours.clone()).default_backoff(),
            store::service_writer(services.clone()),
            tx.clone(),
        ),
        feed(
            watcher::watcher(
                Api::<PartialObjectMeta<EndpointSlice>>::all(client.clone()),
                ours,
            )
            .default_backoff(),
            store::writer(slices.clone()),
            tx.clone(),
        ),
        feed(
            watcher::watcher(
                Api::<PartialObjectMeta<Namespace>>::all(client),
                watcher::Config::default(),
            )
            .default_backoff(),
            store::writer(namespaces.clone()),
            tx,
        ),
    ];
    (
        LocalStores {
            services,
            slices,
            namespaces,
            changed: rx,
        },
        feeders,
    )
}
