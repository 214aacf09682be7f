//! Who presented this token? The TokenReview seam: the API server in production, an in-memory
//! table in unit tests.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};

/// The audience Strait's proxies request their identity tokens for (as Linkerd's do).
pub const IDENTITY_AUDIENCE: &str = "identity.l5d.io";

/// The answer of a token review.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Review {
    /// The token is valid and belongs to this user (e.g. `system:serviceaccount:shop:web`).
    Authenticated { username: String },
    /// The API server did not accept the token; `reason` is its error text.
    Rejected { reason: String },
}

/// The review itself could not be done (the API server is down or refused us).
#[derive(Debug, thiserror::Error)]
#[error(
    "TokenReview failed: {0}; check that the API server is reachable and that the control plane may create tokenreviews"
)]
pub struct ReviewError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Checks a bearer token. `audience: None` accepts the API server's default audience.
#[tonic::async_trait]
pub trait TokenReviewer: Send + Sync + 'static {
    async fn review(&self, token: &str, audience: Option<&str>) -> Result<Review, ReviewError>;
}

/// Reviews tokens with the cluster's API server (`authentication.k8s.io/v1` TokenReview).
#[derive(Clone)]
pub struct KubeTokenReviewer {
    api: Api<TokenReview>,
}

impl std::fmt::Debug for KubeTokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubeTokenReviewer")
    }
}

impl KubeTokenReviewer {
    pub fn new(client: kube::Client) -> Self {
        Self {
            api: Api::all(client),
        }
    }
}

#[tonic::async_trait]
impl TokenReviewer for KubeTokenReviewer {
    async fn review(&self, token: &str, audience: Option<&str>) -> Result<Review, ReviewError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: audience.map(|a| vec![a.to_owned()]),
            },
            ..Default::default()
        };
        let out = self
            .api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| ReviewError(Box::new(e)))?;
        let status = out.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Ok(Review::Rejected {
                reason: status
                    .error
                    .filter(|e| !e.is_empty())
                    .unwrap_or_else(|| "token not authenticated".into()),
            });
        }
        if let Some(a) = audience
            && !status.audiences.unwrap_or_default().iter().any(|x| x == a)
        {
            return Ok(Review::Rejected {
                reason: format!("token is not valid for audience {a}"),
            });
        }
        match status.user.and_then(|u| u.username) {
            Some(username) => Ok(Review::Authenticated { username }),
            None => Ok(Review::Rejected {
                reason: "token review returned no user name".into(),
            }),
        }
    }
}

/// An in-memory reviewer for unit tests and benchmarks: a table of token → (audience, user).
#[derive(Debug, Default, Clone)]
pub struct StaticTokenReviewer {
    tokens: std::collections::HashMap<String, (Option<String>, String)>,
}

impl StaticTokenReviewer {
    /// Accepts `token` as `username` for `audience` (`None`: the API server's audience).
    pub fn with(mut self, token: &str, audience: Option<&str>, username: &str) -> Self {
        self.tokens.insert(
            token.to_owned(),
            (audience.map(str::to_owned), username.to_owned()),
        );
        self
    }
}

#[tonic::async_trait]
impl TokenReviewer for StaticTokenReviewer {
    async fn review(&self, token: &str, audience: Option<&str>) -> Result<Review, ReviewError> {
        Ok(match self.tokens.get(token) {
            Some((aud, user)) if aud.as_deref() == audience => Review::Authenticated {
                username: user.clone(),
            },
            _ => Review::Rejected {
                reason: "[invalid bearer token]".into(),
            },
        })
    }
}
