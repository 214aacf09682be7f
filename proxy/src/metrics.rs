//! Prometheus metrics with Linkerd's names and labels.
//!
//! `request_total`, `response_total` (`classification` = success | failure),
//! `response_latency_ms`, `tcp_open_total`, `tcp_open_connections`, `tcp_read_bytes_total`,
//! `tcp_write_bytes_total`, each labelled `direction`, `authority`, `tls`, `client_id`,
//! `server_id`, `dst_namespace`, `dst_service`; plus `http_errors_total` and
//! `tcp_errors_total` by `direction` and a bounded `error` kind.
//!
//! Inbound policy adds Linkerd's `inbound_http_authz_allow_total`,
//! `inbound_http_authz_deny_total`, `inbound_http_route_not_found_total`,
//! `inbound_tcp_authz_allow_total`, `inbound_tcp_authz_deny_total` and
//! `inbound_tcp_authz_terminate_total`, labelled by server (`srv_*`), route (`route_*`),
//! authorization (`authz_*`) and `target_port`.
//!
//! Cardinality is bounded: `authority`, `client_id` and `server_id` values beyond the first
//! [`MAX_LABEL_VALUES`] distinct ones are reported as `overflow`.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use strait_core::identity::Identity;

/// Distinct values kept per free-form label before they collapse into `overflow`.
pub const MAX_LABEL_VALUES: usize = 500;

/// Which side of the pod the traffic is on.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

impl EncodeLabelValue for Direction {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// Labels shared by HTTP and TCP metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrafficLabels {
    pub direction: Direction,
    pub authority: String,
    pub tls: bool,
    pub client_id: String,
    pub server_id: String,
    pub dst_namespace: String,
    pub dst_service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResponseLabels {
    #[prometheus(flatten)]
    pub traffic: TrafficLabels,
    pub status_code: u16,
    pub classification: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub direction: Direction,
    pub error: &'static str,
}

/// The Server a port's policy came from, and the port.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    pub target_port: u16,
    pub srv_group: String,
    pub srv_kind: String,
    pub srv_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    #[prometheus(flatten)]
    pub server: ServerLabels,
    pub route_group: String,
    pub route_kind: String,
    pub route_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpAuthzLabels {
    #[prometheus(flatten)]
    pub route: RouteLabels,
    pub authz_group: String,
    pub authz_kind: String,
    pub authz_name: String,
    pub tls: bool,
    pub client_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpAuthzLabels {
    #[prometheus(flatten)]
    pub server: ServerLabels,
    pub authz_group: String,
    pub authz_kind: String,
    pub authz_name: String,
    pub tls: bool,
    pub client_id: String,
}

/// Inbound policy's decisions.
#[derive(Clone, Debug, Default)]
pub struct AuthzMetrics {
    pub http_allow: Family<HttpAuthzLabels, Counter>,
    pub http_deny: Family<RouteLabels, Counter>,
    pub http_no_route: Family<ServerLabels, Counter>,
    pub tcp_allow: Family<TcpAuthzLabels, Counter>,
    pub tcp_deny: Family<ServerLabels, Counter>,
    pub tcp_terminate: Family<ServerLabels, Counter>,
}

impl AuthzMetrics {
    /// Registers the families (the proxy's and the gateway's registries).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "inbound_http_authz_allow",
            "HTTP requests inbound policy allowed",
            self.http_allow.clone(),
        );
        registry.register(
            "inbound_http_authz_deny",
            "HTTP requests inbound policy refused (403)",
            self.http_deny.clone(),
        );
        registry.register(
            "inbound_http_route_not_found",
            "HTTP requests no inbound route matched (404)",
            self.http_no_route.clone(),
        );
        registry.register(
            "inbound_tcp_authz_allow",
            "Connections inbound policy allowed",
            self.tcp_allow.clone(),
        );
        registry.register(
            "inbound_tcp_authz_deny",
            "Connections inbound policy refused (closed)",
            self.tcp_deny.clone(),
        );
        registry.register(
            "inbound_tcp_authz_terminate",
            "Open connections closed because a policy change no longer allows them",
            self.tcp_terminate.clone(),
        );
    }
}

/// What the destination service said about a target, as labels.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct DstLabels {
    pub namespace: String,
    pub service: String,
}

/// Everything about one flow that goes into labels, before the cardinality bound.
#[derive(Clone, Debug)]
pub struct Flow<'a> {
    pub direction: Direction,
    pub authority: &'a str,
    pub client_id: Option<&'a Identity>,
    pub server_id: Option<&'a Identity>,
    pub tls: bool,
    pub dst: Option<&'a DstLabels>,
}

