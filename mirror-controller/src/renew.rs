//! Renewal of a Link's credentials token. `strait multicluster link` writes a kubeconfig whose
//! user holds a ServiceAccount token from the TokenRequest API (a JWT); it expires. Before it
//! does, this task asks the remote cluster for a new token of the same ServiceAccount, with
//! the same lifetime (and the API server's audiences, as the link command asks), and writes
//! it back into the credentials Secret; the Secret watch (credentials.rs) then reconnects with
//! it, and starts the next renewal.
//!
//! ```text
//!  session starts ─► current user's token ─ not a ServiceAccount JWT ─► no renewal (debug)
//!                      │ iat, exp, sub = system:serviceaccount:NS:NAME
//!                      ▼                                              gauge: expiry = exp
//!  sleep until iat + (exp - iat) × percent / 100
//!    ─► Secret still holds this kubeconfig? ─ no ─► stop (the watch has new credentials)
//!    ─► TokenRequest NS/NAME on the remote (expirationSeconds = exp - iat, at least 600)
//!    ─► the kubeconfig with only the token replaced ─► merge patch `data.kubeconfig`
//!       (resourceVersion as precondition) ─► the Secret watch reconnects
//!  failure: warn (the step, never the token), reconcile_errors{reason="credentials_renewal"},
//!           again after 30 s, doubling up to 5 min, until exp; then the session fails (401)
//! ```
//!
//! Nothing is verified here: the token's claims only schedule the renewal, and the remote API
//! server checks the token as it always does. The decisions are the pure functions
//! [`claims`], [`renew_at`], [`step`], [`backoff`] and [`with_token`].

use crate::Context;
use base64::Engine;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{AuthInfo, Kubeconfig};
use secrecy::SecretString;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use strait_k8s_api::ServiceAccountToken;
use strait_k8s_api::token::{TokenError, current_token, current_user_name};

/// The default of `--credentials-renew-at-percent`.
pub const DEFAULT_RENEW_AT_PERCENT: u8 = 80;
/// The shortest lifetime asked for (the API server refuses less than 10 minutes).
pub const MIN_LIFETIME_SECS: u64 = 600;
/// The first retry after a failure; each next one waits twice as long, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(30);
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// The longest single sleep: the wall clock is read again after it, so a suspended machine
/// (whose monotonic clock stood still) does not oversleep a renewal.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Why a kubeconfig's token is not renewed here. Never names the token.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotRenewable {
    #[error("the current user has no token (client certificates, a token file or a plugin)")]
    NoToken,
    #[error(transparent)]
    Claims(#[from] TokenError),
}

