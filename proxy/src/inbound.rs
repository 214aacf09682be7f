//! Inbound (4143): what peers send to the local application.
//!
//! ```text
//!  accept ─► peek: TLS ClientHello? ── yes ─► mTLS (client cert optional unless required)
//!         │                                   └─ ALPN transport.l5d.io/v1 ─► read header
//!         └─ no ─► plaintext (refused when STRAIT_PROXY_INBOUND_REQUIRE_IDENTITY)
//!  target = 127.0.0.1:<header port | SO_ORIGINAL_DST port>   (or the explicit target)
//!  detect ─► HTTP: per-request forwarding (l5d-orig-proto downgraded) │ TCP: copy bytes
//! ```

use crate::addr::EndpointAddr;
use crate::balance::L5D_ORIG_PROTO;
use crate::connect::Endpoint;
use crate::ctx::Ctx;
use crate::detect::{self, Protocol};
use crate::header::{self, HeaderError};
use crate::http_client::{Body, EndpointClient};
use crate::http_server::error_response;
use crate::http_server::status_for;
use crate::io::{BoxIo, CountingIo, PrefixedIo};
use crate::metrics::{Direction, Flow, HttpSeries};
use crate::outbound::http::success;
use crate::policy::Protocol as PortProtocol;
use crate::policy::enforce::Enforcer;
use http::{HeaderValue, Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use strait_core::identity::Identity;
use strait_core::transport_header::{self, SessionProtocol, TransportHeader};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

pub async fn serve(listener: TcpListener, ctx: Ctx) {
    crate::ctx::accept_loop(listener, ctx, "inbound", handle).await;
}

#[derive(Debug, thiserror::Error)]
enum InboundError {
    #[error("detection timed out")]
    Timeout,
    #[error("I/O")]
    Io(#[from] std::io::Error),
    #[error("TLS")]
    Tls(#[from] strait_tls::TlsError),
    #[error("transport header")]
    Header(#[from] HeaderError),
    #[error("client has no identity and one is required")]
    IdentityRequired,
    #[error("no target port (not redirected and no transport header)")]
    NoTarget,
}

impl InboundError {
    fn metric_label(&self) -> &'static str {
        match self {
            Self::Timeout => "detect_timeout",
            Self::Io(_) => "io",
            Self::Tls(_) => "tls_handshake",
            Self::Header(HeaderError::Timeout) => "detect_timeout",
            Self::Header(e) if e.is_too_long() => "transport_header_too_long",
            Self::Header(HeaderError::Eof(_) | HeaderError::Io(_)) => "io",
            Self::Header(_) => "transport_header",
            Self::IdentityRequired => "identity_required",
            Self::NoTarget => "no_target",
        }
    }
}

async fn handle(tcp: TcpStream, peer: SocketAddr, ctx: Ctx) {
    if let Err(e) = handle_inner(tcp, peer, &ctx).await {
        tracing::info!(%peer, error = %e, cause = ?std::error::Error::source(&e), "inbound connection refused");
        ctx.metrics.tcp_error(Direction::Inbound, e.metric_label());
    }
}

async fn handle_inner(tcp: TcpStream, peer: SocketAddr, ctx: &Ctx) -> Result<(), InboundError> {
    let local = tcp.local_addr()?;
    let orig = crate::orig_dst::original_dst(&tcp)
        .ok()
        .filter(|o| o.0 != local);
    let mut first = [0u8; 1];
    let n = tokio::time::timeout(ctx.cfg.detect_timeout, tcp.peek(&mut first))
        .await
        .map_err(|_| InboundError::Timeout)??;
    let (io, client_id, tls, header): (BoxIo, Option<Identity>, bool, Option<TransportHeader>) =
        if n == 1 && first[0] == 0x16 {
            let tls = tokio::time::timeout(
                ctx.cfg.detect_timeout,
                strait_tls::accept(ctx.tls_server.clone(), tcp),
            )
            .await
            .map_err(|_| InboundError::Timeout)??;
            let client_id = strait_tls::peer_identity(tls.get_ref().1).ok();
            let alpn = tls.get_ref().1.alpn_protocol() == Some(transport_header::ALPN);
            if ctx.cfg.inbound_require_identity && client_id.is_none() {
                return Err(InboundError::IdentityRequired);
            }
            if alpn {
                let mut tls = tls;
                let header = header::read(&mut tls, ctx.cfg.detect_timeout).await?;
                (Box::new(tls), client_id, true, Some(header))
            } else {
                (Box::new(tls), client_id, true, None)
            }
        } else {
            if ctx.cfg.inbound_require_identity {
                return Err(InboundError::IdentityRequired);
            }
            (Box::new(tcp), None, false, None)
        };
    let port = match (&header, orig) {
        (Some(h), _) => h.port,
        (None, Some(o)) => o.0.port(),
        (None, None) => match ctx.cfg.inbound_target {
            Some(t) => t.port(),
            None => return Err(InboundError::NoTarget),
        },
    };
    let target = match ctx.cfg.inbound_target {
        Some(t) => SocketAddr::new(t.ip(), port),
        None => SocketAddr::from(([127, 0, 0, 1], port)),
    };
    let enforcer = ctx
        .policies
        .enforcer(
            port,
            (peer.ip(), tls, client_id.clone()),
            ctx.metrics.identity_label(client_id.as_ref()),
            &ctx.metrics.authz,
            ctx.cfg.discovery_timeout,
        )
        .await;
    let proto = header.as_ref().and_then(|h| h.protocol);
    let (proto, io) = match (proto, enforcer.as_ref().map(Enforcer::protocol)) {
        (Some(SessionProtocol::Http1), _) => {
            (Protocol::Http1, PrefixedIo::new(bytes::Bytes::new(), io))
        }
        (Some(SessionProtocol::Http2), _) => {
            (Protocol::H2, PrefixedIo::new(bytes::Bytes::new(), io))
        }
        (None, Some(PortProtocol::Opaque)) => {
            (Protocol::Opaque, PrefixedIo::new(bytes::Bytes::new(), io))
        }
        (None, Some(PortProtocol::Detect(timeout))) => detect::detect(io, timeout).await?,
        (None, _) => detect::detect(io, ctx.cfg.detect_timeout).await?,
    };
    let authority = target.to_string();
    let labels = ctx.metrics.labels(&Flow {
        direction: Direction::Inbound,
        authority: &authority,
        client_id: client_id.as_ref(),
        server_id: None,
        tls,
        dst: None,
    });
    let guard = ctx.metrics.tcp_open(labels.clone());
    let mut io = CountingIo::new(io, guard.read.clone(), guard.write.clone());
    let ep = Endpoint::plain(EndpointAddr(target));
    tracing::debug!(%target, ?proto, ?client_id, "inbound connection");
    match proto {
        Protocol::Http1 | Protocol::H2 => {
            let st = Arc::new(HttpConn {
                client: ctx.app_clients.get(&ctx.connector, target),
                series: ctx.metrics.http_series(labels),
                enforcer,
                ctx: ctx.clone(),
            });
            crate::http_server::serve(io, ctx.stop.clone(), move |req| forward(req, st.clone()))
                .await;
        }
        Protocol::Opaque => {
            if enforcer.as_ref().is_some_and(|e| !e.admit_tcp()) {
                return Ok(());
            }
            let mut app = match ctx.connector.connect(&ep).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::info!(%target, error = %e, "inbound: app unreachable; closing");
                    ctx.metrics.tcp_error(Direction::Inbound, e.metric_label());
                    return Ok(());
                }
            };
            let copy = crate::io::copy_bidirectional(&mut io, &mut app);
            match enforcer {
                // A policy change that no longer allows the connection closes it.
                Some(e) => {
                    tokio::select! {
                        _ = copy => {}
                        () = e.revoked() => {}
                    }
                }
                None => {
                    let _ = copy.await;
                }
            }
        }
    }
    Ok(())
}

/// What every request of one inbound HTTP connection shares.
struct HttpConn {
    client: EndpointClient,
    series: HttpSeries,
    enforcer: Option<Enforcer>,
    ctx: Ctx,
}

async fn forward(req: Request<Incoming>, st: Arc<HttpConn>) -> Response<Body> {
    let HttpConn {
        client,
        series,
        enforcer,
        ctx,
    } = &*st;
    let start = Instant::now();
    let mut req = match enforcer {
        Some(e) => {
            let (parts, body) = req.into_parts();
            if let Some(refused) = e.admit_http(&parts) {
                series.request();
                series.response(refused.status().as_u16(), false, start.elapsed());
                return refused;
            }
            Request::from_parts(parts, body)
        }
        None => req,
    };
    let was_h2 = req.version() == Version::HTTP_2;
    let downgrade = req.headers_mut().remove(L5D_ORIG_PROTO).is_some();
    series.request();
    let fut = client.send(req, was_h2 && !downgrade);
    match tokio::time::timeout(ctx.cfg.request_timeout, fut).await {
        Ok(Ok(mut rsp)) => {
            series.response(rsp.status().as_u16(), success(&rsp), start.elapsed());
            if downgrade {
                *rsp.version_mut() = Version::HTTP_2;
                rsp.headers_mut()
                    .insert(L5D_ORIG_PROTO, HeaderValue::from_static("HTTP/1.1"));
            }
            rsp.map(|b| b.map_err(Into::into).boxed_unsync())
        }
        Ok(Err(e)) => {
            let (status, kind) = status_for(&*e);
            tracing::info!(error = %e, %status, "inbound request failed");
            ctx.metrics.http_error(Direction::Inbound, kind);
            series.response(status.as_u16(), false, start.elapsed());
            error_response(status, kind)
        }
        Err(_) => {
            ctx.metrics
                .http_error(Direction::Inbound, "response_timeout");
            series.response(504, false, start.elapsed());
            error_response(http::StatusCode::GATEWAY_TIMEOUT, "response_timeout")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_core::transport_header::DecodeError;

    #[test]
    fn header_failures_have_their_own_labels() {
        let label = |e: HeaderError| InboundError::Header(e).metric_label();
        assert_eq!(label(HeaderError::Timeout), "detect_timeout");
        assert_eq!(
            label(HeaderError::Decode(DecodeError::TooLong(1 << 20))),
            "transport_header_too_long"
        );
        assert_eq!(
            label(HeaderError::BufferFull(transport_header::MAX_LEN)),
            "transport_header_too_long"
        );
        assert_eq!(label(HeaderError::Eof(3)), "io");
        assert_eq!(
            label(HeaderError::Decode(DecodeError::BadPreface)),
            "transport_header"
        );
    }
}