fn latency_histogram() -> Histogram {
    // Linkerd's buckets, in milliseconds.
    Histogram::new([
        1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0,
        1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 10000.0, 20000.0, 30000.0, 40000.0, 50000.0,
    ])
}

/// The proxy's metric families; cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    requests: Family<TrafficLabels, Counter>,
    responses: Family<ResponseLabels, Counter>,
    latency: Family<ResponseLabels, Histogram, fn() -> Histogram>,
    tcp_open: Family<TrafficLabels, Counter>,
    tcp_open_connections: Family<TrafficLabels, Gauge>,
    tcp_read: Family<TrafficLabels, Counter>,
    tcp_write: Family<TrafficLabels, Counter>,
    http_errors: Family<ErrorLabels, Counter>,
    tcp_errors: Family<ErrorLabels, Counter>,
    pub authz: AuthzMetrics,
    budget: Arc<LabelBudget>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            responses: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            tcp_open: Family::default(),
            tcp_open_connections: Family::default(),
            tcp_read: Family::default(),
            tcp_write: Family::default(),
            http_errors: Family::default(),
            tcp_errors: Family::default(),
            authz: AuthzMetrics::default(),
            budget: Arc::new(LabelBudget::new(MAX_LABEL_VALUES)),
        };
        registry.register("request", "HTTP requests", m.requests.clone());
        registry.register("response", "HTTP responses", m.responses.clone());
        registry.register(
            "response_latency_ms",
            "Time to response headers, in milliseconds",
            m.latency.clone(),
        );
        registry.register("tcp_open", "TCP connections opened", m.tcp_open.clone());
        registry.register(
            "tcp_open_connections",
            "TCP connections open now",
            m.tcp_open_connections.clone(),
        );
        registry.register(
            "tcp_read_bytes",
            "Bytes read from peers",
            m.tcp_read.clone(),
        );
        registry.register(
            "tcp_write_bytes",
            "Bytes written to peers",
            m.tcp_write.clone(),
        );
        registry.register(
            "http_errors",
            "HTTP requests answered by the proxy with an error",
            m.http_errors.clone(),
        );
        registry.register(
            "tcp_errors",
            "TCP connections the proxy closed on an error",
            m.tcp_errors.clone(),
        );
        m.authz.register(registry);
        m
    }

    /// A client identity as a label value, within the cardinality bound.
    pub fn identity_label(&self, id: Option<&Identity>) -> String {
        id.map(|i| self.budget.get(&i.to_string()))
            .unwrap_or_default()
    }

    pub fn labels(&self, flow: &Flow<'_>) -> TrafficLabels {
        let id = |i: Option<&Identity>| self.identity_label(i);
        let dst = flow.dst.cloned().unwrap_or_default();
        TrafficLabels {
            direction: flow.direction,
            authority: self.budget.get(flow.authority),
            tls: flow.tls,
            client_id: id(flow.client_id),
            server_id: id(flow.server_id),
            dst_namespace: dst.namespace,
            dst_service: dst.service,
        }
    }

    /// Counts an opened connection; the guard counts it closed when dropped.
    pub fn tcp_open(&self, labels: TrafficLabels) -> TcpGuard {
        self.tcp_open.get_or_create(&labels).inc();
        let open = self.tcp_open_connections.get_or_create(&labels).clone();
        open.inc();
        TcpGuard {
            open,
            read: self.tcp_read.get_or_create(&labels).clone(),
            write: self.tcp_write.get_or_create(&labels).clone(),
        }
    }

    /// The HTTP series of one label set, looked up once: a request on it then costs an
    /// atomic add, a response a short scan of the statuses seen so far, an add and an
    /// observation, with no label hashing or allocation.
    pub fn http_series(&self, labels: TrafficLabels) -> HttpSeries {
        HttpSeries(Arc::new(SeriesInner {
            requests: self.requests.get_or_create(&labels).clone(),
            responses: Mutex::new(Vec::new()),
            labels,
            families: self.clone(),
        }))
    }

    pub fn http_error(&self, direction: Direction, error: &'static str) {
        self.http_errors
            .get_or_create(&ErrorLabels { direction, error })
            .inc();
    }

    pub fn tcp_error(&self, direction: Direction, error: &'static str) {
        self.tcp_errors
            .get_or_create(&ErrorLabels { direction, error })
            .inc();
    }
}

