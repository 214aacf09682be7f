//! Prometheus metrics and the admin server on 9999 (`/metrics`, `/ready`). `/ready` answers
//! 200 `ready` on the leader once it serves Links, and 200 `standby` on a healthy replica
//! standing by (`strait_mirror_leader 0`): a standby must count as ready, or a rolling update
//! of two replicas would wait forever for one. 503 otherwise.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LinkLabels {
    pub link: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub link: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    pub verb: String,
}

/// Every metric the controller exports.
#[derive(Debug)]
pub struct Metrics {
    pub gateway_alive: Family<LinkLabels, Gauge>,
    pub probe_latency_ms: Family<LinkLabels, Histogram>,
    pub mirrors: Family<LinkLabels, Gauge>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub watch_restarts: Family<LinkLabels, Counter>,
    /// When the Link's credentials token expires (its `exp`, Unix seconds), while the
    /// session's kubeconfig holds a JWT.
    pub credentials_expiry: Family<LinkLabels, Gauge>,
    /// Requests this controller sent to the local API server, by verb (watches excluded).
    pub api_requests: Family<VerbLabels, Counter>,
    /// 1 while this replica holds the leader Lease, 0 while it stands by.
    pub leader: Gauge,
    /// The leader's local stores are synced and its Link controller runs.
    pub ready: AtomicBool,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("strait_mirror");
        let gateway_alive = Family::<LinkLabels, Gauge>::default();
        registry.register(
            "gateway_alive",
            "1 when the remote gateway answers probes",
            gateway_alive.clone(),
        );
        let probe_latency_ms = Family::<LinkLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0,
            ])
        });
        registry.register(
            "gateway_probe_latency_ms",
            "Latency of successful gateway probes",
            probe_latency_ms.clone(),
        );
        let mirrors = Family::<LinkLabels, Gauge>::default();
        registry.register("mirrors", "Mirrored services per link", mirrors.clone());
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconcile errors by reason",
            reconcile_errors.clone(),
        );
        let watch_restarts = Family::<LinkLabels, Counter>::default();
        registry.register(
            "remote_watch_restarts",
            "Remote watch errors that restarted a watch",
            watch_restarts.clone(),
        );
        let credentials_expiry = Family::<LinkLabels, Gauge>::default();
        registry.register(
            "credentials_expiry_timestamp_seconds",
            "When the Link's credentials token expires (Unix seconds)",
            credentials_expiry.clone(),
        );
        let api_requests = Family::<VerbLabels, Counter>::default();
        registry.register(
            "api_requests",
            "Requests to the local API server by verb",
            api_requests.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        Self {
            gateway_alive,
            probe_latency_ms,
            mirrors,
            reconcile_errors,
            watch_restarts,
            credentials_expiry,
            api_requests,
            leader,
            ready: AtomicBool::new(false),
            registry,
        }
    }

    pub fn link(link: &str) -> LinkLabels {
        LinkLabels {
            link: link.to_string(),
        }
    }

    pub fn count_request(&self, verb: &str) {
        self.api_requests
            .get_or_create(&VerbLabels {
                verb: verb.to_string(),
            })
            .inc();
    }

    pub fn error(&self, link: &str, reason: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                link: link.into(),
                reason: reason.into(),
            })
            .inc();
    }

    /// Total writes (everything but reads) sent to the local API server.
    pub fn writes(&self) -> u64 {
        ["apply", "create", "delete", "patch"]
            .iter()
            .map(|v| {
                self.api_requests
                    .get_or_create(&VerbLabels { verb: (*v).into() })
                    .get()
            })
            .sum()
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// Serves `/metrics` and `/ready` on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((io, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let metrics = metrics.clone();
                    async move {
                        let (status, body) = match req.uri().path() {
                            "/metrics" => (200, metrics.encode()),
                            "/ready" if metrics.ready.load(Ordering::Relaxed) => {
                                (200, "ready\n".into())
                            }
                            "/ready" if metrics.leader.get() == 0 => (200, "standby\n".into()),
                            "/ready" => (503, "not ready\n".into()),
                            _ => (404, "not found\n".into()),
                        };
                        let mut rsp = hyper::Response::new(Full::new(Bytes::from(body)));
                        *rsp.status_mut() = http::StatusCode::from_u16(status).unwrap_or_default();
                        Ok::<_, std::convert::Infallible>(rsp)
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(io), svc)
                .await;
        });
    }
}
