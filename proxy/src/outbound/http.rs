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
use crate::metrics::{Direction, DstLabels, Flow, HttpSeries};
use http::{HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::sync::{Arc, Mutex};
use strait_core::identity::Identity;
use tokio::sync::watch;
use tokio::time::Instant;
use tower::Service;

struct Conn {
    orig: OrigDstAddr,
    target: String,
    rx: watch::Receiver<Resolution>,
    ctx: Ctx,
    fallback: EndpointSvc,
    /// The metric series this connection's requests used, newest last: a request whose
    /// authority, server and destination match one reuses it without building labels.
    series: Mutex<Vec<(SeriesKey, HttpSeries)>>,
}

/// What tells one outbound series from another on a connection.
#[derive(Debug, PartialEq, Eq)]
struct SeriesKey {
    authority: String,
    server_id: Option<Identity>,
    dst: Option<DstLabels>,
}

/// The series a connection keeps; beyond these, the least recently used goes.
const SERIES_PER_CONN: usize = 8;

impl Conn {
    fn series(
        &self,
        authority: &str,
        server_id: Option<&Identity>,
        dst: Option<&DstLabels>,
    ) -> HttpSeries {
        let matches = |k: &SeriesKey| {
            k.authority == authority && k.server_id.as_ref() == server_id && k.dst.as_ref() == dst
        };
        let Ok(mut cached) = self.series.lock() else {
            return self.new_series(authority, server_id, dst);
        };
        if let Some(i) = cached.iter().rposition(|(k, _)| matches(k)) {
            let hit = cached.remove(i);
            let series = hit.1.clone();
            cached.push(hit);
            return series;
        }
        let series = self.new_series(authority, server_id, dst);
        if cached.len() == SERIES_PER_CONN {
            cached.remove(0);
        }
        let key = SeriesKey {
            authority: authority.to_owned(),
            server_id: server_id.cloned(),
            dst: dst.cloned(),
        };
        cached.push((key, series.clone()));
        series
    }

    fn new_series(
        &self,
        authority: &str,
        server_id: Option<&Identity>,
        dst: Option<&DstLabels>,
    ) -> HttpSeries {
        let m = &self.ctx.metrics;
        m.http_series(m.labels(&Flow {
            direction: Direction::Outbound,
            authority,
            client_id: None,
            server_id,
            tls: server_id.is_some(),
            dst,
        }))
    }
}

/// A request's authority, kept without copying it: the URI's, else the Host header's.
enum Authority {
    Uri(http::uri::Authority),
    Host(HeaderValue),
    Target,
}

impl Authority {
    fn of<B>(req: &Request<B>) -> Self {
        if let Some(a) = req.uri().authority() {
            return Self::Uri(a.clone());
        }
        match req.headers().get(http::header::HOST) {
            Some(h) if h.to_str().is_ok() => Self::Host(h.clone()),
            _ => Self::Target,
        }
    }

    fn as_str<'a>(&'a self, target: &'a str) -> &'a str {
        match self {
            Self::Uri(a) => a.as_str(),
            Self::Host(h) => h.to_str().unwrap_or(target),
            Self::Target => target,
        }
    }
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
        series: Mutex::new(Vec::new()),
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
    let authority = Authority::of(&req);
    let res = c.rx.borrow().clone();
    let timeout = ctx.cfg.request_timeout;
    let (dst, result): (_, Result<Response<Incoming>, BoxError>) = match res {
        Resolution::Endpoints(set) if set.endpoints.is_empty() => (
            Some(set),
            Err(Unavailable(std::time::Duration::ZERO).into()),
        ),
        Resolution::Endpoints(set) => {
            let b = ctx.balancers.get(&c.target, &c.rx, &ctx.connector);
            let r = tokio::time::timeout(timeout, b.call(req, ctx.cfg.connect_timeout)).await;
            (Some(set), r.map_err(Into::into).and_then(|r| r))
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
    let authority = authority.as_str(&c.target);
    let series = c.series(authority, server_id.as_ref(), dst.as_ref().map(|s| &s.dst));
    series.request();
    match result {
        Ok(rsp) => {
            let status = rsp.status();
            let ok = success(&rsp);
            series.response(status.as_u16(), ok, start.elapsed());
            rsp.map(|b| b.map_err(Into::into).boxed_unsync())
        }
        Err(e) => {
            let (status, kind) = status_for(&*e);
            tracing::info!(orig = %c.orig, %authority, error = %e, cause = ?e.source(), %status, "outbound request failed");
            ctx.metrics.http_error(Direction::Outbound, kind);
            series.response(status.as_u16(), false, start.elapsed());
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
