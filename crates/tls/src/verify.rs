//! Verifying certificates: the one-identity rule every client applies during a handshake
//! ([`ExactIdentity`]), and the same check run on a chain outside a handshake, before a leaf
//! is used ([`verify_chain`]) or an issuer is trusted ([`Issuer::verify_against`]).

use crate::TlsError;
use crate::ca::{Issuer, TrustAnchors};
use crate::leaf::{dns_names, generate_csr};
use crate::provider::provider;
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::ServerName;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use strait_core::identity::Identity;

/// WebPKI verification (chain to the anchors, validity, ServerAuth, name) plus one rule:
/// the certificate names exactly one DNS identity, the one expected. A certificate that also
/// names something else (or a wildcard) is refused as not valid for the name.
#[derive(Debug)]
pub(crate) struct ExactIdentity {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
}

impl ExactIdentity {
    pub(crate) fn new(anchors: &TrustAnchors) -> Result<Arc<Self>, TlsError> {
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            anchors.root_store(),
            provider(),
        )
        .build()
        .map_err(TlsError::Verifier)?;
        Ok(Arc::new(Self { inner }))
    }
}

impl ServerCertVerifier for ExactIdentity {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        intermediates: &[rustls_pki_types::CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let ok = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let names = dns_names(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        match (names.as_slice(), server_name) {
            ([one], ServerName::DnsName(expected)) if one == expected.as_ref() => Ok(ok),
            _ => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Checks that `chain` (leaf first) is a valid certificate for `identity` chained to
/// `anchors` at `now`: what a workload does with a freshly issued leaf before using it.
pub fn verify_chain(
    anchors: &TrustAnchors,
    identity: &Identity,
    chain: &[rustls_pki_types::CertificateDer<'static>],
    now: std::time::SystemTime,
) -> Result<(), TlsError> {
    let verifier = ExactIdentity::new(anchors)?;
    let (leaf, rest) = chain.split_first().ok_or(TlsError::NoPeerCertificate)?;
    let name = ServerName::try_from(identity.to_string())
        .map_err(|_| TlsError::ServerName(identity.to_string()))?;
    let now = rustls_pki_types::UnixTime::since_unix_epoch(
        now.duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    verifier
        .verify_server_cert(leaf, rest, &name, &[], now)
        .map(|_| ())
        .map_err(|e| TlsError::handshake(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

impl Issuer {
    /// Proves that leaves this issuer signs verify under `anchors`: issues a short-lived leaf
    /// for `probe` and verifies it. Run it at start-up, so a mismatched issuer and anchor
    /// bundle is found before the first workload is refused.
    pub fn verify_against(&self, anchors: &TrustAnchors, probe: &Identity) -> Result<(), TlsError> {
        let now = SystemTime::now();
        let req = generate_csr(probe)?;
        let leaf = self.issue(&req.csr, probe, Duration::from_secs(60), now)?;
        verify_chain(anchors, probe, &leaf.chain(), now).map_err(|e| {
            let reason = match e {
                TlsError::Handshake { source, .. } => source.to_string(),
                other => other.to_string(),
            };
            TlsError::IssuerNotTrusted { reason }
        })
    }
}
