//! # The policy service
//!
//! Serves linkerd2-proxy-api's `io.linkerd.proxy.inbound.InboundServerPolicies` (GetPort,
//! WatchPort: whom a pod's port admits) and `io.linkerd.proxy.outbound.OutboundPolicies`
//! (Get, Watch: how to route to a Service) on the policy port (8090), beside destination.
//!
//! ```text
//!  kube-apiserver ──watch×6──► watch.rs ──► Index (index.rs) ──generation──┐
//!   Pods, Namespaces, Server, AuthorizationPolicy,                          │
//!   MeshTLSAuthentication, NetworkAuthentication                            ▼
//!  proxy ──WatchPort(ns:pod, 8080)──► server.rs ── inbound.rs (state → Server, authorizations)
//!  proxy ──Watch(198.19.0.10:80)────► server.rs ── outbound.rs (Service → routes, backend)
//!                                       ▲ destination's cache (Services) and its topics
//!  status.rs: AuthorizationPolicy `Accepted` (missing or invalid references)
//! ```
//!
//! Start it with [`Policies::spawn`] (it shares destination's Service cache) and serve it with
//! [`serve`] / [`serve_tls`].

#[cfg(test)]
mod fixtures;
pub mod inbound;
pub mod index;
pub mod model;
pub mod outbound;
pub mod server;
pub mod status;
pub mod watch;

pub use server::PolicyService;

use crate::destination::server as grpc_server;
use index::Index;
use ipnet::IpNet;
use linkerd2_proxy_api::inbound::inbound_server_policies_server::InboundServerPoliciesServer;
use linkerd2_proxy_api::outbound::outbound_policies_server::OutboundPoliciesServer;
use std::sync::Arc;
use std::time::Duration;
use strait_k8s_api::policy::DefaultPolicy;

/// How the policy service decides. `Default` gives Linkerd's defaults.
#[derive(Clone, Debug)]
pub struct PolicyConfig {
    /// The DNS suffix of this cluster's Services (`cluster.local`).
    pub cluster_domain: String,
    /// The control plane's namespace and trust domain, parts of every identity name.
    pub control_namespace: String,
    pub trust_domain: String,
    /// The policy of a port no Server selects, unless a namespace or pod annotation says
    /// otherwise (`all-unauthenticated`, as Linkerd).
    pub default_policy: DefaultPolicy,
    /// The networks `cluster-authenticated` and `cluster-unauthenticated` admit.
    pub cluster_networks: Vec<IpNet>,
    /// How long a proxy waits for a client's first bytes to detect HTTP.
    pub detect_timeout: Duration,
    /// How long a lookup waits for the caches' first sync before answering `Unavailable`.
    pub sync_timeout: Duration,
}

/// Linkerd's default cluster networks (the private ranges) plus this project's test range.
pub use strait_core::policy::DEFAULT_CLUSTER_NETWORKS;

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            cluster_domain: "cluster.local".to_owned(),
            control_namespace: strait_core::identity::DEFAULT_CONTROL_NAMESPACE.to_owned(),
            trust_domain: strait_core::identity::DEFAULT_TRUST_DOMAIN.to_owned(),
            default_policy: DefaultPolicy::AllUnauthenticated,
            cluster_networks: parse_networks(DEFAULT_CLUSTER_NETWORKS).unwrap_or_default(),
            detect_timeout: Duration::from_secs(10),
            sync_timeout: Duration::from_secs(30),
        }
    }
}

/// Parses a comma-separated list of CIDRs.
pub fn parse_networks(s: &str) -> Result<Vec<IpNet>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(model::parse_cidr)
        .collect()
}

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("serving policy gRPC")]
    Serve(#[source] tonic::transport::Error),
}

/// The running watches, the status writer and the cache. Dropping it stops them.
#[derive(Debug)]
pub struct Policies {
    index: Arc<Index>,
    destination: Arc<crate::destination::index::Index>,
    config: Arc<PolicyConfig>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Policies {
    /// Starts the watches and the status writer on `client`; Services come from
    /// destination's cache.
    pub fn spawn(
        client: kube::Client,
        destination: &crate::destination::Discovery,
        config: PolicyConfig,
    ) -> Self {
        let index = Arc::new(Index::default());
        let config = Arc::new(config);
        let tasks = vec![
            tokio::spawn(watch::run(client.clone(), index.clone())),
            tokio::spawn(status::run(client, index.clone(), config.clone())),
        ];
        Self {
            index,
            destination: destination.index().clone(),
            config,
            tasks,
        }
    }

    /// The shared cache (for readiness checks and tests).
    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    fn service(&self) -> PolicyService {
        PolicyService {
            index: self.index.clone(),
            destination: self.destination.clone(),
            config: self.config.clone(),
        }
    }

    /// The two gRPC services, ready for a tonic router.
    pub fn services(
        &self,
    ) -> (
        InboundServerPoliciesServer<PolicyService>,
        OutboundPoliciesServer<PolicyService>,
    ) {
        (
            InboundServerPoliciesServer::new(self.service()),
            OutboundPoliciesServer::new(self.service()),
        )
    }
}

impl Drop for Policies {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Serves both policy services on `listener` until `shutdown` completes (plaintext: tests).
pub async fn serve(
    listener: tokio::net::TcpListener,
    policies: &Policies,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), Error> {
    let (inbound, outbound) = policies.services();
    grpc_server()
        .add_service(inbound)
        .add_service(outbound)
        .serve_with_incoming_shutdown(crate::listen::incoming(listener), shutdown)
        .await
        .map_err(Error::Serve)
}

/// Serves both policy services over mTLS, as destination: the control plane's destination
/// identity (the policy service is part of it, as in Linkerd), clients chained to the anchors.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    policies: &Policies,
    tls: Arc<strait_tls::rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), Error> {
    let (inbound, outbound) = policies.services();
    grpc_server()
        .add_service(inbound)
        .add_service(outbound)
        .serve_with_incoming_shutdown(crate::listen::tls_incoming(listener, tls), shutdown)
        .await
        .map_err(Error::Serve)
}

/// Serves destination and both policy services on one listener (the destination port), so a
/// proxy configured with only a destination address reaches every control API there. With
/// `tls`, mTLS as [`crate::destination::serve_tls`].
pub async fn serve_with_destination(
    listener: tokio::net::TcpListener,
    destination: linkerd2_proxy_api::destination::destination_server::DestinationServer<
        crate::destination::DestinationService,
    >,
    policies: &Policies,
    tls: Option<Arc<strait_tls::rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), Error> {
    let (inbound, outbound) = policies.services();
    let router = grpc_server()
        .add_service(destination)
        .add_service(inbound)
        .add_service(outbound);
    match tls {
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(crate::listen::tls_incoming(listener, tls), shutdown)
                .await
        }
        None => {
            router
                .serve_with_incoming_shutdown(crate::listen::incoming(listener), shutdown)
                .await
        }
    }
    .map_err(Error::Serve)
}
