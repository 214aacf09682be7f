//! The gateway probe: an HTTPS GET of `probeSpec.path` over TLS 1.3 that succeeds only if the
//! gateway proves the identity the Link names.
//!
//! The verifier is built by [`client_config`]: the server's chain must end at one of the trust
//! anchors and its certificate must carry the DNS SAN `gatewayIdentity`, which is also the SNI.
//! It is the one function to swap for `strait-tls` once that crate lands.

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
        source: std::io::Error,
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
    #[error("gateway identity {0:?} is not a DNS name")]
    Identity(String),
}

/// Why the trust anchors cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AnchorsError {
    #[error("parsing the trust anchors PEM")]
    Pem(#[source] rustls::pki_types::pem::Error),
    #[error("the trust anchors PEM holds no certificate")]
    Empty,
    #[error("adding a trust anchor")]
    Add(#[source] rustls::Error),
    #[error("building the certificate verifier")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
}

/// A rustls client config that speaks only TLS 1.3 and verifies the server's certificate chains
/// to `anchors_pem` and is valid for the SNI name (the gateway identity).
pub fn client_config(anchors_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, AnchorsError> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_slice_iter(anchors_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(AnchorsError::Pem)?;
    if certs.is_empty() {
        return Err(AnchorsError::Empty);
    }
    for c in certs {
        roots.add(c).map_err(AnchorsError::Add)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(AnchorsError::Verifier)?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(AnchorsError::Add)?
        .with_webpki_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
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
    let name = ServerName::try_from(identity.to_string())
        .map_err(|_| ProbeError::Identity(identity.to_string()))?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| ProbeError::Connect { addr, source })?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
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
