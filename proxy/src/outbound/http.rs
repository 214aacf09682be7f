//! Outbound HTTP: each request goes to the target's balancer (or, when the target is not
//! discoverable, to its original address); errors become 502 / 503 / 504
//! ([`status_for`]).

use crate::addr::{EndpointAddr, OrigDstAddr};
use crate::balance::{EndpointSvc, ServerInfo, Unavailable};
use crate::ctx::Ctx;
use crate::discover::{EndpointMeta, Resolution};
use crate::http_client::{Body, BoxError};
use crate::http_server::{error_response, status_for};
use crate::io::Io;
use crate::metrics::{Direction, Flow};
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::time::Instant;
use tower::Service;

struct Conn {
    orig: OrigDstAddr,
    target: String,
    rx: watch::Receiver<Resolution>,
    ctx: Ctx,
    fallback: EndpointSvc,
}

pub async fn serve<I: Io>(io: I, orig: OrigDstAddr, rx: watch::Receiver<Resolution>, ctx: Ctx) {
    let meta = EndpointMeta {
        identity: None,
        h2: false,
        opaque_transport: None,
        authority_override: None,
    };
    let conn = Arc::new(Conn {
        orig,
        target: orig.to_string(),
        rx,
        fallback: EndpointSvc::new(&ctx.connector, EndpointAddr(orig.0), meta),
        ctx: ctx.clone(),
    });
    let guard = ctx.metrics.tcp_open(ctx.metrics.labels(&Flow {
        direction: Direction::Outbound,
        authority: &conn.target,
        client_id: None,
        server_id: None,
        tls: false,
        dst: None,
    }));
    let io = crate::io::CountingIo::new(io, guard.read.clone(), guard.write.clone());
    crate::http_server::serve(io, ctx.stop.clone(), move |req| route(req, conn.clone())).await;
}

async fn route(req: Request<Incoming>, c: Arc<Conn>) -> Response<Body> {
    let start = Instant::now();
    let ctx = &c.ctx;
    let authority = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| c.target.clone());
    let res = c.rx.borrow().clone();
    let timeout = ctx.cfg.request_timeout;
    let (dst, result): (_, Result<Response<Incoming>, BoxError>) = match res {
        Resolution::Endpoints(set) if set.endpoints.is_empty() => (
            Some(set.dst.clone()),
            Err(Unavailable(std::time::Duration::ZERO).into()),
        ),
        Resolution::Endpoints(set) => {
            let b = ctx.balancers.get(&c.target, &c.rx, &ctx.connector);
            let r = tokio::time::timeout(timeout, b.call(req, ctx.cfg.connect_timeout)).await;
            (Some(set.dst.clone()), r.map_err(Into::into).and_then(|r| r))
        }
        _ => {
            let mut svc = c.fallback.clone();
            let r = tokio::time::timeout(timeout, svc.call(req)).await;
            (None, r.map_err(Into::into).and_then(|r| r))
        }
    };
    let server_id = result
        .as_ref()
        .ok()
        .and_then(|r| r.extensions().get::<ServerInfo>())
        .and_then(|s| s.id.clone());
    let labels = ctx.metrics.labels(&Flow {
        direction: Direction::Outbound,
        authority: &authority,
        client_id: None,
        server_id: server_id.as_ref(),
        tls: server_id.is_some(),
        dst: dst.as_ref(),
    });
    ctx.metrics.request(&labels);
    match result {
        Ok(rsp) => {
            let status = rsp.status();
            let ok = success(&rsp);
            ctx.metrics
                .response(labels, status.as_u16(), ok, start.elapsed());
            rsp.map(|b| b.map_err(Into::into).boxed_unsync())
        }
        Err(e) => {
            let (status, kind) = status_for(&*e);
            tracing::info!(orig = %c.orig, %authority, error = %e, cause = ?e.source(), %status, "outbound request failed");
            ctx.metrics.http_error(Direction::Outbound, kind);
            ctx.metrics
                .response(labels, status.as_u16(), false, start.elapsed());
            error_response(status, kind)
        }
    }
}

/// 5xx and a non-zero gRPC status in the headers are failures.
pub fn success<B>(rsp: &Response<B>) -> bool {
    if rsp.status().is_server_error() {
        return false;
    }
    match rsp.headers().get("grpc-status") {
        Some(v) => v.as_bytes() == b"0",
        None => true,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn grpc_status_classifies() {
        let ok = Response::builder()
            .header("grpc-status", "0")
            .body(())
            .unwrap();
        let bad = Response::builder()
            .header("grpc-status", "14")
            .body(())
            .unwrap();
        let e500 = Response::builder().status(500).body(()).unwrap();
        assert!(success(&ok));
        assert!(!success(&bad));
        assert!(!success(&e500));
    }
}
