//! Why the gateway refused or dropped a connection: one variant per step that can fail, each
//! with a bounded [`Refusal::metric_label`] of its own.

use strait_core::identity::Identity;
use strait_core::transport_header::DecodeError;
use strait_proxy::HeaderError;
use strait_proxy::connect::ConnectError;
use strait_tls::{HandshakeFailure, TlsError};

/// Why a connection was refused (closed before any byte reached a target).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("the client presented no certificate; the gateway accepts mTLS only")]
    NoClientCertificate,
    #[error("the client's certificate does not chain to the shared trust anchor")]
    UnknownTrustAnchor,
    #[error("the client offers no TLS 1.3; the gateway speaks TLS 1.3 only")]
    ProtocolVersion,
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
    #[error("{0}: the destination service has no ready endpoints for it")]
    NoEndpoints(String),
    #[error("{0}: the destination service knows no such Service")]
    UnknownTarget(String),
    #[error("{0}: the destination service could not be reached or did not answer in time")]
    ResolveFailed(String),
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
            Self::ProtocolVersion => "tls_protocol_version",
            Self::Handshake(e) => match e.handshake_kind() {
                Some(HandshakeFailure::NotTls) => "not_tls",
                Some(HandshakeFailure::Expired) => "client_certificate_expired",
                Some(HandshakeFailure::NotYetValid) => "client_certificate_not_yet_valid",
                Some(HandshakeFailure::RejectedByPeer) => "tls_rejected_by_client",
                Some(HandshakeFailure::Closed) => "tls_closed",
                _ => "tls_handshake",
            },
            Self::HandshakeTimeout => "tls_handshake_timeout",
            Self::NoAlpn => "no_alpn",
            Self::NoIdentity(_) => "no_identity",
            Self::Loop(_) => "loop",
            Self::Unauthorized(_) => "unauthorized",
            Self::Header(e) if e.is_too_long() => "header_too_long",
            Self::Header(HeaderError::Decode(DecodeError::InvalidPort(_))) => "invalid_port",
            Self::Header(HeaderError::Timeout) => "header_timeout",
            Self::Header(_) => "header_malformed",
            Self::NameOutsideDomain(..) => "name_outside_domain",
            Self::NoEndpoints(_) => "no_endpoints",
            Self::UnknownTarget(_) => "unknown_target",
            Self::ResolveFailed(_) => "resolve_failed",
            Self::PlaintextForbidden(_) => "plaintext_forbidden",
            Self::Connect { .. } => "connect_failed",
        }
    }

    /// Classifies a failed server handshake (see [`strait_tls::HandshakeFailure`]).
    pub fn from_handshake(e: TlsError) -> Self {
        match e.handshake_kind() {
            Some(HandshakeFailure::NoCertificate) => Self::NoClientCertificate,
            Some(HandshakeFailure::UnknownIssuer) => Self::UnknownTrustAnchor,
            Some(HandshakeFailure::ProtocolVersion) => Self::ProtocolVersion,
            _ => Self::Handshake(Box::new(e)),
        }
    }
}
