//! A TLS server for the Kubernetes API server to call: admission webhooks.
//!
//! The API server verifies the webhook's certificate against the `caBundle` of the webhook
//! configuration and presents no client certificate, so this server presents a certificate
//! for the webhook Service's DNS name (from the install or cert-manager) and asks for none.
//! TLS 1.3 only, no session resumption, as everywhere in Strait.

use crate::TlsError;
use crate::config::provider;
use rustls::ServerConfig;
use std::sync::Arc;

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
    use super::*;

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
