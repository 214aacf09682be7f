//! The injector's counters, prefixed `strait_injector_`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use strait_inject::SkipReason;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Pods injected, skipped (by reason) and refused (by reason); cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    injected: Counter,
    skipped: Family<ReasonLabel, Counter>,
    refused: Family<ReasonLabel, Counter>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let reg = registry.sub_registry_with_prefix("strait_injector");
        reg.register(
            "pods_injected",
            "Pods the proxy was added to",
            m.injected.clone(),
        );
        reg.register(
            "pods_skipped",
            "Pods left alone, by reason",
            m.skipped.clone(),
        );
        reg.register(
            "pods_refused",
            "Pods refused (a bad annotation), by reason",
            m.refused.clone(),
        );
        m
    }

    pub(super) fn injected(&self) {
        self.injected.inc();
    }

    pub(super) fn skipped(&self, reason: SkipReason) {
        self.skipped
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc();
    }

    pub(super) fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// (injected, skipped, refused), summed over reasons: for tests.
    pub fn totals(&self) -> (u64, u64, u64) {
        let sum = |f: &Family<ReasonLabel, Counter>, reasons: &[&'static str]| {
            reasons
                .iter()
                .map(|r| f.get_or_create(&ReasonLabel { reason: r }).get())
                .sum::<u64>()
        };
        (
            self.injected.get(),
            sum(
                &self.skipped,
                &[
                    "not_enabled",
                    "disabled",
                    "already_injected",
                    "host_network",
                ],
            ),
            sum(&self.refused, &["annotation", "patch"]),
        )
    }
}
