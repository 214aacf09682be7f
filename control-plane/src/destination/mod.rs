//! # The destination service
//!
//! Serves `io.linkerd.proxy.destination.Destination` (Get, GetProfile) from a cache of the
//! cluster's Services, EndpointSlices and Pods. Proxies ask it where a name or address
//! leads; it answers with the ready endpoints, their TLS identities and protocol hints, and
//! keeps the stream open to send changes.
//!
//! ```text
//!  kube-apiserver ──watch×3──► watch.rs ──► Index (index.rs) ──topic per target──┐
//!                              (projections: model.rs)                           │
//!  proxy ──Get(web.shop.svc.cluster.local:80)──► server.rs ◄── subscribe ────────┘
//!        ◄── Add / Remove / NoEndpoints ──────── translate.rs (view → updates)
//! ```
//!
//! Start it with [`Discovery::spawn`], build the gRPC service with [`Discovery::service`], and
//! serve it with [`serve`] (or add it to your own tonic router):
//!
//! ```no_run
//! # async fn f(client: kube::Client) -> Result<(), Box<dyn std::error::Error>> {
//! use strait_control_plane::destination::{Discovery, DestinationConfig, Metrics, serve};
//! let discovery = Discovery::spawn(client);
//! let mut registry = prometheus_client::registry::Registry::default();
//! let svc = discovery.service(DestinationConfig::default(), Metrics::register(&mut registry));
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8086").await?;
//! serve(listener, svc, std::future::pending()).await?;
//! # Ok(()) }
//! ```

pub mod authority;
pub mod index;
pub mod metrics;
pub mod model;
pub mod server;
pub mod translate;
pub mod watch;

pub use metrics::Metrics;
pub use server::DestinationService;

use index::Index;
use linkerd2_proxy_api::destination::destination_server::DestinationServer;
use std::sync::Arc;
use std::time::Duration;

/// How the destination service names things. `Default` gives the design's defaults.
#[derive(Clone, Debug)]
pub struct DestinationConfig {
    /// The DNS suffix of this cluster's Services (`cluster.local`).
    pub cluster_domain: String,
    /// The namespace of the control plane, part of every identity name (`strait`).
    pub control_namespace: String,
    /// The trust domain, the tail of every identity name (`cluster.local`).
    pub trust_domain: String,
    /// The proxies' inbound port, sent as the opaque-transport port of meshed endpoints.
    pub inbound_port: u16,
    /// How long a lookup waits for the caches' first sync before answering `Unavailable`.
    pub sync_timeout: Duration,
}

impl Default for DestinationConfig {
    fn default() -> Self {
        Self {
            cluster_domain: "cluster.local".to_owned(),
            control_namespace: strait_core::identity::DEFAULT_CONTROL_NAMESPACE.to_owned(),
            trust_domain: strait_core::identity::DEFAULT_TRUST_DOMAIN.to_owned(),
            inbound_port: strait_core::ports::PROXY_INBOUND,
            sync_timeout: Duration::from_secs(30),
        }
    }
}

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("serving destination gRPC")]
    Serve(#[source] tonic::transport::Error),
}

/// The running watches and the cache they fill. Dropping it stops the watches.
#[derive(Debug)]
pub struct Discovery {
    index: Arc<Index>,
    watches: tokio::task::JoinHandle<()>,
}

impl Discovery {
    /// Starts the Service, EndpointSlice and Pod watches on `client`.
    pub fn spawn(client: kube::Client) -> Self {
        let index = Arc::new(Index::default());
        let watches = tokio::spawn(watch::run(client, index.clone()));
        Self { index, watches }
    }

    /// The shared cache (for readiness checks and tests).
    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    /// Waits until every watch has listed once.
    pub async fn synced(&self) {
        self.index.synced().await;
    }

    /// The gRPC service, ready for a tonic router.
    pub fn service(
        &self,
        config: DestinationConfig,
        metrics: Metrics,
    ) -> DestinationServer<DestinationService> {
        DestinationServer::new(DestinationService {
            index: self.index.clone(),
            config: Arc::new(config),
            metrics,
        })
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.watches.abort();
    }
}

/// Serves the destination service on `listener` until `shutdown` completes. HTTP/2
/// keepalives find proxies that vanished without closing their connection, so their
/// streams end too.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: DestinationServer<DestinationService>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), Error> {
    server()
        .add_service(service)
        .serve_with_incoming_shutdown(crate::listen::incoming(listener), shutdown)
        .await
        .map_err(Error::Serve)
}

/// Serves destination over mTLS with `tls` (see [`crate::own_cert::destination_server_config`]):
/// it presents its own identity and admits only clients whose certificate chains to the anchors.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    service: DestinationServer<DestinationService>,
    tls: std::sync::Arc<strait_tls::rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), Error> {
    server()
        .add_service(service)
        .serve_with_incoming_shutdown(crate::listen::tls_incoming(listener, tls), shutdown)
        .await
        .map_err(Error::Serve)
}

/// The gRPC server settings of destination (and policy): keepalives so a proxy notices a dead
/// stream.
pub(crate) fn server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
}
