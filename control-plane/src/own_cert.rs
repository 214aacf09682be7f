//! The control plane's own certificates, issued from the cluster's issuer: identity serves TLS
//! as `strait-identity.<ns>.serviceaccount.identity.<ns>.<td>`, destination serves mTLS as
//! `strait-destination.…` (linkerd identities are single-SAN: one certificate per identity).
//!
//! ```text
//!  issuer (watch) ──► issue(CSR(identity)) ──► credentials channel ──► rustls ServerConfig
//!        ▲  changed: re-issue at once              │
//!        └── or at 70 % of the leaf's lifetime ◄───┘   (a failure retries after 10 s)
//! ```

use std::sync::Arc;
use std::time::{Duration, SystemTime};
use strait_core::identity::Identity;
use strait_tls::{
    ClientAuth, Credentials, CredentialsReceiver, Issuer, TlsError, TrustAnchors,
    credentials_channel, generate_csr,
};
use tokio::sync::watch;

/// The service account of the identity service (part of its TLS identity).
pub const IDENTITY_SERVICE_ACCOUNT: &str = "strait-identity";
/// The service account of the destination service (part of its TLS identity).
pub const DESTINATION_SERVICE_ACCOUNT: &str = "strait-destination";

/// One certificate for `identity` from the current issuer.
pub fn issue(
    issuer: &Issuer,
    identity: &Identity,
    lifetime: Duration,
) -> Result<Credentials, TlsError> {
    let req = generate_csr(identity)?;
    let leaf = issuer.issue(&req.csr, identity, lifetime, SystemTime::now())?;
    Credentials::new(identity.clone(), leaf.chain(), req.key)
}

/// Issues `identity`'s certificate now, then keeps it fresh: re-issued when the issuer
/// changes and before it expires. The task ends when every receiver is gone.
pub fn keep_issued(
    mut issuer: watch::Receiver<Arc<Issuer>>,
    identity: Identity,
    lifetime: Duration,
) -> Result<CredentialsReceiver, TlsError> {
    let first = issue(&issuer.borrow_and_update(), &identity, lifetime)?;
    let mut wait = renew_in(&first);
    let (tx, rx) = credentials_channel(Some(first));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                changed = issuer.changed() => if changed.is_err() { return },
                _ = tx.closed() => return,
            }
            let current = issuer.borrow_and_update().clone();
            wait = match issue(&current, &identity, lifetime) {
                Ok(creds) => {
                    let wait = renew_in(&creds);
                    tracing::info!(%identity, renew_in = ?wait, "issued the control plane's own certificate");
                    if tx.send(Some(Arc::new(creds))).is_err() {
                        return;
                    }
                    wait
                }
                Err(error) => {
                    tracing::warn!(%identity, %error, "issuing the control plane's own certificate");
                    Duration::from_secs(10)
                }
            };
        }
    });
    Ok(rx)
}

/// 70 % of the certificate's remaining life, at least 10 s.
fn renew_in(creds: &Credentials) -> Duration {
    let left = creds
        .not_after()
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    left.mul_f64(0.7).max(Duration::from_secs(10))
}

/// The identity service's TLS: its own certificate, no client certificate asked for
/// (a proxy has none yet; it proves itself with its token).
pub fn identity_server_config(
    anchors: &TrustAnchors,
    creds: CredentialsReceiver,
) -> Result<Arc<strait_tls::rustls::ServerConfig>, TlsError> {
    strait_tls::server_config(anchors, creds, ClientAuth::Optional, &[])
}

/// The destination service's mTLS: its own certificate, and a client certificate chained to
/// the anchors is required.
pub fn destination_server_config(
    anchors: &TrustAnchors,
    creds: CredentialsReceiver,
) -> Result<Arc<strait_tls::rustls::ServerConfig>, TlsError> {
    strait_tls::server_config(anchors, creds, ClientAuth::Required, &[])
}

/// `--plaintext` was asked for on an address other than loopback.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "--plaintext is allowed only on loopback (tests), but {flag}={addr}; drop --plaintext so the \
     control plane serves TLS with its own identities"
)]
pub struct PlaintextOffLoopback {
    pub flag: &'static str,
    pub addr: std::net::SocketAddr,
}

/// Plaintext gRPC only where no other host can reach it: every listen address on loopback.
pub fn check_plaintext(
    addrs: &[(&'static str, std::net::SocketAddr)],
) -> Result<(), PlaintextOffLoopback> {
    match addrs.iter().find(|(_, a)| !a.ip().is_loopback()) {
        Some(&(flag, addr)) => Err(PlaintextOffLoopback { flag, addr }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn plaintext_only_on_loopback() {
        let lo = "127.0.0.1:8080".parse().unwrap();
        let lo6 = "[::1]:8086".parse().unwrap();
        let any = "0.0.0.0:8086".parse().unwrap();
        assert_eq!(
            check_plaintext(&[("--identity-addr", lo), ("--destination-addr", lo6)]),
            Ok(())
        );
        let e =
            check_plaintext(&[("--identity-addr", lo), ("--destination-addr", any)]).unwrap_err();
        assert_eq!(e.flag, "--destination-addr");
        assert!(
            e.to_string().contains("--destination-addr=0.0.0.0:8086"),
            "{e}"
        );
    }

    #[test]
    fn own_certificates_are_single_san_and_chain_to_the_anchor() {
        let now = SystemTime::now();
        let anchor =
            Issuer::generate_anchor("cluster.local", strait_tls::DEFAULT_ANCHOR_LIFETIME, now)
                .unwrap();
        let issuer = anchor
            .generate_issuer(
                "identity.strait.cluster.local",
                strait_tls::DEFAULT_ISSUER_LIFETIME,
                now,
            )
            .unwrap();
        let id: Identity = "strait-identity.strait.serviceaccount.identity.strait.cluster.local"
            .parse()
            .unwrap();
        let creds = issue(&issuer, &id, Duration::from_secs(3600)).unwrap();
        assert_eq!(creds.identity(), &id);
        let chain = creds.chain().to_vec();
        assert_eq!(
            strait_tls::dns_names(&chain[0]).unwrap(),
            vec![id.to_string()]
        );
        strait_tls::verify_chain(&anchor.as_anchors().unwrap(), &id, &chain, now).unwrap();
    }
}
