//! The gateway probe: an HTTPS GET of `probeSpec.path` over TLS 1.3 that succeeds only if the
//! gateway proves the identity the Link names.
//!
//! The verifier is strait-tls's ([`client_config`]): the server's chain must end at one of the
//! trust anchors and its certificate must name exactly one DNS SAN, `gatewayIdentity`, which is
//! also the SNI. The probe presents no certificate, and resumes no session.

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strait_tls::rustls;

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("connecting to {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS handshake with {addr} (expecting identity {identity})")]
    Handshake {
        addr: SocketAddr,
        identity: String,
        #[source]
        source: strait_tls::TlsError,
    },
    #[error("HTTP exchange with {addr}")]
    Http {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    #[error("building the probe request")]
    Request(#[source] http::Error),
    #[error("{addr} answered {status}")]
    Status {
        addr: SocketAddr,
        status: http::StatusCode,
    },
    #[error("the probe took longer than {0:?}")]
    Timeout(Duration),
    #[error("gateway identity {0:?} is not an identity name")]
    Identity(String),
}

/// A TLS 1.3 client config that presents no certificate and accepts only a server
/// certificate chained to `anchors_pem` that names exactly the SNI name (the gateway
/// identity) ([`strait_tls::anonymous_client_config`]).
pub fn client_config(
    anchors_pem: &[u8],
) -> Result<Arc<rustls::ClientConfig>, strait_tls::TlsError> {
    let anchors = strait_tls::TrustAnchors::from_pem(anchors_pem, "the trust anchors")?;
    strait_tls::anonymous_client_config(&anchors, &[])
}

/// Probes `https://<addr>:<port><path>` presenting SNI `identity`; returns the latency.
pub async fn probe(
    tls: Arc<rustls::ClientConfig>,
    addr: IpAddr,
    port: u16,
    path: &str,
    identity: &str,
    timeout: Duration,
) -> Result<Duration, ProbeError> {
    let start = Instant::now();
    tokio::time::timeout(
        timeout,
        probe_inner(tls, SocketAddr::new(addr, port), path, identity),
    )
    .await
    .map_err(|_| ProbeError::Timeout(timeout))??;
    Ok(start.elapsed())
}

async fn probe_inner(
    tls: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    path: &str,
    identity: &str,
) -> Result<(), ProbeError> {
    let expected: strait_core::Identity = identity
        .parse()
        .map_err(|_| ProbeError::Identity(identity.to_string()))?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| ProbeError::Connect { addr, source })?;
    let stream = strait_tls::connect(tls, &expected, tcp)
        .await
        .map_err(|source| ProbeError::Handshake {
            addr,
            identity: identity.to_string(),
            source,
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|source| ProbeError::Http { addr, source })?;
    let conn = tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, identity)
        .body(Empty::<Bytes>::new())
        .map_err(ProbeError::Request)?;
    let rsp = sender
        .send_request(req)
        .await
        .map_err(|source| ProbeError::Http { addr, source })?;
    conn.abort();
    if !rsp.status().is_success() {
        return Err(ProbeError::Status {
            addr,
            status: rsp.status(),
        });
    }
    Ok(())
}
