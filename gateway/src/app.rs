//! Wiring: files and addresses from [`Args`] into a running gateway and the proxy's admin
//! server.

use crate::authz::{self, Policy};
use crate::config::{Args, IdentitySource};
use crate::listener::{Gateway, GatewayConfig};
use crate::metrics::Metrics;
use prometheus_client::registry::Registry;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use strait_core::identity::Identity;
use strait_core::transport_header::ALPN;
use strait_proxy::admin::{self, Admin};
use strait_proxy::connect::Connector;
use strait_proxy::discover::Resolver;
use strait_tls::rustls::ServerConfig;
use strait_tls::{ClientAuth, Credentials, CredentialsReceiver, TlsError, TrustAnchors};
use tokio_util::sync::CancellationToken;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("loading TLS material: {0}")]
    Tls(#[from] TlsError),
    #[error("{path}: the certificate names {found}, not the gateway identity {expected}")]
    WrongIdentity {
        path: PathBuf,
        expected: Box<Identity>,
        found: Box<Identity>,
    },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("certifying with the identity service: {0}")]
    Certify(#[from] strait_proxy::certify::CertifySetupError),
    #[error("loading the allow-list: {0}")]
    Authz(#[from] authz::AuthzError),
    #[error("the destination URL {url:?} is invalid: {source}")]
    Destination {
        url: String,
        #[source]
        source: strait_identity_client::ChannelError,
    },
    #[error(
        "--destination-identity (STRAIT_PROXY_DESTINATION_SVC_NAME) is required: the destination \
         URL {url:?} is not on loopback, so destination must prove its identity over mTLS"
    )]
    DestinationIdentity { url: String },
    #[error("binding {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Loads the identity certificate and key, checking the certificate names `identity`.
pub fn load_credentials(
    cert: &Path,
    key: &Path,
    identity: &Identity,
) -> Result<Credentials, StartError> {
    let creds = Credentials::from_pem_files(cert, key)?;
    if creds.identity() != identity {
        return Err(StartError::WrongIdentity {
            path: cert.to_owned(),
            expected: Box::new(identity.clone()),
            found: Box::new(creds.identity().clone()),
        });
    }
    Ok(creds)
}

/// The gateway's TLS server configs: the 4143 listener (client certificates required, ALPN
/// `transport.l5d.io/v1`) and the admin server (client certificates optional). Towards
/// targets the gateway uses the proxy's [`Connector`].
pub fn tls_configs(
    anchors: &TrustAnchors,
    creds: CredentialsReceiver,
) -> Result<TlsConfigs, TlsError> {
    Ok(TlsConfigs {
        server: strait_tls::server_config(anchors, creds.clone(), ClientAuth::Required, &[ALPN])?,
        admin: strait_tls::server_config(anchors, creds, ClientAuth::Optional, &[b"http/1.1"])?,
    })
}

/// See [`tls_configs`].
#[derive(Clone, Debug)]
pub struct TlsConfigs {
    /// The 4143 listener.
    pub server: Arc<ServerConfig>,
    /// The admin listener.
    pub admin: Arc<ServerConfig>,
}

/// The proxy's admin server with the gateway's readiness: ready once it holds a certificate
/// and until `shutdown` fires, so probes see 503 before the first certificate and while
/// connections drain.
pub fn admin(
    registry: Arc<Registry>,
    creds: CredentialsReceiver,
    shutdown: CancellationToken,
) -> Admin {
    Admin::new(registry, move || {
        !shutdown.is_cancelled() && creds.borrow().is_some()
    })
}

