//! One error type for the crate, one variant per step that can fail.

use std::fmt;
use std::path::PathBuf;
use std::time::SystemTime;

/// What went wrong, and at which step. Messages say what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("generating an ECDSA P-256 key failed: {0}")]
    GenerateKey(#[source] rcgen::Error),
    #[error("signing the {what} certificate failed: {source}")]
    Sign {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("reading {path}: {source}; check that the file exists and is readable")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}: {source}; check that the directory exists and is writable")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} already exists; refusing to overwrite it (pass --force to replace it)")]
    AlreadyExists { path: PathBuf },
    #[error("{what}: malformed PEM: {source}")]
    Pem {
        what: String,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{what}: no PEM `CERTIFICATE` block found; expected a PEM-encoded X.509 certificate")]
    NoCertificate { what: String },
    #[error(
        "{what}: no usable private key found; expected a PEM `PRIVATE KEY` (PKCS#8) or `EC PRIVATE KEY` (SEC1) block"
    )]
    NoKey { what: String },
    #[error("{what}: the private key is not an ECDSA P-256 key rcgen can sign with: {source}")]
    BadKey {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("{what}: the certificate is not valid X.509: {reason}")]
    ParseCertificate { what: String, reason: String },
    #[error(
        "{what}: the certificate is not a CA (basic constraints cA is not true); use an issuer made by `strait identity` or a cert-manager Certificate with isCA: true"
    )]
    NotCa { what: String },
    #[error(
        "{what}: the private key does not belong to the certificate; check that the key and certificate files come from the same pair"
    )]
    KeyMismatch { what: String },
    #[error(
        "secret data has none of the keys {tried:?}; expected kubernetes.io/tls (tls.crt, tls.key, ca.crt) or crt.pem/key.pem/ca-bundle.crt"
    )]
    SecretMissingKey { tried: &'static [&'static str] },
    #[error(
        "the issuer certificate expired at {not_after:?}; rotate the issuer (strait identity, or cert-manager) before issuing"
    )]
    IssuerExpired { not_after: SystemTime },
    #[error(
        "the issuer does not chain to the trust anchors ({reason}); the issuer must be signed by one of the anchors given"
    )]
    IssuerNotTrusted { reason: String },
    #[error("the CSR is not valid DER or its signature does not verify: {0}")]
    CsrParse(#[source] rcgen::Error),
    #[error(
        "the CSR carries a {kind} SAN; a workload CSR must carry exactly one DNS SAN, its identity"
    )]
    CsrForbiddenSan { kind: &'static str },
    #[error(
        "the CSR carries DNS SANs {found:?}; it must carry exactly one, the requested identity {expected:?}"
    )]
    CsrSanMismatch {
        expected: String,
        found: Vec<String>,
    },
    #[error("building the rustls {side} config failed: {source}")]
    Config {
        side: &'static str,
        #[source]
        source: rustls::Error,
    },
    #[error("the trust anchors cannot verify peers: {0}")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    #[error("the trust anchors contain an unusable certificate: {0}")]
    Anchor(#[source] rustls::Error),
    #[error("{0:?} is not a DNS name that can be sent as SNI")]
    ServerName(String),
    #[error("the peer presented no certificate, so it has no identity")]
    NoPeerCertificate,
    #[error(
        "the peer's certificate names {found:?}; an identity certificate has exactly one DNS SAN that is an identity name"
    )]
    PeerIdentity { found: Vec<String> },
    #[error(
        "{what}: the certificate names {found:?}; an identity certificate has exactly one DNS SAN that is an identity name"
    )]
    CertIdentity { what: String, found: Vec<String> },
    #[error("TLS handshake failed ({kind}): {source}")]
    Handshake {
        kind: HandshakeFailure,
        #[source]
        source: std::io::Error,
    },
}

