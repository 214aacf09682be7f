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
    ClientAuth, Credentials, CredentialsReceiver, Issuer, ServingCert, TlsError, TrustAnchors,
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
    issuer: watch::Receiver<Arc<Issuer>>,
    identity: Identity,
    lifetime: Duration,
) -> Result<CredentialsReceiver, TlsError> {
    let name = identity.to_string();
    let first = issue(&issuer.borrow(), &identity, lifetime)?;
    let (tx, rx) = credentials_channel(Some(first));
    keep_fresh(
        issuer,
        name,
        tx,
        move |i| issue(i, &identity, lifetime).map(|c| Some(Arc::new(c))),
        |c| c.as_ref().map_or_else(SystemTime::now, |c| c.not_after()),
    );
    Ok(rx)
}

/// The injector's serving certificate for `dns_name` (the webhook Service), kept fresh like
/// [`keep_issued`]; the webhook configuration's `caBundle` is the trust anchors.
pub fn keep_serving(
    issuer: watch::Receiver<Arc<Issuer>>,
    dns_name: String,
    lifetime: Duration,
) -> Result<watch::Receiver<ServingCert>, TlsError> {
    let first = issuer
        .borrow()
        .issue_serving(&dns_name, lifetime, SystemTime::now())?;
    let (tx, rx) = watch::channel(first);
    let name = dns_name.clone();
    keep_fresh(
        issuer,
        name,
        tx,
        move |i| i.issue_serving(&dns_name, lifetime, SystemTime::now()),
        |c| c.not_after,
    );
    Ok(rx)
}

/// The renewal loop both share: re-issue with `make` when the issuer changes or at 70 % of
/// the current certificate's remaining life (a failure retries after 10 s); ends when every
/// receiver of `tx` is gone.
fn keep_fresh<T: Send + Sync + 'static>(
    mut issuer: watch::Receiver<Arc<Issuer>>,
    name: String,
    tx: watch::Sender<T>,
    make: impl Fn(&Issuer) -> Result<T, TlsError> + Send + 'static,
    not_after: impl Fn(&T) -> SystemTime + Send + 'static,
) {
    issuer.mark_unchanged();
    let mut wait = renew_in(not_after(&tx.borrow()));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                changed = issuer.changed() => if changed.is_err() { return },
                _ = tx.closed() => return,
            }
            let current = issuer.borrow_and_update().clone();
            wait = match make(&current) {
                Ok(fresh) => {
                    let wait = renew_in(not_after(&fresh));
                    tracing::info!(%name, renew_in = ?wait, "issued the control plane's own certificate");
                    if tx.send(fresh).is_err() {
                        return;
                    }
                    wait
                }
                Err(error) => {
                    tracing::warn!(%name, %error, "issuing the control plane's own certificate");
                    Duration::from_secs(10)
                }
            };
        }
    });
}

/// 70 % of the remaining life until `not_after`, at least 10 s.
fn renew_in(not_after: SystemTime) -> Duration {
    let left = not_after
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
        let pki = strait_tls::testing::TestPki::new();
        let id: Identity = "strait-identity.strait.serviceaccount.identity.strait.cluster.local"
            .parse()
            .unwrap();
        let creds = issue(&pki.issuer, &id, Duration::from_secs(3600)).unwrap();
        assert_eq!(creds.identity(), &id);
        let chain = creds.chain().to_vec();
        assert_eq!(
            strait_tls::dns_names(&chain[0]).unwrap(),
            vec![id.to_string()]
        );
        strait_tls::verify_chain(&pki.anchors, &id, &chain, now).unwrap();
    }
}
