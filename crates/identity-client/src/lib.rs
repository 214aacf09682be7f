//! # strait-identity-client
//!
//! Obtains a workload's certificate from the identity service and keeps it fresh.
//!
//! ```text
//!   token file ─┐
//!   new P-256 key + CSR(SAN = identity) ─► Certify ─► leaf + chain ─► verify against anchors
//!                                                                        │
//!   sleep 70% of the lifetime (10 s ≤ · ≤ 24 h) ◄── publish on the watch channel (strait-tls)
//!   on failure: jittered exponential backoff, then try again
//! ```
//!
//! ## How to start
//!
//! ```no_run
//! # async fn run(anchors: strait_tls::TrustAnchors) {
//! use strait_identity_client::{IdentityClient, Settings};
//! let settings = Settings::new(
//!     "web.shop.serviceaccount.identity.strait.cluster.local".parse().expect("identity"),
//!     "/var/run/secrets/tokens/strait-identity-token".into(),
//! );
//! let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:8080").connect_lazy();
//! let (tx, rx) = strait_tls::credentials_channel(None);
//! let client = IdentityClient::new(settings, channel, anchors);
//! tokio::spawn(client.run(tx)); // `rx` feeds strait_tls::{server_config, client_config}
//! # let _ = rx; }
//! ```

mod channel;

pub use channel::{ChannelError, ConnectError, Target, channel};

use linkerd2_proxy_api::identity::CertifyRequest;
use linkerd2_proxy_api::identity::identity_client::IdentityClient as Grpc;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use strait_core::identity::Identity;
use strait_tls::{Credentials, CredentialsSender, TlsError, TrustAnchors};
use tonic::transport::Channel;

/// Renewal never waits less than this...
pub const MIN_REFRESH: Duration = Duration::from_secs(10);
/// ...nor more than this.
pub const MAX_REFRESH: Duration = Duration::from_secs(24 * 3600);

/// How the client behaves.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The identity to ask for.
    pub identity: Identity,
    /// The service-account token file (read afresh for every request: the kubelet rotates it).
    pub token_path: PathBuf,
    /// The first retry delay after a failure.
    pub backoff_min: Duration,
    /// The largest retry delay.
    pub backoff_max: Duration,
    /// How long one Certify call may take.
    pub request_timeout: Duration,
}

