//! The admin server on 4191: `/live`, `/ready` and `/metrics` (Prometheus text).
//!
//! It is served over TLS with the gateway's certificate (client certificates optional), so
//! the mirror controller's prober can verify the gateway's identity while it probes
//! `probeSpec.path` (default `/ready`). `/ready` answers 503 once shutdown begins.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use strait_tls::rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the admin server reports.
#[derive(Clone, Debug)]
pub struct Admin {
    registry: Arc<Registry>,
    shutdown: CancellationToken,
}

impl Admin {
    /// `/ready` turns 503 when `shutdown` is cancelled.
    pub fn new(registry: Arc<Registry>, shutdown: CancellationToken) -> Self {
        Self { registry, shutdown }
    }

    /// Answers one request.
    pub fn respond<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        let (status, ctype, body) = match (req.method(), req.uri().path()) {
            (&Method::GET | &Method::HEAD, "/live") => {
                (StatusCode::OK, "text/plain", "live\n".into())
            }
            (&Method::GET | &Method::HEAD, "/ready") if !self.shutdown.is_cancelled() => {
                (StatusCode::OK, "text/plain", "ready\n".into())
            }
            (&Method::GET | &Method::HEAD, "/ready") => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "shutting down\n".into(),
            ),
            (&Method::GET, "/metrics") => {
                let mut text = String::new();
                match prometheus_client::encoding::text::encode(&mut text, &self.registry) {
                    Ok(()) => (
                        StatusCode::OK,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        text,
                    ),
                    Err(e) => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain",
                        format!("encoding metrics: {e}\n"),
                    ),
                }
            }
            _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
        };
        let mut rsp = Response::new(Full::new(Bytes::from(body)));
        *rsp.status_mut() = status;
        if let Ok(v) = http::HeaderValue::from_str(ctype) {
            rsp.headers_mut().insert(http::header::CONTENT_TYPE, v);
        }
        rsp
    }

    /// Serves until `stop` fires (give it a later token than the gateway's shutdown, so
    /// probes see 503 while connections drain). With `tls`, every connection must be TLS.
    pub async fn serve(
        self,
        listener: TcpListener,
        tls: Option<Arc<ServerConfig>>,
        stop: CancellationToken,
    ) {
        loop {
            let (stream, _) = tokio::select! {
                _ = stop.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let admin = self.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let rsp = admin.respond(&req);
                    async move { Ok::<_, Infallible>(rsp) }
                });
                let builder = hyper::server::conn::http1::Builder::new();
                let served = match tls {
                    Some(cfg) => {
                        match tokio::time::timeout(
                            Duration::from_secs(10),
                            strait_tls::accept(cfg, stream),
                        )
                        .await
                        {
                            Ok(Ok(s)) => builder.serve_connection(TokioIo::new(s), svc).await,
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, "admin TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        }
                    }
                    None => builder.serve_connection(TokioIo::new(stream), svc).await,
                };
                if let Err(e) = served {
                    tracing::debug!(error = %e, "admin connection ended with an error");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ready_turns_unavailable_on_shutdown() {
        let stop = CancellationToken::new();
        let admin = Admin::new(Arc::new(Registry::default()), stop.clone());
        let get = |p: &str| admin.respond(&Request::get(p).body(()).unwrap()).status();
        assert_eq!(get("/live"), StatusCode::OK);
        assert_eq!(get("/ready"), StatusCode::OK);
        assert_eq!(get("/metrics"), StatusCode::OK);
        assert_eq!(get("/nope"), StatusCode::NOT_FOUND);
        stop.cancel();
        assert_eq!(get("/ready"), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(get("/live"), StatusCode::OK);
    }
}
