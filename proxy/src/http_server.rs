//! Serving HTTP (1 and 2) on an accepted stream, going away gracefully on shutdown, and the
//! one policy that turns a failed request into the response the proxy (or the gateway)
//! sends back: [`status_for`] walks the cause chain to 502 / 503 / 504 and a bounded kind;
//! [`error_response`] carries only that kind, never the error's text (that goes to the log).

use crate::balance::Unavailable;
use crate::connect::ConnectError;
use crate::http_client::{Body, is_caused_by};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::future::Future;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

pub async fn serve<I, F, Fut>(io: I, stop: CancellationToken, handle: F)
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    F: Fn(Request<Incoming>) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let fut = handle(req);
        async move { Ok::<_, Infallible>(fut.await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let res = tokio::select! {
        res = conn.as_mut() => res,
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = res {
        tracing::debug!(error = %e, "HTTP connection closed with an error");
    }
}

/// The status for an error, walking its causes, and a bounded kind for metrics and the
/// `l5d-proxy-error` header.
pub fn status_for(e: &(dyn std::error::Error + 'static)) -> (StatusCode, &'static str) {
    if is_caused_by::<Unavailable>(e).is_some() {
        return (StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    }
    if is_caused_by::<tokio::time::error::Elapsed>(e).is_some() {
        return (StatusCode::GATEWAY_TIMEOUT, "response_timeout");
    }
    if let Some(c) = is_caused_by::<ConnectError>(e) {
        if c.is_timeout() {
            return (StatusCode::GATEWAY_TIMEOUT, "connect_timeout");
        }
        return (StatusCode::BAD_GATEWAY, c.metric_label());
    }
    (StatusCode::BAD_GATEWAY, "endpoint_failed")
}

/// A response the proxy makes itself (502, 503, 504); `msg` is a bounded kind.
pub fn error_response(status: http::StatusCode, msg: &str) -> Response<Body> {
    use http_body_util::BodyExt;
    let body = http_body_util::Full::new(bytes::Bytes::from(format!("{msg}\n")))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut rsp = Response::new(body);
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        "l5d-proxy-error",
        http::HeaderValue::from_str(msg).unwrap_or(http::HeaderValue::from_static("error")),
    );
    rsp
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::addr::EndpointAddr;
    use crate::http_client::BoxError;

    fn boxed(e: impl std::error::Error + Send + Sync + 'static) -> BoxError {
        Box::new(e)
    }

    #[tokio::test]
    async fn errors_map_to_502_503_504() {
        let addr = EndpointAddr("10.0.0.1:80".parse().unwrap());
        let timeout = ConnectError::Timeout {
            addr,
            timeout: std::time::Duration::from_secs(1),
        };
        assert_eq!(status_for(&*boxed(timeout)).0, StatusCode::GATEWAY_TIMEOUT);
        let refused = ConnectError::Tcp {
            addr,
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        assert_eq!(status_for(&*boxed(refused)).0, StatusCode::BAD_GATEWAY);
        let none = Unavailable(std::time::Duration::ZERO);
        assert_eq!(status_for(&*boxed(none)).0, StatusCode::SERVICE_UNAVAILABLE);
        let elapsed = tokio::time::timeout(
            std::time::Duration::from_millis(1),
            std::future::pending::<()>(),
        )
        .await
        .unwrap_err();
        assert_eq!(status_for(&*boxed(elapsed)).0, StatusCode::GATEWAY_TIMEOUT);
    }

    #[tokio::test]
    async fn error_bodies_carry_the_kind_only() {
        use http_body_util::BodyExt;
        let rsp = error_response(StatusCode::BAD_GATEWAY, "connect_refused");
        assert_eq!(rsp.headers()["l5d-proxy-error"], "connect_refused");
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"connect_refused\n");
    }
}
