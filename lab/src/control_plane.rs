//! A cluster's control plane, run in this process the way the real one runs: a fresh issuer
//! under the lab's anchor, the identity service (TLS) and the destination service (mTLS) with
//! their own certificates, on all addresses so pods reach them at the cluster's host address.

use crate::{Error, Lab, WAIT, identity, io};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;
use strait_control_plane::destination::{self, DestinationConfig, Discovery};
use strait_control_plane::identity::{self as id_svc, IdentityService, IdentitySettings};
use strait_control_plane::own_cert;
use strait_core::identity::Identity;
use strait_localcluster::Cluster;
use strait_tls::Issuer;

impl Lab {
    /// Starts `cluster`'s control plane in this process: a fresh issuer under the shared anchor,
    /// the identity service and the destination service, both on all addresses so pods reach
    /// them at the cluster's host address.
    pub async fn control_plane(&self, cluster: &Cluster) -> Result<ControlPlane, Error> {
        let issuer = self.anchor.generate_issuer(
            &format!(
                "identity.{}.{}",
                strait_core::identity::DEFAULT_CONTROL_NAMESPACE,
                strait_core::identity::DEFAULT_TRUST_DOMAIN
            ),
            strait_tls::DEFAULT_ISSUER_LIFETIME,
            SystemTime::now(),
        )?;
        let issuer = Arc::new(issuer);
        let host = cluster.host_addr();
        // The control plane's own certificates, as the real one issues them at start: pods
        // reach it at the host address, so it speaks TLS (identity) and mTLS (destination).
        let (issuer_tx, issuer_rx) = tokio::sync::watch::channel(issuer.clone());
        let anchors = self.anchors()?;
        let ns = strait_core::identity::DEFAULT_CONTROL_NAMESPACE;
        let identity_name = identity(own_cert::IDENTITY_SERVICE_ACCOUNT, ns)?;
        let destination_name = identity(own_cert::DESTINATION_SERVICE_ACCOUNT, ns)?;
        let lifetime = strait_tls::DEFAULT_LEAF_LIFETIME;
        let id_tls = own_cert::identity_server_config(
            &anchors,
            own_cert::keep_issued(issuer_rx.clone(), identity_name.clone(), lifetime)?,
        )?;
        let dst_tls = own_cert::destination_server_config(
            &anchors,
            own_cert::keep_issued(issuer_rx.clone(), destination_name.clone(), lifetime)?,
        )?;

        let discovery = Discovery::spawn(cluster.client());
        let mut registry = prometheus_registry();
        let metrics = destination::Metrics::register(&mut registry);
        let config = DestinationConfig {
            cluster_domain: cluster.cluster_domain().to_owned(),
            ..DestinationConfig::default()
        };
        let svc = discovery.service(config, metrics);
        let dst_listener = bind_any().await?;
        let destination_addr = SocketAddr::new(host.into(), local_port(&dst_listener)?);
        let dst_task = tokio::spawn(async move {
            if let Err(e) =
                destination::serve_tls(dst_listener, svc, dst_tls, std::future::pending()).await
            {
                tracing::error!(error = %e, "destination service stopped");
            }
        });

        let id = IdentityService::new(
            IdentitySettings {
                trust_domain: strait_core::identity::DEFAULT_TRUST_DOMAIN.into(),
                control_namespace: strait_core::identity::DEFAULT_CONTROL_NAMESPACE.into(),
                lifetime: strait_tls::DEFAULT_LEAF_LIFETIME,
            },
            issuer_rx,
            Arc::new(id_svc::KubeTokenReviewer::new(cluster.client())),
            id_svc::Metrics::new(),
        );
        let id_listener = bind_any().await?;
        let identity_addr = SocketAddr::new(host.into(), local_port(&id_listener)?);
        let id_task = tokio::spawn(async move {
            if let Err(e) = id_svc::serve_tls(id_listener, id, id_tls, std::future::pending()).await
            {
                tracing::error!(error = %e, "identity service stopped");
            }
        });
        tokio::time::timeout(WAIT, discovery.synced())
            .await
            .map_err(|_| Error::NotReady {
                what: format!("{}'s destination caches", cluster.name()),
                after: WAIT,
                logs: String::new(),
            })?;
        Ok(ControlPlane {
            cluster: cluster.name().to_owned(),
            destination: destination_addr,
            identity: identity_addr,
            identity_name,
            destination_name,
            issuer,
            _issuer: issuer_tx,
            _discovery: discovery,
            tasks: vec![dst_task, id_task],
        })
    }
}

/// A cluster's control plane, running in this process; stops when dropped.
#[derive(Debug)]
pub struct ControlPlane {
    pub(crate) cluster: String,
    /// Where pods reach the destination service.
    pub destination: SocketAddr,
    /// Where pods reach the identity service.
    pub identity: SocketAddr,
    /// The identity the identity service presents (TLS).
    pub identity_name: Identity,
    /// The identity the destination service presents (mTLS).
    pub destination_name: Identity,
    pub(crate) issuer: Arc<Issuer>,
    /// Keeps the issuer channel open (the own certificates' renewal watches it).
    _issuer: tokio::sync::watch::Sender<Arc<Issuer>>,
    _discovery: Discovery,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn prometheus_registry() -> prometheus_client::registry::Registry {
    prometheus_client::registry::Registry::default()
}

async fn bind_any() -> Result<tokio::net::TcpListener, Error> {
    tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .map_err(io("binding a control-plane listener"))
}

fn local_port(l: &tokio::net::TcpListener) -> Result<u16, Error> {
    Ok(l.local_addr().map_err(io("a listener's address"))?.port())
}
