//! The identity service: `io.linkerd.proxy.identity.Identity/Certify`.
//!
//! ```text
//!  proxy ── Certify{identity, token, CSR} ──► IdentityService
//!                                               1. identity parses, is in our trust domain
//!                                               2. TokenReview(token, aud=identity.l5d.io),
//!                                                  then without audience
//!                                               3. system:serviceaccount:<ns>:<sa> == identity
//!                                               4. CSR has exactly that one DNS SAN
//!                                               5. issuer signs a leaf (watch: reloaded issuer)
//!  proxy ◄── {leaf, intermediates, valid_until} ─┘
//! ```
//!
//! Each refusal has its own gRPC status (Unauthenticated, PermissionDenied, InvalidArgument)
//! and a message saying why. Tokens are never logged.

pub mod config;
pub mod issuer;
pub mod metrics;
pub mod token;

pub use issuer::{IssuerLoadError, IssuerSource, watch_issuer};
pub use metrics::{Metrics, Refusal};
pub use token::{
    IDENTITY_AUDIENCE, KubeTokenReviewer, Review, ReviewError, StaticTokenReviewer, TokenReviewer,
};

use linkerd2_proxy_api::identity::identity_server::{Identity as IdentityApi, IdentityServer};
use linkerd2_proxy_api::identity::{CertifyRequest, CertifyResponse};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use strait_core::identity::Identity;
use strait_tls::{Issuer, TlsError};
use tokio::sync::watch;

/// What the identity service needs to know.
#[derive(Clone, Debug)]
pub struct IdentitySettings {
    /// The trust domain identities must end in, e.g. `cluster.local`.
    pub trust_domain: String,
    /// The control plane's namespace, part of every identity, e.g. `strait`.
    pub control_namespace: String,
    /// How long an issued leaf lives (clamped to the issuer's lifetime).
    pub lifetime: Duration,
}

