//! HTTP/1 and HTTP/2 through the gateway: the session protocol the transport header names is
//! kept end to end. Each request gets a `Forwarded` header naming the gateway, the client's
//! identity, the host the client asked for and `proto=https`, and its Host (HTTP/1) or
//! `:authority` (HTTP/2) becomes the target Service.
//!
//! One client connection holds one upstream connection to the endpoint chosen for it,
//! reopened if the endpoint closes it (an HTTP/1 `connection: close`). HTTP upgrades are not
//! forwarded. A request that fails gets the proxy's answer for its error
//! ([`strait_proxy::http_server::status_for`]: 502, 503 or 504 and a fixed kind, never the
//! error's text).

use crate::listener::Target;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;
use strait_core::transport_header::SessionProtocol;
use strait_proxy::connect::{ConnectError, Connection, Connector, Endpoint};
use strait_proxy::http_client::Body;
use strait_proxy::http_server::{error_response, status_for};
use tokio_util::sync::CancellationToken;

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("reconnecting to the target: {0}")]
    Connect(#[from] ConnectError),
    #[error("HTTP to the target: {0}")]
    Hyper(#[from] hyper::Error),
    #[error("no upstream connection")]
    NoUpstream,
}

/// What a request's rewrite needs to know about its connection.
#[derive(Clone, Debug)]
pub struct RouteInfo {
    pub gateway_id: String,
    pub client_id: String,
    pub target: Target,
    pub protocol: SessionProtocol,
}

enum Upstream {
    H1(hyper::client::conn::http1::SendRequest<Incoming>),
    H2(hyper::client::conn::http2::SendRequest<Incoming>),
}

impl Upstream {
    fn is_closed(&self) -> bool {
        match self {
            Self::H1(s) => s.is_closed(),
            Self::H2(s) => s.is_closed(),
        }
    }
}

/// Forwards the requests of one client connection.
pub struct Forwarder {
    route: RouteInfo,
    endpoint: Endpoint,
    connector: Connector,
    upstream: tokio::sync::Mutex<Option<Upstream>>,
    requests: Counter,
    latency: Histogram,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("route", &self.route)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

async fn handshake(io: Connection, protocol: SessionProtocol) -> Result<Upstream, hyper::Error> {
    match protocol {
        SessionProtocol::Http1 => {
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream HTTP/1 connection ended");
                }
            });
            Ok(Upstream::H1(send))
        }
        SessionProtocol::Http2 => {
            let (send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                    .await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
                }
            });
            Ok(Upstream::H2(send))
        }
    }
}

impl Forwarder {
    pub fn new(
        route: RouteInfo,
        endpoint: Endpoint,
        connector: Connector,
        requests: Counter,
        latency: Histogram,
    ) -> Arc<Self> {
        Arc::new(Self {
            route,
            endpoint,
            connector,
            upstream: tokio::sync::Mutex::new(None),
            requests,
            latency,
        })
    }

    async fn upstream(&self, slot: &mut Option<Upstream>) -> Result<(), HttpError> {
        if slot.as_ref().is_none_or(Upstream::is_closed) {
            let io = self.connector.connect(&self.endpoint).await?;
            *slot = Some(handshake(io, self.route.protocol).await?);
        }
        Ok(())
    }

    async fn send(&self, req: Request<Incoming>) -> Result<Response<Incoming>, HttpError> {
        let mut guard = self.upstream.lock().await;
        self.upstream(&mut guard).await?;
        match guard.as_mut() {
            Some(Upstream::H1(s)) => {
                // HTTP/1 is one request at a time: the lock is held until the response head.
                s.ready().await?;
                Ok(s.send_request(req).await?)
            }
            Some(Upstream::H2(s)) => {
                let mut s = s.clone();
                drop(guard);
                s.ready().await?;
                Ok(s.send_request(req).await?)
            }
            // `upstream()` filled the slot or returned an error; this arm cannot run.
            None => Err(HttpError::NoUpstream),
        }
    }

    async fn handle(self: Arc<Self>, mut req: Request<Incoming>) -> Response<Body> {
        rewrite(&mut req, &self.route);
        let started = Instant::now();
        self.requests.inc();
        match self.send(req).await {
            Ok(rsp) => {
                self.latency.observe(started.elapsed().as_secs_f64());
                rsp.map(|b| b.map_err(Into::into).boxed_unsync())
            }
            Err(e) => {
                let (status, kind) = status_for(&e);
                tracing::info!(client = %self.route.client_id, target = %self.route.target, error = %e, cause = ?std::error::Error::source(&e), %status, "request failed");
                error_response(status, kind)
            }
        }
    }
}

