//! Prometheus metrics of the destination service: open streams, updates sent, lookups by
//! result. Every label has a small fixed set of values.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Which RPC.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Method {
    Get,
    GetProfile,
}

/// How a lookup was answered.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum LookupResult {
    /// A local Service, by name or cluster IP.
    Service,
    /// A mirror of a remote Service.
    Mirror,
    /// A pod address.
    Pod,
    /// A valid name or address that names nothing here (the proxy falls back).
    NotFound,
    /// Not a name or address this server resolves (the proxy falls back).
    Invalid,
    /// The caches were not synced in time.
    Unavailable,
}

/// Which kind of update.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum UpdateKind {
    Add,
    Remove,
    NoEndpoints,
    Profile,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: Method,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookupLabels {
    pub method: Method,
    pub result: LookupResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpdateLabels {
    pub kind: UpdateKind,
}

/// The metrics; clone freely (the families are shared).
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub open_streams: Family<MethodLabels, Gauge>,
    pub updates_sent: Family<UpdateLabels, Counter>,
    pub lookups: Family<LookupLabels, Counter>,
}

impl Metrics {
    /// Creates the metrics and registers them under `destination_`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let reg = registry.sub_registry_with_prefix("destination");
        reg.register(
            "open_streams",
            "Get and GetProfile streams currently open",
            m.open_streams.clone(),
        );
        reg.register(
            "updates_sent",
            "Messages sent on Get and GetProfile streams",
            m.updates_sent.clone(),
        );
        reg.register(
            "lookups",
            "Lookups by how they were answered",
            m.lookups.clone(),
        );
        m
    }

    pub(crate) fn lookup(&self, method: Method, result: LookupResult) {
        self.lookups
            .get_or_create(&LookupLabels { method, result })
            .inc();
    }

    pub(crate) fn sent(&self, kind: UpdateKind) {
        self.updates_sent
            .get_or_create(&UpdateLabels { kind })
            .inc();
    }

    /// Counts a stream as open until the guard drops.
    pub(crate) fn open(&self, method: Method) -> OpenStream {
        let gauge = self
            .open_streams
            .get_or_create(&MethodLabels { method })
            .clone();
        gauge.inc();
        OpenStream(gauge)
    }
}

/// Decrements the open-streams gauge on drop.
#[derive(Debug)]
pub(crate) struct OpenStream(Gauge);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}
