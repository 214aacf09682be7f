//! The gateway's Prometheus metrics, registered under `gateway_`.
//!
//! Labels: `client_id` (a TLS identity under the trust anchor: bounded by the service
//! accounts of the linked clusters), `target` (a Service name under `svc.<domain>` that
//! resolved, plus its port), `reason` (a fixed set, see [`crate::Refusal::metric_label`]).

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub client_id: String,
    pub target: String,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Direction {
    /// From the client towards the target.
    ToTarget,
    /// From the target back to the client.
    ToClient,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabels {
    pub client_id: String,
    pub target: String,
    pub direction: Direction,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0005, 2.0, 16,
    ))
}

type HistFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// The metrics; clone freely (the families are shared).
#[derive(Clone, Debug)]
pub struct Metrics {
    pub connections: Family<RouteLabels, Counter>,
    pub refused: Family<ReasonLabels, Counter>,
    pub bytes: Family<BytesLabels, Counter>,
    pub requests: Family<RouteLabels, Counter>,
    /// Time from the accepted TCP connection to an open connection to the target.
    pub connect_latency: HistFamily,
    /// HTTP request latency (request sent to response head received).
    pub request_latency: HistFamily,
    pub open: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            connections: Family::default(),
            refused: Family::default(),
            bytes: Family::default(),
            requests: Family::default(),
            connect_latency: Family::new_with_constructor(latency_histogram),
            request_latency: Family::new_with_constructor(latency_histogram),
            open: Gauge::default(),
        }
    }
}

impl Metrics {
    /// Creates the metrics and registers them under `gateway_`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let reg = registry.sub_registry_with_prefix("gateway");
        reg.register(
            "connections",
            "Connections forwarded, by client identity and target",
            m.connections.clone(),
        );
        reg.register(
            "refused",
            "Connections refused, by reason",
            m.refused.clone(),
        );
        reg.register(
            "bytes",
            "Bytes forwarded, by client identity, target and direction",
            m.bytes.clone(),
        );
        reg.register(
            "requests",
            "HTTP requests forwarded, by client identity and target",
            m.requests.clone(),
        );
        reg.register(
            "connect_latency_seconds",
            "From accept to a connected target, by client identity and target",
            m.connect_latency.clone(),
        );
        reg.register(
            "request_latency_seconds",
            "HTTP request to response head, by client identity and target",
            m.request_latency.clone(),
        );
        reg.register(
            "open_connections",
            "Client connections currently open",
            m.open.clone(),
        );
        m
    }

    pub fn refuse(&self, reason: &str) {
        self.refused
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }
}
