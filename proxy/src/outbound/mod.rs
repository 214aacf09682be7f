//! Outbound (4140): what the local application sends out.
//!
//! ```text
//!  accept ─► original destination (SO_ORIGINAL_DST | explicit target)
//!         ─► resolve and outbound policy (both start now)
//!         ─► protocol: the Service's outbound policy (opaque: no detection; detect: with its
//!            timeout), else STRAIT_PROXY_OPAQUE_PORTS, else detect
//!         ─► http::serve | tcp::forward
//! ```

pub mod http;
pub mod tcp;

use crate::addr::OrigDstAddr;
use crate::ctx::Ctx;
use crate::detect::{self, Protocol};
use crate::discover::{self, Resolution};
use crate::io::PrefixedIo;
use crate::metrics::Direction;
use crate::policy::outbound::Outbound;
use crate::policy::{self, Protocol as PolicyProtocol};
use tokio::net::{TcpListener, TcpStream};

pub async fn serve(listener: TcpListener, ctx: Ctx) {
    crate::ctx::accept_loop(listener, ctx, "outbound", handle).await;
}

async fn handle(tcp: TcpStream, _peer: std::net::SocketAddr, ctx: Ctx) {
    let orig = match ctx.cfg.outbound_target {
        Some(t) => OrigDstAddr(t),
        None => match crate::orig_dst::original_dst(&tcp) {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "outbound: no original destination; closing");
                ctx.metrics
                    .tcp_error(Direction::Outbound, "no_original_dst");
                return;
            }
        },
    };
    if tcp.local_addr().ok() == Some(orig.0) {
        tracing::warn!(%orig, "outbound: connection to the proxy itself; closing");
        ctx.metrics.tcp_error(Direction::Outbound, "loop");
        return;
    }
    let target = orig.to_string();
    let mut rx = ctx.resolver.resolve(&target);
    let mut policy_rx = ctx.policies.outbound(orig.0);
    let policy = policy::first_outbound(&mut policy_rx, ctx.cfg.discovery_timeout).await;
    let detect_timeout = match policy {
        Outbound::Service(PolicyProtocol::Opaque) => None,
        Outbound::Service(PolicyProtocol::Detect(t)) => Some(t),
        _ if ctx.cfg.opaque_ports.contains(&orig.0.port()) => None,
        _ => Some(ctx.cfg.detect_timeout),
    };
    let (proto, io) = match detect_timeout {
        None => (Protocol::Opaque, PrefixedIo::new(bytes::Bytes::new(), tcp)),
        Some(timeout) => match detect::detect(tcp, timeout).await {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, "outbound: read failed during detection");
                return;
            }
        },
    };
    let res = discover::first_answer(&mut rx, ctx.cfg.discovery_timeout).await;
    let opaque_hint = matches!(&res, Resolution::Endpoints(set)
        if set.endpoints.values().any(|m| m.opaque_transport.is_some()));
    tracing::debug!(%orig, ?proto, ?policy, "outbound connection");
    match proto {
        Protocol::Http1 | Protocol::H2 if !opaque_hint => {
            http::serve(io, orig, rx, ctx).await;
        }
        _ => tcp::forward(io, orig, res, &ctx).await,
    }
}
