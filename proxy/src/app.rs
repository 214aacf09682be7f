//! Wiring: the configuration into listeners, the shared [`Ctx`] and the admin server; the
//! proxy runs until shutdown, then drains.

use crate::admin::{self, Admin};
use crate::balance::Balancers;
use crate::connect::Connector;
use crate::ctx::{AppClients, Ctx};
use crate::discover::Resolver;
use crate::env::{Config, IdentitySource};
use crate::metrics::Metrics;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::sync::Arc;
use strait_tls::{ClientAuth, Credentials, CredentialsReceiver, TrustAnchors};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("load identity files")]
    Tls(#[from] strait_tls::TlsError),
    #[error("bind {what} {addr}")]
    Bind {
        what: &'static str,
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("destination client")]
    Resolver(#[from] crate::discover::ResolverError),
    #[error("policy service address {addr:?}")]
    Policy {
        addr: String,
        #[source]
        source: strait_identity_client::ChannelError,
    },
}

/// The policy client the configuration asks for: over mTLS with this proxy's certificate
/// when the policy service has an identity, plaintext on loopback.
fn policies(
    cfg: &Config,
    anchors: &TrustAnchors,
    creds: &CredentialsReceiver,
) -> Result<crate::policy::Policies, RunError> {
    let Some(p) = &cfg.policy else {
        return Ok(crate::policy::Policies::disabled());
    };
    let target = match &p.svc_name {
        Some(server) => strait_identity_client::Target::Tls {
            addr: p.addr.clone(),
            server: server.clone(),
            config: strait_tls::client_config(anchors, creds.clone(), &[])?,
        },
        None => strait_identity_client::Target::Plain {
            addr: p.addr.clone(),
        },
    };
    let channel = strait_identity_client::channel(target, std::time::Duration::from_secs(2))
        .map_err(|source| RunError::Policy {
            addr: p.addr.clone(),
            source,
        })?;
    let default = crate::policy::inbound::ServerPolicy::default_policy(
        cfg.inbound_default_policy,
        &cfg.cluster_networks,
        cfg.detect_timeout,
    );
    Ok(crate::policy::Policies::new(
        channel,
        p.workload.clone(),
        default,
    ))
}

/// Loads the trust anchors and, with [`IdentitySource::Files`], the leaf.
pub fn load_identity(cfg: &Config) -> Result<(TrustAnchors, Option<Credentials>), RunError> {
    let anchors = match &cfg.trust_anchors {
        crate::env::TrustAnchorsSource::File(path) => TrustAnchors::from_file(path)?,
        crate::env::TrustAnchorsSource::Pem(pem) => {
            TrustAnchors::from_pem(pem.as_bytes(), "STRAIT_PROXY_IDENTITY_TRUST_ANCHORS_PEM")?
        }
    };
    match &cfg.identity {
        IdentitySource::Files { cert, key } => {
            Ok((anchors, Some(Credentials::from_pem_files(cert, key)?)))
        }
        IdentitySource::Service(_) => Ok((anchors, None)),
    }
}

/// Binds the listeners and runs the proxy until `shutdown`, then drains for the grace period.
pub async fn run(
    cfg: Config,
    anchors: TrustAnchors,
    creds: CredentialsReceiver,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let bind = |what: &'static str, addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| RunError::Bind { what, addr, source })
    };
    let outbound = bind("outbound", cfg.outbound_listen).await?;
    let inbound = bind("inbound", cfg.inbound_listen).await?;
    let admin_l = bind("admin", cfg.admin_listen).await?;

    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let ctx = Ctx {
        connector: Connector::new(&anchors, creds.clone(), cfg.connect_timeout)?,
        // Destination over mTLS: this proxy's certificate, destination's identity checked.
        resolver: Resolver::new(
            cfg.destination_addr.as_deref(),
            match &cfg.destination_svc_name {
                Some(name) => Some((
                    name.clone(),
                    strait_tls::client_config(&anchors, creds.clone(), &[])?,
                )),
                None => None,
            },
        )?,
        tls_server: strait_tls::server_config(
            &anchors,
            creds.clone(),
            if cfg.inbound_require_identity {
                ClientAuth::Required
            } else {
                ClientAuth::Optional
            },
            &[strait_core::transport_header::ALPN],
        )?,
        metrics,
        balancers: Balancers::default(),
        policies: policies(&cfg, &anchors, &creds)?,
        app_clients: AppClients::default(),
        stop: CancellationToken::new(),
        tracker: TaskTracker::new(),
        cfg: Arc::new(cfg),
    };
    let admin = Admin::new(Arc::new(registry), move || creds.borrow().is_some());
    let admin_stop = CancellationToken::new();
    let admin_task = tokio::spawn(admin::serve(
        admin_l,
        admin,
        None,
        admin_stop.clone().cancelled_owned(),
    ));
    tracing::info!(
        outbound = %ctx.cfg.outbound_listen,
        inbound = %ctx.cfg.inbound_listen,
        admin = %ctx.cfg.admin_listen,
        "proxy listening"
    );
    let out = tokio::spawn(crate::outbound::serve(outbound, ctx.clone()));
    let inb = tokio::spawn(crate::inbound::serve(inbound, ctx.clone()));
    shutdown.await;
    tracing::info!(grace = ?ctx.cfg.shutdown_grace, "shutting down: draining connections");
    ctx.stop.cancel();
    let _ = out.await;
    let _ = inb.await;
    ctx.tracker.close();
    if tokio::time::timeout(ctx.cfg.shutdown_grace, ctx.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = ctx.tracker.len(),
            "grace period over; closing open connections"
        );
    }
    admin_stop.cancel();
    let _ = admin_task.await;
    Ok(())
}
