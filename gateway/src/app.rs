//! Wiring: files and addresses from [`Args`] into a running gateway and admin server.

use crate::admin::Admin;
use crate::authz::{self, Policy};
use crate::config::Args;
use crate::connect::{Connector, TcpDial};
use crate::listener::{Gateway, GatewayConfig};
use crate::metrics::Metrics;
use crate::resolve::DestinationResolver;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use strait_core::identity::Identity;
use strait_core::transport_header::ALPN;
use strait_tls::rustls::pki_types::pem::PemObject;
use strait_tls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use strait_tls::rustls::{ClientConfig, ServerConfig};
use strait_tls::{ClientAuth, Credentials, CredentialsReceiver, TlsError, TrustAnchors};
use tokio_util::sync::CancellationToken;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("loading TLS material: {0}")]
    Tls(#[from] TlsError),
    #[error("reading {path}: {source}")]
    Pem {
        path: PathBuf,
        #[source]
        source: strait_tls::rustls::pki_types::pem::Error,
    },
    #[error("{path}: the certificate names {found:?}, not the gateway identity {expected}")]
    WrongIdentity {
        path: PathBuf,
        expected: Box<Identity>,
        found: Vec<String>,
    },
    #[error("loading the allow-list: {0}")]
    Authz(#[from] authz::AuthzError),
    #[error("the destination URL {url:?} is invalid: {source}")]
    Destination {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
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
    fn pem(path: &Path) -> impl Fn(strait_tls::rustls::pki_types::pem::Error) -> StartError + '_ {
        move |source| StartError::Pem {
            path: path.to_owned(),
            source,
        }
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(pem(cert))?
        .collect::<Result<_, _>>()
        .map_err(pem(cert))?;
    let leaf = chain.first().ok_or_else(|| TlsError::NoCertificate {
        what: cert.display().to_string(),
    })?;
    let names = strait_tls::dns_names(leaf)?;
    if names != [identity.to_string()] {
        return Err(StartError::WrongIdentity {
            path: cert.to_owned(),
            expected: Box::new(identity.clone()),
            found: names,
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(pem(key))?;
    Ok(Credentials::new(identity.clone(), chain, key)?)
}

/// The gateway's TLS configs: the 4143 server (client certificates required, ALPN
/// `transport.l5d.io/v1`), the client towards meshed targets (same ALPN) and the admin
/// server (client certificates optional, no ALPN).
pub fn tls_configs(
    anchors: &TrustAnchors,
    creds: CredentialsReceiver,
) -> Result<TlsConfigs, TlsError> {
    Ok(TlsConfigs {
        server: strait_tls::server_config(anchors, creds.clone(), ClientAuth::Required, &[ALPN])?,
        client: strait_tls::client_config(anchors, creds.clone(), &[ALPN])?,
        admin: strait_tls::server_config(anchors, creds, ClientAuth::Optional, &[b"http/1.1"])?,
    })
}

/// See [`tls_configs`].
#[derive(Clone, Debug)]
pub struct TlsConfigs {
    /// The 4143 listener.
    pub server: Arc<ServerConfig>,
    /// Towards meshed targets.
    pub client: Arc<ClientConfig>,
    /// The admin listener.
    pub admin: Arc<ServerConfig>,
}

/// Runs the gateway until `shutdown` fires, then drains (bounded by `args.drain_timeout`).
pub async fn run(args: Args, shutdown: CancellationToken) -> Result<(), StartError> {
    let identity = args.identity();
    let anchors = TrustAnchors::from_file(&args.trust_anchors)?;
    let creds = load_credentials(&args.cert, &args.key, &identity)?;
    let (creds_tx, creds_rx) = strait_tls::credentials_channel(Some(creds));
    let TlsConfigs {
        server: server_tls,
        client: client_tls,
        admin: admin_tls,
    } = tls_configs(&anchors, creds_rx)?;

    let background = CancellationToken::new();
    let policy = match &args.allow_list {
        Some(path) => authz::watch_file(path.clone(), args.reload_period, background.clone())?,
        None => authz::fixed(Policy::AllowAll),
    };
    spawn_credentials_reload(&args, identity.clone(), creds_tx, background.clone());

    let channel = tonic::transport::Endpoint::from_shared(args.destination.clone())
        .map_err(|source| StartError::Destination {
            url: args.destination.clone(),
            source,
        })?
        .connect_timeout(args.resolve_timeout)
        .connect_lazy();
    let resolver = Arc::new(DestinationResolver::new(channel, args.resolve_timeout));
    let connector = Connector::new(Arc::new(TcpDial), client_tls, args.connect_timeout);

    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry);
    let gateway = Gateway::new(
        GatewayConfig {
            identity: identity.clone(),
            cluster_domain: args.cluster_domain.clone(),
            forbid_plaintext: args.forbid_plaintext,
            handshake_timeout: args.handshake_timeout,
            header_timeout: args.header_timeout,
        },
        server_tls,
        policy,
        resolver,
        connector,
        metrics,
    );

    let bind = |addr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })
    };
    let listener = bind(args.listen_addr).await?;
    let admin_listener = bind(args.admin_addr).await?;
    tracing::info!(listen = %args.listen_addr, admin = %args.admin_addr, %identity, "gateway started");

    let admin = Admin::new(Arc::new(registry), shutdown.clone());
    let admin_task = tokio::spawn(admin.serve(admin_listener, Some(admin_tls), background.clone()));
    gateway.serve(listener, shutdown, args.drain_timeout).await;
    background.cancel();
    let _ = admin_task.await;
    tracing::info!("gateway stopped");
    Ok(())
}

/// Polls the certificate and key files; a new good pair is used by the next handshake.
fn spawn_credentials_reload(
    args: &Args,
    identity: Identity,
    tx: strait_tls::CredentialsSender,
    stop: CancellationToken,
) {
    let (cert, key, period) = (args.cert.clone(), args.key.clone(), args.reload_period);
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