/// Runs the gateway until `shutdown` fires, then drains (bounded by `args.drain_timeout`).
pub async fn run(args: Args, shutdown: CancellationToken) -> Result<(), StartError> {
    let identity = args.identity();
    let source = args.identity_source()?;
    let anchors = TrustAnchors::from_file(&args.trust_anchors)?;
    let background = CancellationToken::new();
    let creds_rx = match &source {
        IdentitySource::Files { cert, key } => {
            let creds = load_credentials(cert, key, &identity)?;
            let (tx, rx) = strait_tls::credentials_channel(Some(creds));
            spawn_credentials_reload(
                cert,
                key,
                args.reload_period,
                identity.clone(),
                tx,
                background.clone(),
            );
            rx
        }
        IdentitySource::Service(svc) => {
            let (tx, rx) = strait_tls::credentials_channel(None);
            let task = strait_proxy::certify::spawn(svc, &anchors, tx)?;
            let stop = background.clone();
            tokio::spawn(async move {
                stop.cancelled().await;
                task.abort();
            });
            rx
        }
    };
    let TlsConfigs {
        server: server_tls,
        admin: admin_tls,
    } = tls_configs(&anchors, creds_rx.clone())?;

    let policy = match &args.allow_list {
        Some(path) => {
            tracing::warn!(
                path = %path.display(),
                "STRAIT_GATEWAY_ALLOW_LIST is deprecated and goes in the next release: write a \
                 Server for the gateway's port and an AuthorizationPolicy with a \
                 MeshTLSAuthentication (README, Policy)"
            );
            authz::watch_file(path.clone(), args.reload_period, background.clone())?
        }
        None => authz::fixed(Policy::AllowAll),
    };

    let channel = destination_channel(&args, &anchors, creds_rx.clone())?;
    let policies = match &args.policy_workload {
        Some(workload) => strait_proxy::policy::Policies::new(
            channel.clone(),
            workload.clone(),
            // Until the policy service answers: everyone under the trust anchor, as the
            // handshake already requires.
            strait_proxy::policy::inbound::ServerPolicy::default_policy(
                strait_proxy::policy::inbound::DefaultPolicy::AllAuthenticated,
                &[],
                args.header_timeout,
            ),
        ),
        None => strait_proxy::policy::Policies::disabled(),
    };
    let resolver = Resolver::with_channel(channel);
    let connector = Connector::new(&anchors, creds_rx.clone(), args.connect_timeout)?;

    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let authz_metrics = strait_proxy::metrics::AuthzMetrics::default();
    authz_metrics.register(&mut registry);
    let gateway = Gateway::new(
        GatewayConfig {
            identity: identity.clone(),
            cluster_domain: args.cluster_domain.clone(),
            forbid_plaintext: args.forbid_plaintext,
            handshake_timeout: args.handshake_timeout,
            header_timeout: args.header_timeout,
            resolve_timeout: args.resolve_timeout,
        },
        server_tls,
        policy,
        resolver,
        connector,
        metrics,
    )
    .with_policies(policies, authz_metrics, args.listen_addr.port());

    let bind = |addr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })
    };
    let listener = bind(args.listen_addr).await?;
    let admin_listener = bind(args.admin_addr).await?;
    tracing::info!(listen = %args.listen_addr, admin = %args.admin_addr, %identity, "gateway started");

    let admin = admin(Arc::new(registry), creds_rx.clone(), shutdown.clone());
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        admin,
        Some(admin_tls),
        background.clone().cancelled_owned(),
    ));
    gateway.serve(listener, shutdown, args.drain_timeout).await;
    background.cancel();
    let _ = admin_task.await;
    tracing::info!("gateway stopped");
    Ok(())
}

/// Polls the certificate and key files; a new good pair is used by the next handshake.
fn spawn_credentials_reload(
    cert: &Path,
    key: &Path,
    period: Duration,
    identity: Identity,
    tx: strait_tls::CredentialsSender,
    stop: CancellationToken,
) {
    let (cert, key) = (cert.to_owned(), key.to_owned());
    let stamp =
        move |p: &Path| -> Option<SystemTime> { std::fs::metadata(p).ok()?.modified().ok() };
    tokio::spawn(async move {
        let mut last = (stamp(&cert), stamp(&key));
        let mut tick = tokio::time::interval(period.max(Duration::from_millis(100)));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = (stamp(&cert), stamp(&key));
            if now == last {
                continue;
            }
            last = now;
            match load_credentials(&cert, &key, &identity) {
                Ok(c) => {
                    tracing::info!(not_after = ?c.not_after(), "gateway certificate reloaded");
                    tx.send_replace(Some(Arc::new(c)));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "gateway certificate not reloaded; keeping the previous one")
                }
            }
        }
    });
}

/// The channel to destination: mTLS with the gateway's certificate, accepting only
/// `--destination-identity`; plaintext only when the URL is on loopback.
pub fn destination_channel(
    args: &Args,
    anchors: &TrustAnchors,
    creds: strait_tls::CredentialsReceiver,
) -> Result<tonic::transport::Channel, StartError> {
    let url = &args.destination;
    let addr = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url)
        .trim_end_matches('/')
        .to_owned();
    let target = match &args.destination_identity {
        Some(server) => strait_identity_client::Target::Tls {
            addr,
            server: server.clone(),
            config: strait_tls::client_config(anchors, creds, &[])?,
        },
        None if strait_proxy::env::is_loopback(&addr) => {
            strait_identity_client::Target::Plain { addr }
        }
        None => return Err(StartError::DestinationIdentity { url: url.clone() }),
    };
    strait_identity_client::channel(target, args.resolve_timeout).map_err(|source| {
        StartError::Destination {
            url: url.clone(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http::{Request, StatusCode};

    #[test]
    fn ready_turns_unavailable_on_shutdown() {
        let stop = CancellationToken::new();
        let (tx, rx) = strait_tls::credentials_channel(None);
        let admin = admin(Arc::new(Registry::default()), rx, stop.clone());
        let get = |p: &str| admin.handle(&Request::get(p).body(()).unwrap()).status();
        // Not ready before the first certificate: clients could not complete a handshake.
        assert_eq!(get("/ready"), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(get("/live"), StatusCode::OK);
        let pki = strait_tls::testing::TestPki::new();
        tx.send_replace(Some(Arc::new(pki.leaf(&crate::config::default_identity()))));
        assert_eq!(get("/live"), StatusCode::OK);
        assert_eq!(get("/ready"), StatusCode::OK);
        assert_eq!(get("/metrics"), StatusCode::OK);
        assert_eq!(get("/nope"), StatusCode::NOT_FOUND);
        stop.cancel();
        assert_eq!(get("/ready"), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(get("/live"), StatusCode::OK);
    }
}
