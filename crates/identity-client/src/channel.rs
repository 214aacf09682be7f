//! gRPC channels to the control plane: TLS that accepts only the expected identity chained to
//! the trust anchors, or plaintext (allowed by the configuration only on loopback, for tests).

use std::sync::Arc;
use std::time::Duration;
use strait_core::identity::Identity;
use strait_tls::rustls::ClientConfig;
use tonic::transport::{Channel, Endpoint};

/// How to reach one control-plane service.
#[derive(Clone, Debug)]
pub enum Target {
    /// TLS to a server that must present `server`'s certificate.
    Tls {
        addr: String,
        server: Identity,
        config: Arc<ClientConfig>,
    },
    /// Plaintext (loopback only; the caller's configuration enforces it).
    Plain { addr: String },
}

/// A channel could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("{addr:?} is not a host:port: {source}")]
    Addr {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// A lazily connecting channel to `target`; every (re)connection does a full handshake.
pub fn channel(target: Target, connect_timeout: Duration) -> Result<Channel, ChannelError> {
    let addr = match &target {
        Target::Tls { addr, .. } | Target::Plain { addr } => addr.clone(),
    };
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|source| ChannelError::Addr {
            addr: addr.clone(),
            source,
        })?
        .connect_timeout(connect_timeout);
    let Target::Tls { server, config, .. } = target else {
        return Ok(endpoint.connect_lazy());
    };
    let connector = tower::service_fn(move |_uri: tonic::transport::Uri| {
        let (addr, server, config) = (addr.clone(), server.clone(), config.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect(&addr).await?;
            let _ = tcp.set_nodelay(true);
            let tls = strait_tls::connect(config, &server, tcp)
                .await
                .map_err(|e| ConnectError { server, source: e })?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    Ok(endpoint.connect_with_connector_lazy(connector))
}

/// The TLS handshake with a control-plane service failed: it did not prove `server`.
#[derive(Debug, thiserror::Error)]
#[error("TLS to the control plane (expected identity {server}): {source}")]
pub struct ConnectError {
    server: Identity,
    #[source]
    source: strait_tls::TlsError,
}