impl Settings {
    pub fn new(identity: Identity, token_path: PathBuf) -> Self {
        Self {
            identity,
            token_path,
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum CertifyError {
    #[error("reading the token {path}: {source}; check that the projected token volume is mounted")]
    Token {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("making a key and CSR: {0}")]
    Csr(#[source] TlsError),
    #[error("the identity service refused: {code:?}: {message}")]
    Refused { code: tonic::Code, message: String },
    #[error("the identity service did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the identity service answered without valid_until")]
    NoExpiry,
    #[error("the issued certificate is not usable: {0}")]
    BadCertificate(#[source] TlsError),
}

/// Obtains and renews one identity's certificate.
#[derive(Clone, Debug)]
pub struct IdentityClient {
    settings: Settings,
    grpc: Grpc<Channel>,
    anchors: TrustAnchors,
}

impl IdentityClient {
    pub fn new(settings: Settings, channel: Channel, anchors: TrustAnchors) -> Self {
        Self {
            settings,
            grpc: Grpc::new(channel),
            anchors,
        }
    }

    /// One Certify call: a fresh key and CSR, the token, the answer verified against the
    /// anchors.
    pub async fn certify(&mut self) -> Result<Credentials, CertifyError> {
        let path = &self.settings.token_path;
        let token = tokio::fs::read(path)
            .await
            .map_err(|source| CertifyError::Token {
                path: path.clone(),
                source,
            })?;
        let id = &self.settings.identity;
        let req = strait_tls::generate_csr(id).map_err(CertifyError::Csr)?;
        let call = self.grpc.certify(CertifyRequest {
            identity: id.to_string(),
            token,
            certificate_signing_request: req.csr,
        });
        let rsp = tokio::time::timeout(self.settings.request_timeout, call)
            .await
            .map_err(|_| CertifyError::Timeout(self.settings.request_timeout))?
            .map_err(|s| CertifyError::Refused {
                code: s.code(),
                message: with_causes(&s),
            })?
            .into_inner();
        rsp.valid_until.ok_or(CertifyError::NoExpiry)?;
        let chain: Vec<_> = std::iter::once(rsp.leaf_certificate)
            .chain(rsp.intermediate_certificates)
            .map(Into::into)
            .collect();
        strait_tls::verify_chain(&self.anchors, id, &chain, SystemTime::now())
            .map_err(CertifyError::BadCertificate)?;
        Credentials::new(id.clone(), chain, req.key).map_err(CertifyError::BadCertificate)
    }

    /// Certifies, publishes, sleeps until 70% of the lifetime, again; retries failures with
    /// jittered exponential backoff. Returns when every receiver of `tx` is gone.
    pub async fn run(mut self, tx: CredentialsSender) {
        let mut backoff = Backoff::new(self.settings.backoff_min, self.settings.backoff_max);
        loop {
            let wait = match self.certify().await {
                Ok(creds) => {
                    backoff.reset();
                    let wait = refresh_in(SystemTime::now(), creds.not_after());
                    tracing::info!(identity = %creds.identity(), not_after = ?creds.not_after(), renew_in = ?wait, "certified");
                    if tx.send(Some(Arc::new(creds))).is_err() {
                        return;
                    }
                    wait
                }
                Err(error) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(%error, retry_in = ?wait, "certify failed");
                    wait
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = tx.closed() => return,
            }
        }
    }
}

/// A status's message and the chain of errors under it (a failed TLS handshake with the
/// identity service is several causes down).
fn with_causes(status: &tonic::Status) -> String {
    let mut message = status.message().to_owned();
    let mut cause = std::error::Error::source(status);
    while let Some(e) = cause {
        message.push_str(": ");
        message.push_str(&e.to_string());
        cause = e.source();
    }
    message
}

/// When to renew: 70% of the time left, clamped to [`MIN_REFRESH`, `MAX_REFRESH`].
pub fn refresh_in(now: SystemTime, not_after: SystemTime) -> Duration {
    let left = not_after.duration_since(now).unwrap_or_default();
    left.mul_f64(0.7).clamp(MIN_REFRESH, MAX_REFRESH)
}

/// Exponential backoff with full jitter: each delay is uniform in [min, cap], where the cap
/// doubles after every failure up to `max`.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    cap: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self { min, max, cap: min }
    }

    pub fn next_delay(&mut self) -> Duration {
        let cap = self.cap;
        self.cap = (self.cap * 2).min(self.max);
        if cap <= self.min {
            return self.min;
        }
        let span = (cap - self.min).as_millis() as u64;
        self.min + Duration::from_millis(rand::random_range(0..=span))
    }

    pub fn reset(&mut self) {
        self.cap = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_at_seventy_percent_clamped() {
        let now = SystemTime::now();
        let h = Duration::from_secs(3600);
        assert_eq!(refresh_in(now, now + 10 * h), 7 * h);
        assert_eq!(
            refresh_in(now, now + Duration::from_secs(60)),
            Duration::from_secs(42)
        );
        assert_eq!(refresh_in(now, now + Duration::from_secs(5)), MIN_REFRESH);
        assert_eq!(refresh_in(now, now - h), MIN_REFRESH);
        assert_eq!(refresh_in(now, now + 90 * 24 * h), MAX_REFRESH);
    }

    #[test]
    fn backoff_grows_with_jitter_and_resets() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        let mut b = Backoff::new(min, max);
        assert_eq!(b.next_delay(), min);
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(d >= min && d <= max, "{d:?}");
        }
        assert_eq!(b.cap, max);
        b.reset();
        assert_eq!(b.next_delay(), min);
    }
}
