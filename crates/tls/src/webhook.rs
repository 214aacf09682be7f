//! A TLS server for the Kubernetes API server to call: admission webhooks.
//!
//! The API server verifies the webhook's certificate against the `caBundle` of the webhook
//! configuration and presents no client certificate, so this server presents a certificate
//! for the webhook Service's DNS name and asks for none. The certificate is either given
//! (files from the install or cert-manager: [`webhook_server_config`]) or issued in-process by
//! the identity issuer ([`Issuer::issue_serving`], [`webhook_server_config_watch`]), in which
//! case the `caBundle` is the trust anchors and nothing else needs managing. TLS 1.3 only, no
//! session resumption, as everywhere in Strait.

use crate::TlsError;
use crate::ca::{CLOCK_SKEW, Issuer, random_serial};
use crate::provider::provider;
use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls::ServerConfig;
use rustls::sign::CertifiedKey;
use rustls_pki_types::PrivateKeyDer;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// A serving certificate for a DNS name (not a workload identity), with its chain and key.
#[derive(Debug, Clone)]
pub struct ServingCert {
    pub certified: Arc<CertifiedKey>,
    pub not_after: SystemTime,
}

impl Issuer {
    /// Signs a server-only certificate for `dns_name` with a fresh P-256 key: the control
    /// plane's own webhook, which the API server reaches as `<svc>.<ns>.svc`. It never
    /// outlives the issuer, and it cannot be used as a client (no clientAuth), so it proves
    /// no workload identity.
    pub fn issue_serving(
        &self,
        dns_name: &str,
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<ServingCert, TlsError> {
        let sign = |source| TlsError::Sign {
            what: "serving certificate",
            source,
        };
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(TlsError::GenerateKey)?;
        let not_after = (now + lifetime).min(self.not_after());
        if not_after <= now {
            return Err(TlsError::IssuerExpired {
                not_after: self.not_after(),
            });
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, dns_name);
        params.subject_alt_names = vec![SanType::DnsName(
            dns_name.to_owned().try_into().map_err(sign)?,
        )];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = (now - CLOCK_SKEW).into();
        params.not_after = not_after.into();
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, self.signer()).map_err(sign)?;
        let chain = std::iter::once(cert.der().clone())
            .chain(self.chain().iter().cloned())
            .collect();
        let signing = provider()
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(key.serialize_der().into()))
            .map_err(|_| TlsError::NoKey {
                what: dns_name.to_owned(),
            })?;
        let (_, not_after) = crate::leaf::cert_validity(cert.der())?;
        Ok(ServingCert {
            certified: Arc::new(CertifiedKey::new(chain, signing)),
            not_after,
        })
    }
}

/// Presents whatever certificate `rx` holds at each handshake.
#[derive(Debug)]
struct WatchResolver(watch::Receiver<ServingCert>);

impl rustls::server::ResolvesServerCert for WatchResolver {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.borrow().certified.clone())
    }
}

/// A TLS 1.3 server presenting the newest certificate on `rx` (re-issued by its owner).
pub fn webhook_server_config_watch(
    rx: watch::Receiver<ServingCert>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| TlsError::Config {
            side: "server",
            source,
        })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(WatchResolver(rx)));
    cfg.send_tls13_tickets = 0;
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A TLS 1.3 server presenting `cert_pem` (leaf first, then its chain) with `key_pem`.
pub fn webhook_server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    what: &str,
) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = crate::ca::parse_certs(cert_pem, what)?;
    let key = crate::ca::parse_private_key(key_pem, what)?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| TlsError::Config {
            side: "server",
            source,
        })?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Config {
            side: "server",
            source,
        })?;
    cfg.send_tls13_tickets = 0;
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn serving_certificates_name_the_service_and_chain_to_the_anchor() {
        let pki = crate::testing::TestPki::new();
        let now = SystemTime::now();
        let cert = pki
            .issuer
            .issue_serving("strait-injector.strait.svc", Duration::from_secs(3600), now)
            .unwrap();
        let chain = &cert.certified.cert;
        assert_eq!(chain.len(), 2, "the leaf and the issuer");
        assert_eq!(
            crate::dns_names(&chain[0]).unwrap(),
            vec!["strait-injector.strait.svc".to_owned()]
        );
        let (_, x509) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
        let eku = x509.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth, "server only: {eku:?}");
        // A client that trusts the anchors verifies it for the Service's name.
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            pki.anchors.root_store(),
            provider(),
        )
        .build()
        .unwrap();
        let name = rustls_pki_types::ServerName::try_from("strait-injector.strait.svc").unwrap();
        rustls::client::danger::ServerCertVerifier::verify_server_cert(
            verifier.as_ref(),
            &chain[0],
            &chain[1..],
            &name,
            &[],
            rustls_pki_types::UnixTime::now(),
        )
        .unwrap();
        let (_tx, rx) = watch::channel(cert);
        webhook_server_config_watch(rx).unwrap();
    }

    #[test]
    fn a_server_config_needs_a_certificate_and_its_key() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["strait-injector.strait.svc".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let cfg = webhook_server_config(cert.pem().as_bytes(), key.serialize_pem().as_bytes(), "t")
            .unwrap();
        assert_eq!(cfg.send_tls13_tickets, 0);
        let err = webhook_server_config(cert.pem().as_bytes(), b"", "injector.key").unwrap_err();
        assert!(err.to_string().contains("injector.key"), "{err}");
        let err =
            webhook_server_config(b"", key.serialize_pem().as_bytes(), "injector.crt").unwrap_err();
        assert!(err.to_string().contains("injector.crt"), "{err}");
    }
}
