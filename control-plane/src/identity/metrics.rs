//! The identity service's metrics, as Prometheus text.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Why a Certify call was refused; a bounded set of labels.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Refusal {
    /// No token, or the API server did not accept it.
    Unauthenticated,
    /// The token belongs to someone else than the requested identity.
    PermissionDenied,
    /// The requested identity is not a valid name in this trust domain.
    InvalidIdentity,
    /// The CSR is malformed or names something else.
    InvalidCsr,
    /// The TokenReview could not be made.
    ReviewUnavailable,
    /// The issuer cannot sign (expired).
    Issuer,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthenticated",
            Self::PermissionDenied => "permission_denied",
            Self::InvalidIdentity => "invalid_identity",
            Self::InvalidCsr => "invalid_csr",
            Self::ReviewUnavailable => "review_unavailable",
            Self::Issuer => "issuer",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Counters and gauges; cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    issued: Counter,
    refused: Family<ReasonLabel, Counter>,
    issuer_expiry: Gauge<f64, AtomicU64>,
    registry: Arc<Mutex<Registry>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Metrics in their own registry (tests, benchmarks); see [`Metrics::encode`].
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let mut m = Self::register(&mut registry);
        m.registry = Arc::new(Mutex::new(registry));
        m
    }

    /// Registers the metrics, prefixed `strait_identity_`, in a shared registry.
    pub fn register(registry: &mut Registry) -> Self {
        let reg = registry.sub_registry_with_prefix("strait_identity");
        let issued = Counter::default();
        let refused = Family::<ReasonLabel, Counter>::default();
        let issuer_expiry = Gauge::<f64, AtomicU64>::default();
        reg.register(
            "certificates_issued",
            "Leaf certificates issued",
            issued.clone(),
        );
        reg.register(
            "certify_refusals",
            "Certify calls refused, by reason",
            refused.clone(),
        );
        reg.register(
            "issuer_expiry_seconds",
            "Seconds until the issuer certificate expires",
            issuer_expiry.clone(),
        );
        Self {
            issued,
            refused,
            issuer_expiry,
            registry: Arc::new(Mutex::new(Registry::default())),
        }
    }

    pub fn issued(&self) {
        self.issued.inc();
    }

    pub fn refused(&self, r: Refusal) {
        self.refused
            .get_or_create(&ReasonLabel { reason: r.as_str() })
            .inc();
    }

    pub fn set_issuer_expiry(&self, not_after: SystemTime) {
        self.issuer_expiry
            .set(super::issuer::seconds_until(not_after));
    }

    /// The metrics in the Prometheus text format (for [`Metrics::new`]; a shared registry
    /// is encoded by its owner).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let reg = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
        out
    }
}