/// The HTTP series of one label set ([`Metrics::http_series`]); cheap to clone.
#[derive(Clone, Debug)]
pub struct HttpSeries(Arc<SeriesInner>);

#[derive(Debug)]
struct SeriesInner {
    labels: TrafficLabels,
    requests: Counter,
    /// By status code and classification: a handful per label set in practice.
    responses: Mutex<Vec<ResponseSeries>>,
    families: Metrics,
}

#[derive(Debug)]
struct ResponseSeries {
    status: u16,
    success: bool,
    total: Counter,
    latency: Histogram,
}

impl HttpSeries {
    pub fn labels(&self) -> &TrafficLabels {
        &self.0.labels
    }

    pub fn request(&self) {
        self.0.requests.inc();
    }

    pub fn response(&self, status: u16, success: bool, elapsed: Duration) {
        let ms = elapsed.as_secs_f64() * 1000.0;
        let Ok(mut seen) = self.0.responses.lock() else {
            return;
        };
        if let Some(r) = seen
            .iter()
            .find(|r| r.status == status && r.success == success)
        {
            r.total.inc();
            r.latency.observe(ms);
            return;
        }
        let m = &self.0.families;
        let labels = ResponseLabels {
            traffic: self.0.labels.clone(),
            status_code: status,
            classification: if success { "success" } else { "failure" },
        };
        let r = ResponseSeries {
            status,
            success,
            total: m.responses.get_or_create(&labels).clone(),
            latency: m.latency.get_or_create(&labels).clone(),
        };
        r.total.inc();
        r.latency.observe(ms);
        seen.push(r);
    }
}

/// An open connection in the metrics; decrements `tcp_open_connections` when dropped.
#[derive(Debug)]
pub struct TcpGuard {
    open: Gauge,
    pub read: Counter,
    pub write: Counter,
}

impl Drop for TcpGuard {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// Admits the first `max` distinct values of free-form labels; later ones read `overflow`.
#[derive(Debug)]
struct LabelBudget {
    seen: Mutex<HashSet<String>>,
    max: usize,
}

impl LabelBudget {
    fn new(max: usize) -> Self {
        Self {
            seen: Mutex::new(HashSet::new()),
            max,
        }
    }

    fn get(&self, v: &str) -> String {
        let Ok(mut seen) = self.seen.lock() else {
            return "overflow".into();
        };
        if seen.contains(v) {
            return v.to_owned();
        }
        if seen.len() < self.max {
            seen.insert(v.to_owned());
            return v.to_owned();
        }
        "overflow".into()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_and_labels_match_linkerd() {
        let mut reg = Registry::default();
        let m = Metrics::register(&mut reg);
        let id: Identity = "web.shop.serviceaccount.identity.strait.cluster.local"
            .parse()
            .unwrap();
        let l = m.labels(&Flow {
            direction: Direction::Inbound,
            authority: "web:80",
            client_id: Some(&id),
            server_id: None,
            tls: true,
            dst: None,
        });
        let series = m.http_series(l.clone());
        series.request();
        series.response(200, true, Duration::from_millis(3));
        // A second series of the same labels counts into the same samples.
        let again = m.http_series(l.clone());
        again.request();
        again.response(200, true, Duration::from_millis(5));
        again.response(503, false, Duration::from_millis(1));
        let g = m.tcp_open(l);
        g.read.inc_by(5);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        for want in [
            "request_total{direction=\"inbound\",authority=\"web:80\",tls=\"true\",client_id=\"web.shop.serviceaccount.identity.strait.cluster.local\"",
            "status_code=\"200\",classification=\"success\"} 2",
            "status_code=\"503\",classification=\"failure\"} 1",
            "response_latency_ms_count{",
            "response_latency_ms_bucket{",
            "tcp_open_total{",
            "tcp_open_connections{",
            "tcp_read_bytes_total{",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
        assert!(
            text.lines()
                .any(|l| l.starts_with("request_total{") && l.ends_with("} 2")),
            "both series' requests in one sample:\n{text}"
        );
        drop(g);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
        assert!(
            text.contains("tcp_open_connections{direction=\"inbound\"") && text.contains("} 0")
        );
    }

    #[test]
    fn label_values_are_bounded() {
        let b = LabelBudget::new(2);
        assert_eq!(b.get("a"), "a");
        assert_eq!(b.get("b"), "b");
        assert_eq!(b.get("c"), "overflow");
        assert_eq!(b.get("a"), "a");
    }
}