/// Serves the client's requests on `client` (whose first upstream connection is `first`)
/// until either side closes or `shutdown` fires (then in-flight requests finish).
pub async fn serve<C: strait_proxy::io::Io>(
    client: C,
    fwd: Arc<Forwarder>,
    first: Connection,
    shutdown: CancellationToken,
) -> Result<(), hyper::Error> {
    let protocol = fwd.route.protocol;
    *fwd.upstream.lock().await = Some(handshake(first, protocol).await?);
    let svc = hyper::service::service_fn(move |req| {
        let fwd = fwd.clone();
        async move { Ok::<_, Infallible>(fwd.handle(req).await) }
    });
    let io = TokioIo::new(client);
    match protocol {
        SessionProtocol::Http1 => {
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => r,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            }
        }
        SessionProtocol::Http2 => {
            let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(io, svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => r,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            }
        }
    }
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "upgrade",
];

/// `host` as a Forwarded value: a token, or a quoted string (RFC 7239 §4).
fn forwarded_value(v: &str) -> String {
    let token = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if token {
        v.to_owned()
    } else {
        let escaped: String = v
            .chars()
            .flat_map(|c| match c {
                '"' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        format!("\"{escaped}\"")
    }
}

/// The `Forwarded` element the gateway adds.
pub fn forwarded(gateway_id: &str, client_id: &str, host: &str) -> String {
    format!(
        "by={};for={};host={};proto=https",
        forwarded_value(gateway_id),
        forwarded_value(client_id),
        forwarded_value(host)
    )
}

/// Adds `Forwarded`, drops hop-by-hop headers and points the request at the target.
pub fn rewrite<B>(req: &mut Request<B>, route: &RouteInfo) {
    let host = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let headers = req.headers_mut();
    // Headers the client named in `Connection` are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::try_from(n.trim()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for h in HOP_BY_HOP {
        headers.remove(*h);
    }
    let fwd = forwarded(&route.gateway_id, &route.client_id, &host);
    if let Ok(v) = HeaderValue::from_str(&fwd) {
        headers.append(header::FORWARDED, v);
    }
    let authority = route.target.to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let uri = match route.protocol {
        SessionProtocol::Http1 => {
            if let Ok(v) = HeaderValue::from_str(&authority) {
                req.headers_mut().insert(header::HOST, v);
            }
            Uri::builder().path_and_query(path).build()
        }
        SessionProtocol::Http2 => {
            req.headers_mut().remove(header::HOST);
            Uri::builder()
                .scheme("http")
                .authority(authority)
                .path_and_query(path)
                .build()
        }
    };
    if let Ok(uri) = uri {
        *req.uri_mut() = uri;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn route(p: SessionProtocol) -> RouteInfo {
        RouteInfo {
            gateway_id:
                "strait-gateway.strait-multicluster.serviceaccount.identity.strait.cluster.local"
                    .into(),
            client_id: "web.shop.serviceaccount.identity.strait.cluster.local".into(),
            target: Target {
                name: "web.shop.svc.cluster.local".into(),
                port: 8080,
            },
            protocol: p,
        }
    }

    #[test]
    fn http1_gets_forwarded_and_host() {
        let mut req = Request::get("/a?b=1")
            .header("host", "web-east.shop.svc.cluster.local:80")
            .header("connection", "keep-alive, x-secret")
            .header("x-secret", "1")
            .body(())
            .unwrap();
        rewrite(&mut req, &route(SessionProtocol::Http1));
        assert_eq!(req.uri(), "/a?b=1");
        assert_eq!(req.headers()["host"], "web.shop.svc.cluster.local:8080");
        assert!(req.headers().get("x-secret").is_none());
        assert!(req.headers().get("connection").is_none());
        assert_eq!(
            req.headers()["forwarded"],
            "by=strait-gateway.strait-multicluster.serviceaccount.identity.strait.cluster.local;\
             for=web.shop.serviceaccount.identity.strait.cluster.local;\
             host=\"web-east.shop.svc.cluster.local:80\";proto=https"
        );
    }

    #[test]
    fn http2_sets_authority() {
        let mut req = Request::get("http://web-east.shop.svc.cluster.local:80/x")
            .body(())
            .unwrap();
        rewrite(&mut req, &route(SessionProtocol::Http2));
        assert_eq!(req.uri(), "http://web.shop.svc.cluster.local:8080/x");
        assert!(req.headers().get("host").is_none());
        assert!(
            req.headers()["forwarded"]
                .to_str()
                .unwrap()
                .contains("host=\"web-east.shop.svc.cluster.local:80\"")
        );
    }
}
