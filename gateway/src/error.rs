//! Why the gateway refused or dropped a connection: one variant per step that can fail, each
//! with a bounded [`Refusal::metric_label`].

use strait_core::identity::Identity;
use strait_core::transport_header::DecodeError;
use strait_tls::{HandshakeFailure, TlsError};

/// Why a connection was refused (closed before any byte reached a target).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("the client presented no certificate; the gateway accepts mTLS only")]
    NoClientCertificate,
    #[error("the client's certificate does not chain to the shared trust anchor")]
    UnknownTrustAnchor,
    #[error("TLS handshake failed: {0}")]
    Handshake(#[source] Box<TlsError>),
    #[error("the TLS handshake timed out")]
    HandshakeTimeout,
    #[error("the client did not negotiate ALPN transport.l5d.io/v1")]
    NoAlpn,
    #[error("the client's certificate carries no usable identity: {0}")]
    NoIdentity(#[source] Box<TlsError>),
    #[error("the client {0} is this gateway itself: refusing a loop")]
    Loop(Box<Identity>),
    #[error("the client {0} is not in the gateway's allow-list")]
    Unauthorized(Box<Identity>),
    #[error("reading the transport header: {0}")]
    Header(#[source] HeaderError),
    #[error("the transport header names {0:?}, which is not a Service under svc.{1}")]
    NameOutsideDomain(String, String),
    #[error("resolving {target}: {source}")]
    Resolve {
        target: String,
        #[source]
        source: Box<ResolveError>,
    },
    #[error("{0} has no TLS identity and plaintext forwarding is forbidden")]
    PlaintextForbidden(String),
    #[error("connecting to {target}: {source}")]
    Connect {
        target: String,
        #[source]
        source: Box<ConnectError>,
    },
}

impl Refusal {
    /// A short, bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::NoClientCertificate => "no_client_certificate",
            Self::UnknownTrustAnchor => "unknown_trust_anchor",
            Self::Handshake(_) => "tls_handshake",
            Self::HandshakeTimeout => "tls_handshake_timeout",
            Self::NoAlpn => "no_alpn",
            Self::NoIdentity(_) => "no_identity",
            Self::Loop(_) => "loop",
            Self::Unauthorized(_) => "unauthorized",
            Self::Header(HeaderError::Decode(DecodeError::TooLong(_))) => "header_too_long",
            Self::Header(HeaderError::Decode(DecodeError::InvalidPort(_))) => "invalid_port",
            Self::Header(HeaderError::Timeout) => "header_timeout",
            Self::Header(_) => "header_malformed",
            Self::NameOutsideDomain(..) => "name_outside_domain",
            Self::Resolve { source, .. } if matches!(**source, ResolveError::NoEndpoints) => {
                "no_endpoints"
            }
            Self::Resolve { source, .. } if matches!(**source, ResolveError::Unknown(_)) => {
                "unknown_target"
            }
            Self::Resolve { .. } => "resolve_failed",
            Self::PlaintextForbidden(_) => "plaintext_forbidden",
            Self::Connect { .. } => "connect_failed",
        }
    }

    /// Classifies a failed server handshake.
    pub fn from_handshake(e: TlsError) -> Self {
        match e.handshake_kind() {
            Some(HandshakeFailure::NoCertificate) => Self::NoClientCertificate,
            Some(HandshakeFailure::UnknownIssuer) => Self::UnknownTrustAnchor,
            _ => Self::Handshake(Box::new(e)),
        }
    }
}

/// Why no transport header could be read.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error(transparent)]
    Decode(DecodeError),
    #[error("the connection closed after {0} bytes, before the header was complete")]
    Eof(usize),
    #[error("the header did not arrive in time")]
    Timeout,
    #[error("reading: {0}")]
    Io(#[source] std::io::Error),
}

/// Why a target could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("the destination service has no ready endpoints for it")]
    NoEndpoints,
    #[error("the destination service knows no such Service: {0}")]
    Unknown(#[source] tonic::Status),
    #[error("the destination service answered {0}")]
    Status(#[source] tonic::Status),
    #[error("the destination stream ended without an answer")]
    StreamEnded,
    #[error("the destination service did not answer in time")]
    Timeout,
    #[error("the destination service names endpoint identity {0:?}, which is not an identity")]
    BadIdentity(String),
}

/// Why a connection to an endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("TCP connect to {addr}: {source}")]
    Tcp {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TCP connect to {0} timed out")]
    Timeout(std::net::SocketAddr),
    #[error("mTLS to {addr}: {source}")]
    Tls {
        addr: std::net::SocketAddr,
        #[source]
        source: TlsError,
    },
    #[error("sending the transport header: {0}")]
    Header(#[source] std::io::Error),
}