/// Why a Certify call was refused.
#[derive(Debug, thiserror::Error)]
pub enum CertifyError {
    #[error(
        "the request carries no token; send the pod's service-account token for audience {IDENTITY_AUDIENCE}"
    )]
    NoToken,
    #[error("the token is not valid UTF-8")]
    TokenEncoding,
    #[error("the API server rejected the token: {0}")]
    TokenRejected(String),
    #[error(transparent)]
    Review(#[from] ReviewError),
    #[error("the token belongs to {0:?}, which is not a service account")]
    NotServiceAccount(String),
    #[error("the requested identity {requested:?} is not a valid identity name: {source}")]
    BadIdentity {
        requested: String,
        #[source]
        source: strait_core::identity::IdentityError,
    },
    #[error(
        "the requested identity {requested} is not in this control plane's domain (*.serviceaccount.identity.{control_namespace}.{trust_domain})"
    )]
    ForeignIdentity {
        requested: String,
        control_namespace: String,
        trust_domain: String,
    },
    #[error(
        "the token is for service account {token_sa} but the request asks for identity {requested}"
    )]
    IdentityMismatch { token_sa: String, requested: String },
    #[error("invalid CSR: {0}")]
    Csr(#[source] TlsError),
    #[error("cannot issue: {0}")]
    Issue(#[source] TlsError),
}

impl CertifyError {
    fn refusal(&self) -> Refusal {
        match self {
            Self::NoToken | Self::TokenEncoding | Self::TokenRejected(_) => {
                Refusal::Unauthenticated
            }
            Self::Review(_) => Refusal::ReviewUnavailable,
            Self::NotServiceAccount(_) | Self::IdentityMismatch { .. } => Refusal::PermissionDenied,
            Self::BadIdentity { .. } | Self::ForeignIdentity { .. } => Refusal::InvalidIdentity,
            Self::Csr(_) => Refusal::InvalidCsr,
            Self::Issue(_) => Refusal::Issuer,
        }
    }

    fn status(&self) -> tonic::Status {
        let msg = self.to_string();
        match self.refusal() {
            Refusal::Unauthenticated => tonic::Status::unauthenticated(msg),
            Refusal::PermissionDenied => tonic::Status::permission_denied(msg),
            Refusal::InvalidIdentity | Refusal::InvalidCsr => tonic::Status::invalid_argument(msg),
            Refusal::ReviewUnavailable => tonic::Status::unavailable(msg),
            Refusal::Issuer => tonic::Status::failed_precondition(msg),
        }
    }
}

/// The Certify service. Clone it freely.
#[derive(Clone)]
pub struct IdentityService {
    settings: Arc<IdentitySettings>,
    issuer: watch::Receiver<Arc<Issuer>>,
    reviewer: Arc<dyn TokenReviewer>,
    metrics: Metrics,
}

impl std::fmt::Debug for IdentityService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityService")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl IdentityService {
    pub fn new(
        settings: IdentitySettings,
        issuer: watch::Receiver<Arc<Issuer>>,
        reviewer: Arc<dyn TokenReviewer>,
        metrics: Metrics,
    ) -> Self {
        Self {
            settings: Arc::new(settings),
            issuer,
            reviewer,
            metrics,
        }
    }

    /// The tonic service to add to a server.
    pub fn into_server(self) -> IdentityServer<Self> {
        IdentityServer::new(self)
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Handles one request: authenticate, authorise, check the CSR, sign.
    pub async fn certify(&self, req: CertifyRequest) -> Result<CertifyResponse, CertifyError> {
        let requested = self.requested_identity(&req.identity)?;
        let username = self.authenticate(&req.token).await?;
        let (ns, sa) = username
            .strip_prefix("system:serviceaccount:")
            .and_then(|r| r.split_once(':'))
            .ok_or_else(|| CertifyError::NotServiceAccount(username.clone()))?;
        if sa != requested.service_account() || ns != requested.namespace() {
            return Err(CertifyError::IdentityMismatch {
                token_sa: format!("{ns}/{sa}"),
                requested: requested.to_string(),
            });
        }
        let issuer = self.issuer.borrow().clone();
        let leaf = issuer
            .issue(
                &req.certificate_signing_request,
                &requested,
                self.settings.lifetime,
                SystemTime::now(),
            )
            .map_err(|e| {
                if e.is_bad_csr() {
                    CertifyError::Csr(e)
                } else {
                    CertifyError::Issue(e)
                }
            })?;
        Ok(CertifyResponse {
            leaf_certificate: leaf.cert.to_vec(),
            intermediate_certificates: leaf.intermediates.iter().map(|c| c.to_vec()).collect(),
            valid_until: Some(prost_types::Timestamp::from(leaf.not_after)),
        })
    }

    fn requested_identity(&self, s: &str) -> Result<Identity, CertifyError> {
        let id: Identity = s.parse().map_err(|source| CertifyError::BadIdentity {
            requested: s.to_owned(),
            source,
        })?;
        if id.trust_domain() != self.settings.trust_domain
            || id.control_namespace() != self.settings.control_namespace
        {
            return Err(CertifyError::ForeignIdentity {
                requested: s.to_owned(),
                control_namespace: self.settings.control_namespace.clone(),
                trust_domain: self.settings.trust_domain.clone(),
            });
        }
        Ok(id)
    }

    /// The token's user: first as an identity-audience token, then as an API-server token.
    async fn authenticate(&self, token: &[u8]) -> Result<String, CertifyError> {
        if token.is_empty() {
            return Err(CertifyError::NoToken);
        }
        let token = std::str::from_utf8(token).map_err(|_| CertifyError::TokenEncoding)?;
        let token = token.trim();
        let mut reason = String::new();
        for audience in [Some(IDENTITY_AUDIENCE), None] {
            match self.reviewer.review(token, audience).await? {
                Review::Authenticated { username } => return Ok(username),
                Review::Rejected { reason: r } => reason = r,
            }
        }
        Err(CertifyError::TokenRejected(reason))
    }
}

/// Serves the identity service on `listener` until `shutdown` completes.
///
/// Accepted sockets get `TCP_NODELAY`: a Certify answer is one small write, and Nagle's
/// algorithm with delayed ACKs would hold it for ~40 ms.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: IdentityService,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let incoming = crate::listen::incoming(listener);
    tonic::transport::Server::builder()
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// Serves the identity service over TLS with `tls` (see [`crate::own_cert`]): a proxy checks
/// the service's identity before it sends its token.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    service: IdentityService,
    tls: Arc<strait_tls::rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let incoming = crate::listen::tls_incoming(listener, tls);
    tonic::transport::Server::builder()
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

#[tonic::async_trait]
impl IdentityApi for IdentityService {
    async fn certify(
        &self,
        request: tonic::Request<CertifyRequest>,
    ) -> Result<tonic::Response<CertifyResponse>, tonic::Status> {
        let req = request.into_inner();
        let identity = req.identity.clone();
        match IdentityService::certify(self, req).await {
            Ok(rsp) => {
                self.metrics.issued();
                tracing::info!(%identity, "issued a certificate");
                Ok(tonic::Response::new(rsp))
            }
            Err(error) => {
                let refusal = error.refusal();
                self.metrics.refused(refusal);
                // The error never contains the token, only what the API server said of it.
                tracing::warn!(%identity, reason = refusal.as_str(), %error, "refused a certificate");
                Err(error.status())
            }
        }
    }
}

#[cfg(test)]
mod tests;
