//! Workload identity names.
//!
//! A meshed workload's identity is its service account, written as a DNS name:
//!
//! ```text
//! <serviceaccount>.<namespace>.serviceaccount.identity.<control-namespace>.<trust-domain>
//! web.shop.serviceaccount.identity.strait.cluster.local
//! ```
//!
//! It is the only DNS SAN of the workload's certificate and the SNI a client sends to it.

use std::fmt;
use std::str::FromStr;

/// The default namespace of Strait's control plane.
pub const DEFAULT_CONTROL_NAMESPACE: &str = "strait";
/// The default trust domain.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
/// The gateway's service account.
pub const GATEWAY_SERVICE_ACCOUNT: &str = "strait-gateway";
/// The namespace the gateway runs in.
pub const GATEWAY_NAMESPACE: &str = "strait-multicluster";

const MARKER: &str = "serviceaccount.identity";

/// A parsed identity name. Build one with [`Identity::new`] or parse one with `str::parse`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    service_account: String,
    namespace: String,
    control_namespace: String,
    trust_domain: String,
}

/// Why a string is not an identity name; each variant names the part that is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("identity name is empty")]
    Empty,
    #[error("identity name is {0} bytes long; a DNS name has at most 253")]
    TooLong(usize),
    #[error(
        "identity {0:?} lacks `.serviceaccount.identity.`: expected <sa>.<ns>.serviceaccount.identity.<control-ns>.<trust-domain>"
    )]
    MissingMarker(String),
    #[error(
        "identity {name:?}: the {part} {value:?} is not a DNS label (1-63 of a-z, 0-9, '-', not starting or ending with '-')"
    )]
    BadLabel {
        name: String,
        part: &'static str,
        value: String,
    },
    #[error("identity {name:?}: the trust domain {value:?} is not a DNS name")]
    BadTrustDomain { name: String, value: String },
}

impl Identity {
    /// Builds an identity, checking every part.
    pub fn new(
        service_account: &str,
        namespace: &str,
        control_namespace: &str,
        trust_domain: &str,
    ) -> Result<Self, IdentityError> {
        let id = Self {
            service_account: service_account.to_owned(),
            namespace: namespace.to_owned(),
            control_namespace: control_namespace.to_owned(),
            trust_domain: trust_domain.to_owned(),
        };
        id.to_string().parse()
    }

    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn control_namespace(&self) -> &str {
        &self.control_namespace
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{MARKER}.{}.{}",
            self.service_account, self.namespace, self.control_namespace, self.trust_domain
        )
    }
}

impl FromStr for Identity {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(IdentityError::Empty);
        }
        if s.len() > 253 {
            return Err(IdentityError::TooLong(s.len()));
        }
        let (head, tail) = s
            .split_once(&format!(".{MARKER}."))
            .ok_or_else(|| IdentityError::MissingMarker(s.to_owned()))?;
        let bad = |part, value: &str| IdentityError::BadLabel {
            name: s.to_owned(),
            part,
            value: value.to_owned(),
        };
        let (sa, ns) = head.split_once('.').ok_or_else(|| bad("namespace", ""))?;
        let (control_ns, trust_domain) =
            tail.split_once('.')
                .ok_or_else(|| IdentityError::BadTrustDomain {
                    name: s.to_owned(),
                    value: String::new(),
                })?;
        // Service-account names may contain dots in Kubernetes, but not in an identity: the
        // name would be ambiguous.
        for (part, value) in [
            ("service account", sa),
            ("namespace", ns),
            ("control namespace", control_ns),
        ] {
            if !is_dns_label(value) {
                return Err(bad(part, value));
            }
        }
        if !trust_domain.split('.').all(is_dns_label) {
            return Err(IdentityError::BadTrustDomain {
                name: s.to_owned(),
                value: trust_domain.to_owned(),
            });
        }
        Ok(Self {
            service_account: sa.to_owned(),
            namespace: ns.to_owned(),
            control_namespace: control_ns.to_owned(),
            trust_domain: trust_domain.to_owned(),
        })
    }
}

/// An RFC 1123 label: 1–63 of `a-z`, `0-9`, `-`, neither starting nor ending with `-`.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let id: Identity = "web.shop.serviceaccount.identity.strait.cluster.local"
            .parse()
            .unwrap();
        assert_eq!(id.service_account(), "web");
        assert_eq!(id.namespace(), "shop");
        assert_eq!(id.control_namespace(), "strait");
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(
            id.to_string(),
            "web.shop.serviceaccount.identity.strait.cluster.local"
        );
        assert_eq!(
            Identity::new("web", "shop", "strait", "cluster.local").unwrap(),
            id
        );
    }

    #[test]
    fn names_the_wrong_part() {
        let e = "web.shop.identity.strait.cluster.local"
            .parse::<Identity>()
            .unwrap_err();
        assert!(matches!(e, IdentityError::MissingMarker(_)), "{e}");
        let e = "Web.shop.serviceaccount.identity.strait.cluster.local"
            .parse::<Identity>()
            .unwrap_err();
        assert!(
            matches!(
                &e,
                IdentityError::BadLabel {
                    part: "service account",
                    ..
                }
            ),
            "{e}"
        );
        let e = "web.serviceaccount.identity.strait.cluster.local"
            .parse::<Identity>()
            .unwrap_err();
        assert!(
            matches!(
                &e,
                IdentityError::BadLabel {
                    part: "namespace",
                    ..
                }
            ),
            "{e}"
        );
        let e = "web.shop.serviceaccount.identity.strait"
            .parse::<Identity>()
            .unwrap_err();
        assert!(matches!(e, IdentityError::BadTrustDomain { .. }), "{e}");
        let e = "web.shop.serviceaccount.identity.strait.cluster..local"
            .parse::<Identity>()
            .unwrap_err();
        assert!(matches!(e, IdentityError::BadTrustDomain { .. }), "{e}");
        assert_eq!("".parse::<Identity>().unwrap_err(), IdentityError::Empty);
    }
}