/// Why one renewal failed; each variant names the step.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error("reading the credentials Secret {0}")]
    ReadSecret(String, #[source] kube::Error),
    #[error("requesting a token for ServiceAccount {0} on the remote cluster")]
    TokenRequest(String, #[source] kube::Error),
    #[error("the remote cluster answered the TokenRequest without a token")]
    NoToken,
    #[error("the kubeconfig's current user has no token")]
    NoUser,
    #[error("encoding the kubeconfig with the new token")]
    Encode(#[source] serde_saphyr::SerializeError),
    #[error("patching the credentials Secret {0}")]
    PatchSecret(String, #[source] kube::Error),
}

impl RenewError {
    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        "credentials_renewal"
    }
}

/// The lifetime to ask for: the old token's, at least [`MIN_LIFETIME_SECS`].
pub fn lifetime_secs(t: &ServiceAccountToken) -> u64 {
    t.lifetime().as_secs().max(MIN_LIFETIME_SECS)
}

/// When to renew, in Unix seconds: `percent` of the way from `iat` to `exp`.
pub fn renew_at(t: &ServiceAccountToken, percent: u8) -> u64 {
    unix(t.renew_at(percent))
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// How long to wait after the `failures`-th failure in a row (1, 2, ...).
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (FIRST_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF)
}

/// What the renewal task does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Sleep this long, then look again.
    Wait(Duration),
    Renew,
    /// The token has expired: stop (the session now fails and says so in the status).
    Expired,
}

/// The next step at `now`, for an attempt due at `due`, of a token expiring at `exp`.
pub fn step(now: u64, due: u64, exp: u64) -> Step {
    if now >= exp {
        Step::Expired
    } else if now < due {
        Step::Wait(Duration::from_secs(due - now).min(MAX_SLEEP))
    } else {
        Step::Renew
    }
}

/// `kc` as YAML with the current user's token replaced; everything else stays as it was.
pub fn with_token(kc: &Kubeconfig, token: String) -> Result<String, RenewError> {
    let mut kc = kc.clone();
    let user = current_user_name(&kc)
        .ok_or(RenewError::NoUser)?
        .to_string();
    let auth: &mut AuthInfo = kc
        .auth_infos
        .iter_mut()
        .find(|a| a.name == user)
        .and_then(|a| a.auth_info.as_mut())
        .filter(|a| a.token.is_some())
        .ok_or(RenewError::NoUser)?;
    auth.token = Some(SecretString::from(token));
    serde_saphyr::to_string(&kc).map_err(RenewError::Encode)
}

/// The hash of a Secret's `kubeconfig` that tells whether the credentials changed: the
/// credentials watch compares it to reconnect, a renewal to see it was superseded.
pub(crate) fn kubeconfig_hash(kubeconfig: &Option<Vec<u8>>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    kubeconfig.hash(&mut h);
    h.finish()
}

/// A renewal that credentials.rs starts with a session.
#[derive(Debug)]
pub(crate) struct Renewal {
    pub link: String,
    /// The credentials Secret, in `ctx.namespace`.
    pub secret: String,
    /// The kubeconfig the session was made from, and its hash (credentials.rs).
    pub kubeconfig: Kubeconfig,
    pub hash: u64,
}

/// Sets the expiry gauge of `r.link` and, when the token is a ServiceAccount JWT, spawns the
/// renewal. The caller aborts the task with the session.
pub(crate) fn start(
    ctx: &Arc<Context>,
    r: Renewal,
    remote: kube::Client,
) -> Option<tokio::task::JoinHandle<()>> {
    let parsed = current_token(&r.kubeconfig)
        .ok_or(NotRenewable::NoToken)
        .and_then(|t| Ok(ServiceAccountToken::peek(t)?));
    let gauge = crate::Metrics::link(&r.link);
    match &parsed {
        Ok(token) => {
            ctx.metrics
                .credentials_expiry
                .get_or_create(&gauge)
                .set(i64::try_from(unix(token.expires_at)).unwrap_or(i64::MAX));
        }
        Err(_) => {
            ctx.metrics.credentials_expiry.remove(&gauge);
        }
    }
    match parsed {
        Ok(token) => Some(tokio::spawn(run(ctx.clone(), r, token, remote))),
        Err(e) => {
            tracing::debug!(link = %r.link, reason = %e, "credentials are not renewed here");
            None
        }
    }
}

fn unix_now() -> u64 {
    unix(SystemTime::now())
}

fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

/// What one attempt ended with.
enum Done {
    /// The Secret holds the new token, which expires then (RFC 3339); the watch reconnects.
    Renewed(String),
    /// The Secret no longer holds the kubeconfig this renewal was for.
    Superseded,
}

async fn run(ctx: Arc<Context>, r: Renewal, claims: ServiceAccountToken, remote: kube::Client) {
    let link = r.link.as_str();
    let mut due = renew_at(&claims, ctx.credentials_renew_at_percent);
    tracing::debug!(%link, renew_at = %rfc3339(due), "credentials renewal scheduled");
    let mut failures = 0;
    loop {
        let now = unix_now();
        match step(now, due, unix(claims.expires_at)) {
            Step::Wait(d) => tokio::time::sleep(d).await,
            Step::Expired => {
                tracing::warn!(%link, expired = %rfc3339(unix(claims.expires_at)), "the credentials token expired before it could be renewed; link the cluster again");
                return;
            }
            Step::Renew => match renew(&ctx, &r, &claims, &remote).await {
                Ok(Done::Renewed(expires)) => {
                    tracing::info!(%link, %expires, "renewed the credentials token");
                    return;
                }
                Ok(Done::Superseded) => {
                    tracing::debug!(%link, "the credentials changed; this renewal stops");
                    return;
                }
                Err(e) => {
                    failures += 1;
                    let wait = backoff(failures);
                    // Never log the token or the kubeconfig; the error names only the step.
                    tracing::warn!(%link, error = %e, source = %crate::source_of(&e), retry_in = ?wait, "renewing the credentials token failed");
                    ctx.metrics.error(link, e.metric_label());
                    due = unix_now() + wait.as_secs();
                }
            },
        }
    }
}

/// One renewal: the Secret still holds our kubeconfig, a new token, the Secret patched.
async fn renew(
    ctx: &Context,
    r: &Renewal,
    claims: &ServiceAccountToken,
    remote: &kube::Client,
) -> Result<Done, RenewError> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    ctx.metrics.count_request("get");
    let current = secrets
        .get(&r.secret)
        .await
        .map_err(|e| RenewError::ReadSecret(r.secret.clone(), e))?;
    let bytes = current
        .data
        .as_ref()
        .and_then(|d| d.get("kubeconfig"))
        .map(|b| b.0.clone());
    if kubeconfig_hash(&bytes) != r.hash {
        return Ok(Done::Superseded);
    }

    let sa = format!("{}/{}", claims.namespace, claims.name);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            // The API server's own audiences, as `strait multicluster link` asks.
            audiences: vec![],
            expiration_seconds: Some(i64::try_from(lifetime_secs(claims)).unwrap_or(i64::MAX)),
            bound_object_ref: None,
        },
        ..Default::default()
    };
    let answer = Api::<ServiceAccount>::namespaced(remote.clone(), &claims.namespace)
        .create_token_request(&claims.name, &PostParams::default(), &request)
        .await
        .map_err(|e| RenewError::TokenRequest(sa, e))?;
    let status = answer
        .status
        .filter(|s| !s.token.is_empty())
        .ok_or(RenewError::NoToken)?;
    let expires = status.expiration_timestamp.0.to_string();
    let yaml = with_token(&r.kubeconfig, status.token)?;

    // The resourceVersion makes the patch fail (409) if the Secret changed since the read.
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": current.metadata.resource_version},
        "data": {"kubeconfig": base64::engine::general_purpose::STANDARD.encode(yaml)},
    });
    let pp = PatchParams {
        field_manager: Some(crate::mirror::FIELD_MANAGER.into()),
        ..Default::default()
    };
    ctx.metrics.count_request("patch");
    secrets
        .patch(&r.secret, &pp, &Patch::Merge(&patch))
        .await
        .map_err(|e| RenewError::PatchSecret(r.secret.clone(), e))?;
    Ok(Done::Renewed(expires))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use secrecy::ExposeSecret as _;

    fn jwt(claims: serde_json::Value) -> String {
        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.{}",
            b64(br#"{"alg":"RS256","kid":"k"}"#),
            b64(claims.to_string().as_bytes()),
            b64(b"not-a-signature")
        )
    }

    const SUB: &str =
        "system:serviceaccount:strait-multicluster:strait-service-mirror-remote-access";

    fn token(iat: u64, exp: u64) -> ServiceAccountToken {
        let t = jwt(serde_json::json!({
            "aud": ["https://kubernetes.default.svc"], "iat": iat, "exp": exp, "nbf": iat,
            "sub": SUB, "kubernetes.io": {"namespace": "strait-multicluster"},
        }));
        ServiceAccountToken::peek(&t).unwrap()
    }

    #[test]
    fn the_same_lifetime_is_asked_for_and_at_least_ten_minutes() {
        let t = token(1000, 4600);
        assert_eq!(
            (t.namespace.as_str(), t.name.as_str()),
            ("strait-multicluster", "strait-service-mirror-remote-access")
        );
        assert_eq!(lifetime_secs(&t), 3600);
        assert_eq!(lifetime_secs(&token(0, 60)), MIN_LIFETIME_SECS);
        // Tokens that are not a service account's are not renewed, and the reason never
        // carries the token.
        let e = NotRenewable::from(ServiceAccountToken::peek("s3cret.s3cret").unwrap_err());
        assert!(!e.to_string().contains("s3cret"));
    }

    #[test]
    fn renewal_is_scheduled_at_the_percent_of_the_lifetime() {
        let c = token(1_000, 1_000 + 86_400);
        let exp = unix(c.expires_at);
        assert_eq!(renew_at(&c, 80), 1_000 + 69_120);
        assert_eq!(renew_at(&c, 1), 1_000 + 864);
        assert_eq!(renew_at(&c, 99), 1_000 + 85_536);
        let due = renew_at(&c, 80);
        assert_eq!(
            step(due - 10, due, exp),
            Step::Wait(Duration::from_secs(10))
        );
        assert_eq!(step(0, due, exp), Step::Wait(MAX_SLEEP));
        assert_eq!(step(due, due, exp), Step::Renew);
        assert_eq!(step(due + 5, due, exp), Step::Renew);
        assert_eq!(step(exp, due, exp), Step::Expired);
        assert_eq!(step(exp + 1, 0, exp), Step::Expired);

        let waits: Vec<u64> = (1..=7).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [30, 60, 120, 240, 300, 300, 300]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    const KUBECONFIG: &str = r#"apiVersion: v1
kind: Config
clusters:
- name: east
  cluster:
    server: https://east.example:6443
    certificate-authority-data: Q0EgREFUQQ==
    tls-server-name: kubernetes.default
- name: other
  cluster:
    server: https://other.example
users:
- name: east-remote
  user:
    token: old-token
- name: bystander
  user:
    token: bystander-token
contexts:
- name: east
  context:
    cluster: east
    user: east-remote
    namespace: strait-multicluster
current-context: east
"#;

    #[test]
    fn only_the_current_users_token_is_replaced() {
        let kc = Kubeconfig::from_yaml(KUBECONFIG).unwrap();
        assert_eq!(current_token(&kc), Some("old-token"));
        let yaml = with_token(&kc, "new-token".into()).unwrap();
        let back = Kubeconfig::from_yaml(&yaml).unwrap();
        assert_eq!(current_token(&back), Some("new-token"));
        let east = back.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(back.clusters[0].name, "east");
        assert_eq!(east.server.as_deref(), Some("https://east.example:6443"));
        assert_eq!(
            east.certificate_authority_data.as_deref(),
            Some("Q0EgREFUQQ==")
        );
        assert_eq!(east.tls_server_name.as_deref(), Some("kubernetes.default"));
        assert_eq!(back.clusters.len(), 2);
        assert_eq!(back.current_context.as_deref(), Some("east"));
        let ctx = back.contexts[0].context.as_ref().unwrap();
        assert_eq!(ctx.namespace.as_deref(), Some("strait-multicluster"));
        let bystander = back.auth_infos[1].auth_info.as_ref().unwrap();
        assert_eq!(
            bystander.token.as_ref().map(|t| t.expose_secret()),
            Some("bystander-token")
        );
        // Apart from the token, the kubeconfig is the same object.
        assert_eq!(
            with_token(&back, "old-token".into()).unwrap(),
            serde_saphyr::to_string(&kc).unwrap()
        );
    }

    #[test]
    fn a_kubeconfig_without_a_token_is_not_rewritten() {
        let certs = KUBECONFIG.replace(
            "    token: old-token",
            "    client-certificate-data: Q0VSVA==\n    client-key-data: S0VZ",
        );
        let kc = Kubeconfig::from_yaml(&certs).unwrap();
        assert_eq!(current_token(&kc), None);
        assert!(matches!(
            with_token(&kc, "t".into()),
            Err(RenewError::NoUser)
        ));
        let no_context = KUBECONFIG.replace("current-context: east\n", "");
        let kc = Kubeconfig::from_yaml(&no_context).unwrap();
        assert_eq!(current_token(&kc), None);
        assert_eq!(RenewError::NoUser.metric_label(), "credentials_renewal");
    }
}
