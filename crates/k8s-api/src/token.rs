//! What a service-account token (a JWT from the TokenRequest API) says about itself: whose it
//! is and when it was issued and expires. Read without verifying the signature: the claims only
//! schedule renewals and warnings; the API server is what verifies the token.

use base64::Engine as _;
use kube::config::Kubeconfig;
use secrecy::ExposeSecret as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The claims of a service-account token that Strait acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccountToken {
    /// The ServiceAccount's namespace and name (from `sub`,
    /// `system:serviceaccount:NAMESPACE:NAME`).
    pub namespace: String,
    pub name: String,
    pub issued_at: SystemTime,
    pub expires_at: SystemTime,
}

/// Why a token's claims cannot be read. The token itself is never part of the message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token is not a JWT (three base64url parts)")]
    NotJwt,
    #[error("the token's claims are not JSON")]
    Claims,
    #[error("the token has no {0} claim")]
    Missing(&'static str),
    #[error("the token's subject is not a service account")]
    NotServiceAccount,
    #[error("the token expires when or before it was issued")]
    Backwards,
}

#[derive(serde::Deserialize)]
struct Claims {
    sub: Option<String>,
    iat: Option<u64>,
    exp: Option<u64>,
}

impl ServiceAccountToken {
    /// Reads the claims of `jwt`.
    pub fn peek(jwt: &str) -> Result<Self, TokenError> {
        let mut parts = jwt.trim().split('.');
        let (Some(_), Some(payload), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::NotJwt);
        };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .map_err(|_| TokenError::NotJwt)?;
        let claims: Claims = serde_json::from_slice(&bytes).map_err(|_| TokenError::Claims)?;
        let sub = claims.sub.ok_or(TokenError::Missing("sub"))?;
        let iat = claims.iat.ok_or(TokenError::Missing("iat"))?;
        let exp = claims.exp.ok_or(TokenError::Missing("exp"))?;
        let (namespace, name) = sub
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split_once(':'))
            .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains(':'))
            .ok_or(TokenError::NotServiceAccount)?;
        if exp <= iat {
            return Err(TokenError::Backwards);
        }
        Ok(Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            issued_at: UNIX_EPOCH + Duration::from_secs(iat),
            expires_at: UNIX_EPOCH + Duration::from_secs(exp),
        })
    }

    /// From issue to expiry.
    pub fn lifetime(&self) -> Duration {
        self.expires_at
            .duration_since(self.issued_at)
            .unwrap_or_default()
    }

    /// When `percent` of the lifetime has passed (clamped to 1..=99).
    pub fn renew_at(&self, percent: u8) -> SystemTime {
        let percent = u32::from(percent.clamp(1, 99));
        self.issued_at + self.lifetime() * percent / 100
    }

    /// The lifetime left at `now` (zero once expired).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.expires_at.duration_since(now).unwrap_or_default()
    }
}

/// The name of a kubeconfig's current context's user.
pub fn current_user_name(kc: &Kubeconfig) -> Option<&str> {
    let ctx = kc.current_context.as_deref()?;
    let named = kc.contexts.iter().find(|c| c.name == ctx)?;
    named.context.as_ref()?.user.as_deref()
}

/// The current context's user's bearer token, if it has one (not a token file or a plugin).
pub fn current_token(kc: &Kubeconfig) -> Option<&str> {
    let user = current_user_name(kc)?;
    let auth = kc.auth_infos.iter().find(|a| a.name == user)?;
    auth.auth_info
        .as_ref()?
        .token
        .as_ref()
        .map(|t| t.expose_secret())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.c2ln", b(r#"{"alg":"RS256"}"#), b(claims))
    }

    #[test]
    fn reads_whose_token_and_when() {
        let t = ServiceAccountToken::peek(&jwt(
            r#"{"sub":"system:serviceaccount:strait-multicluster:strait-service-mirror-remote-access","iat":1000,"exp":2000,"aud":["x"]}"#,
        ))
        .unwrap();
        assert_eq!(t.namespace, "strait-multicluster");
        assert_eq!(t.name, "strait-service-mirror-remote-access");
        assert_eq!(t.lifetime(), Duration::from_secs(1000));
        assert_eq!(t.renew_at(80), UNIX_EPOCH + Duration::from_secs(1800));
        assert_eq!(t.renew_at(0), UNIX_EPOCH + Duration::from_secs(1010));
        assert_eq!(
            t.remaining(UNIX_EPOCH + Duration::from_secs(1500)),
            Duration::from_secs(500)
        );
        assert_eq!(
            t.remaining(UNIX_EPOCH + Duration::from_secs(2500)),
            Duration::ZERO
        );
    }

    #[test]
    fn refuses_what_is_not_a_service_account_token() {
        for (token, want) in [
            ("s3cret".to_string(), TokenError::NotJwt),
            ("a.b.c.d".to_string(), TokenError::NotJwt),
            ("a.!!!.c".to_string(), TokenError::NotJwt),
            (jwt("not json"), TokenError::Claims),
            (
                jwt(r#"{"sub":"system:serviceaccount:a:b","iat":1}"#),
                TokenError::Missing("exp"),
            ),
            (
                jwt(r#"{"sub":"admin","iat":1,"exp":2}"#),
                TokenError::NotServiceAccount,
            ),
            (
                jwt(r#"{"sub":"system:serviceaccount:a","iat":1,"exp":2}"#),
                TokenError::NotServiceAccount,
            ),
            (
                jwt(r#"{"sub":"system:serviceaccount:a:b","iat":3,"exp":2}"#),
                TokenError::Backwards,
            ),
        ] {
            let err = ServiceAccountToken::peek(&token).unwrap_err();
            assert_eq!(err, want, "{token}");
            assert!(!err.to_string().contains("s3cret"));
        }
    }
}