/// Why a handshake failed, reduced to the causes an operator acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The peer's certificate is for another identity than the one expected.
    WrongIdentity,
    /// The peer's certificate does not chain to our trust anchors.
    UnknownIssuer,
    /// The peer's certificate has expired.
    Expired,
    /// The peer's certificate is not valid yet (clock skew, or issued for the future).
    NotYetValid,
    /// The peer sent no certificate where one is required.
    NoCertificate,
    /// The peer does not speak TLS at all (plaintext).
    NotTls,
    /// The peer offers no protocol version we accept (we speak TLS 1.3 only).
    ProtocolVersion,
    /// The peer rejected us: it sent this alert.
    RejectedByPeer,
    /// The connection closed mid-handshake.
    Closed,
    /// Anything else.
    Other,
}

impl fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::WrongIdentity => "peer certificate is for another identity",
            Self::UnknownIssuer => "peer certificate does not chain to the trust anchors",
            Self::Expired => "peer certificate expired",
            Self::NotYetValid => "peer certificate not valid yet",
            Self::NoCertificate => "peer sent no certificate",
            Self::NotTls => "peer does not speak TLS",
            Self::ProtocolVersion => "peer does not offer TLS 1.3",
            Self::RejectedByPeer => "peer rejected the handshake",
            Self::Closed => "connection closed during the handshake",
            Self::Other => "handshake error",
        })
    }
}

impl TlsError {
    /// The handshake failure kind, if this is a handshake error.
    pub fn handshake_kind(&self) -> Option<HandshakeFailure> {
        match self {
            Self::Handshake { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// True when the caller sent a bad CSR (maps to gRPC InvalidArgument).
    pub fn is_bad_csr(&self) -> bool {
        matches!(
            self,
            Self::CsrParse(_) | Self::CsrForbiddenSan { .. } | Self::CsrSanMismatch { .. }
        )
    }

    /// A short, bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::CsrParse(_) => "csr_parse",
            Self::CsrForbiddenSan { .. } => "csr_forbidden_san",
            Self::CsrSanMismatch { .. } => "csr_san_mismatch",
            Self::IssuerExpired { .. } => "issuer_expired",
            Self::Handshake { .. } => "handshake",
            _ => "internal",
        }
    }

    /// Wraps an I/O error from a TLS handshake, classifying its cause.
    pub(crate) fn handshake(source: std::io::Error) -> Self {
        let kind = classify(&source);
        Self::Handshake { kind, source }
    }
}

fn classify(e: &std::io::Error) -> HandshakeFailure {
    use rustls::{AlertDescription as A, CertificateError as C, Error as R, PeerIncompatible as P};
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        return HandshakeFailure::Closed;
    }
    let Some(r) = e.get_ref().and_then(|i| i.downcast_ref::<R>()) else {
        return HandshakeFailure::Other;
    };
    match r {
        R::InvalidCertificate(c) => match c {
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                HandshakeFailure::WrongIdentity
            }
            C::UnknownIssuer | C::BadSignature => HandshakeFailure::UnknownIssuer,
            C::Expired | C::ExpiredContext { .. } => HandshakeFailure::Expired,
            C::NotValidYet | C::NotValidYetContext { .. } => HandshakeFailure::NotYetValid,
            _ => HandshakeFailure::Other,
        },
        R::NoCertificatesPresented => HandshakeFailure::NoCertificate,
        R::InvalidMessage(_) => HandshakeFailure::NotTls,
        R::PeerIncompatible(
            P::SupportedVersionsExtensionRequired
            | P::Tls12NotOffered
            | P::Tls12NotOfferedOrEnabled
            | P::ServerDoesNotSupportTls12Or13
            | P::ServerTlsVersionIsDisabledByOurConfig,
        ) => HandshakeFailure::ProtocolVersion,
        R::AlertReceived(A::ProtocolVersion) => HandshakeFailure::ProtocolVersion,
        R::AlertReceived(A::CertificateRequired) => HandshakeFailure::NoCertificate,
        R::AlertReceived(_) => HandshakeFailure::RejectedByPeer,
        _ => HandshakeFailure::Other,
    }
}
