//! rustls configurations that speak TLS 1.3 only and verify identities, and the handshake
//! helpers that classify failures.

use crate::TlsError;
use crate::ca::TrustAnchors;
use crate::creds::{CertResolver, CredentialsReceiver};
use crate::leaf::identity_of;
use crate::provider::provider;
use crate::verify::ExactIdentity;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, CommonState, ServerConfig};
use rustls_pki_types::ServerName;
use std::sync::Arc;
use strait_core::identity::Identity;
use tokio::io::{AsyncRead, AsyncWrite};

/// The ALPN protocol of the transport header (the gateway's protocol).
pub const ALPN_TRANSPORT_HEADER: &[u8] = b"transport.l5d.io/v1";

/// Whether a server demands a client certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// A client must present a certificate chained to the anchors (the gateway, mTLS only).
    Required,
    /// A client may connect without one; a certificate it does present is still verified.
    Optional,
}

/// A TLS 1.3 server presenting the newest certificate from `creds`, verifying client
/// certificates against `anchors`.
pub fn server_config(
    anchors: &TrustAnchors,
    creds: CredentialsReceiver,
    client_auth: ClientAuth,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(anchors.root_store(), provider());
    let verifier = match client_auth {
        ClientAuth::Required => verifier,
        ClientAuth::Optional => verifier.allow_unauthenticated(),
    }
    .build()
    .map_err(TlsError::Verifier)?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| TlsError::Config {
            side: "server",
            source,
        })?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(CertResolver::new(creds)));
    // No session resumption: every handshake presents and verifies the current certificate,
    // so a rotated or expired certificate is never skipped by a resumed session.
    cfg.send_tls13_tickets = 0;
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// A TLS 1.3 client that accepts only a server certificate for the identity it connects to
/// (see [`connect`]), chained to `anchors`, and presents the newest certificate from `creds`.
pub fn client_config(
    anchors: &TrustAnchors,
    creds: CredentialsReceiver,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| TlsError::Config {
            side: "client",
            source,
        })?
        // A custom verifier makes verification stricter, never looser: see `verify::ExactIdentity`.
        .dangerous()
        .with_custom_certificate_verifier(ExactIdentity::new(anchors)?)
        .with_client_cert_resolver(Arc::new(CertResolver::new(creds)));
    // See server_config: full handshakes only.
    cfg.resumption = rustls::client::Resumption::disabled();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// Connects over `io`, sending `server` as SNI and accepting only its certificate.
pub async fn connect<IO>(
    config: Arc<ClientConfig>,
    server: &Identity,
    io: IO,
) -> Result<tokio_rustls::client::TlsStream<IO>, TlsError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let name = ServerName::try_from(server.to_string())
        .map_err(|_| TlsError::ServerName(server.to_string()))?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, io)
        .await
        .map_err(TlsError::handshake)
}

/// Accepts a TLS connection over `io`.
pub async fn accept<IO>(
    config: Arc<ServerConfig>,
    io: IO,
) -> Result<tokio_rustls::server::TlsStream<IO>, TlsError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    tokio_rustls::TlsAcceptor::from(config)
        .accept(io)
        .await
        .map_err(TlsError::handshake)
}

/// The identity of the peer of a completed handshake: the only DNS SAN of its certificate.
pub fn peer_identity(conn: &CommonState) -> Result<Identity, TlsError> {
    let certs = conn
        .peer_certificates()
        .filter(|c| !c.is_empty())
        .ok_or(TlsError::NoPeerCertificate)?;
    identity_of(&certs[0])
}
