//! The admin server (4191): `/live`, `/ready`, `/metrics`.
//!
//! `/live` answers 200 while the process serves at all; `/ready` answers 200 once the
//! readiness check passes (for the proxy: it holds a certificate), 503 before; `/metrics` is
//! the Prometheus text encoding of the registry. The gateway serves the same server with its
//! own registry and check (ready until shutdown begins), over TLS with its certificate so
//! the mirror controller's prober can verify its identity.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::registry::Registry;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use strait_tls::rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

type ReadyFn = dyn Fn() -> bool + Send + Sync;

/// Bound on an admin client's TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the admin server reports; cheap to clone.
#[derive(Clone)]
pub struct Admin {
    registry: Arc<Registry>,
    ready: Arc<ReadyFn>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

impl Admin {
    pub fn new(registry: Arc<Registry>, ready: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        Self {
            registry,
            ready: Arc::new(ready),
        }
    }

    /// Answers one admin request (no I/O).
    pub fn handle<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        let text = |status: StatusCode, body: String| {
            let mut rsp = Response::new(Full::new(Bytes::from(body)));
            *rsp.status_mut() = status;
            rsp
        };
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
        }
        match req.uri().path() {
            "/live" => text(StatusCode::OK, "live\n".into()),
            "/ready" if (self.ready)() => text(StatusCode::OK, "ready\n".into()),
            "/ready" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into()),
            "/metrics" => {
                let mut body = String::new();
                if prometheus_client::encoding::text::encode(&mut body, &self.registry).is_err() {
                    return text(StatusCode::INTERNAL_SERVER_ERROR, "encode failed\n".into());
                }
                let mut rsp = text(StatusCode::OK, body);
                rsp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                rsp
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
        }
    }
}

/// Serves `admin` on `listener` until `shutdown` completes. With `tls`, every connection
/// must be TLS.
pub async fn serve(
    listener: TcpListener,
    admin: Admin,
    tls: Option<Arc<ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let stop = CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            res = listener.accept() => match res {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let admin = admin.clone();
        let stop = stop.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let io: crate::io::BoxIo = match tls {
                None => Box::new(tcp),
                Some(cfg) => {
                    let accept = strait_tls::accept(cfg, tcp);
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
                        Ok(Ok(tls)) => Box::new(tls),
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "admin TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    }
                }
            };
            let svc = hyper::service::service_fn(move |req| {
                let rsp = admin.handle(&req);
                async move { Ok::<_, std::convert::Infallible>(rsp) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(io), svc);
            tokio::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res { tracing::debug!(error = %e, "admin connection"); }
                }
                () = stop.cancelled() => {}
            }
        });
    }
    stop.cancel();
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn get(path: &str) -> Request<()> {
        Request::get(path).body(()).unwrap()
    }

    #[test]
    fn ready_follows_the_check() {
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        let admin = Admin::new(Arc::new(Registry::default()), move || {
            f.load(Ordering::SeqCst)
        });
        assert_eq!(admin.handle(&get("/live")).status(), StatusCode::OK);
        assert_eq!(
            admin.handle(&get("/ready")).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        flag.store(true, Ordering::SeqCst);
        assert_eq!(admin.handle(&get("/ready")).status(), StatusCode::OK);
        assert_eq!(admin.handle(&get("/metrics")).status(), StatusCode::OK);
        assert_eq!(admin.handle(&get("/nope")).status(), StatusCode::NOT_FOUND);
    }
}
