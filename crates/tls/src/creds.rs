//! The current certificate, behind a watch channel, and the rustls resolvers that read it.
//!
//! ```text
//!  identity client ──send(Credentials)──► watch ──borrow()──► CertResolver ──► next handshake
//! ```
//!
//! A handshake takes the newest certificate when it starts; a connection already open keeps
//! the keys it negotiated, so rotation never drops one.

use crate::TlsError;
use crate::leaf::cert_validity;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;
use strait_core::identity::Identity;
use tokio::sync::watch;

/// A certificate chain and its key, ready for rustls.
#[derive(Debug)]
pub struct Credentials {
    identity: Identity,
    certified: Arc<CertifiedKey>,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl Credentials {
    /// Checks that `key` belongs to the first certificate of `chain` and prepares both.
    pub fn new(
        identity: Identity,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsError> {
        let what = format!("credentials for {identity}");
        let first = chain
            .first()
            .ok_or_else(|| TlsError::NoCertificate { what: what.clone() })?;
        let (not_before, not_after) = cert_validity(first)?;
        let signing = crate::provider::provider()
            .key_provider
            .load_private_key(key)
            .map_err(|_| TlsError::NoKey { what: what.clone() })?;
        let certified = CertifiedKey::new(chain, signing);
        certified
            .keys_match()
            .map_err(|_| TlsError::KeyMismatch { what })?;
        Ok(Self {
            identity,
            certified: Arc::new(certified),
            not_before,
            not_after,
        })
    }

    /// Reads a PEM certificate chain (leaf first) and its PEM private key (PKCS#8 or SEC1).
    /// The identity is the leaf's only DNS SAN. `what` names the source in errors.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8], what: &str) -> Result<Self, TlsError> {
        let chain = crate::ca::parse_certs(cert_pem, what)?;
        let key = crate::ca::parse_private_key(key_pem, what)?;
        let identity = crate::leaf::identity_of(&chain[0]).map_err(|e| match e {
            TlsError::PeerIdentity { found } => TlsError::CertIdentity {
                what: what.to_owned(),
                found,
            },
            e => e,
        })?;
        Self::new(identity, chain, key)
    }

    /// [`Credentials::from_pem`] from a certificate file and a key file: how every binary
    /// that is given its certificate as files loads it.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Self::from_pem(
            &crate::ca::read(cert)?,
            &crate::ca::read(key)?,
            &format!("{} / {}", cert.display(), key.display()),
        )
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.certified.cert
    }

    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }
}

/// The sending half: whoever renews the certificate publishes here.
pub type CredentialsSender = watch::Sender<Option<Arc<Credentials>>>;
/// The receiving half: what TLS configs read from.
pub type CredentialsReceiver = watch::Receiver<Option<Arc<Credentials>>>;

/// A new channel, empty (no certificate yet) or with a first certificate.
pub fn credentials_channel(
    initial: Option<Credentials>,
) -> (CredentialsSender, CredentialsReceiver) {
    watch::channel(initial.map(Arc::new))
}

/// Resolves our certificate for each handshake from the watch channel.
#[derive(Debug, Clone)]
pub struct CertResolver {
    rx: CredentialsReceiver,
}

impl CertResolver {
    pub fn new(rx: CredentialsReceiver) -> Self {
        Self { rx }
    }

    fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.rx.borrow().as_ref().map(|c| c.certified.clone())
    }
}

impl rustls::server::ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

impl rustls::client::ResolvesClientCert for CertResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.current()
    }

    fn has_certs(&self) -> bool {
        self.rx.borrow().is_some()
    }
}
