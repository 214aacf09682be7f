//! Outbound (4140): what the local application sends out.
//!
//! ```text
//!  accept ─► original destination (SO_ORIGINAL_DST | explicit target)
//!         ─► resolve (starts now, in parallel with detection)
//!         ─► detect (skipped for opaque ports) ─► http::serve | tcp::forward
//! ```

pub mod http;
pub mod tcp;

use crate::addr::OrigDstAddr;
use crate::ctx::Ctx;
use crate::detect::{self, Protocol};
use crate::discover::{self, Resolution};
use crate::io::PrefixedIo;
use crate::metrics::Direction;
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
    let (proto, io) = if ctx.cfg.opaque_ports.contains(&orig.0.port()) {
        (Protocol::Opaque, PrefixedIo::new(bytes::Bytes::new(), tcp))
    } else {
        match detect::detect(tcp, ctx.cfg.detect_timeout).await {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, "outbound: read failed during detection");
                return;
            }
        }
    };
    let res = discover::first_answer(&mut rx, ctx.cfg.discovery_timeout).await;
    let opaque_hint = matches!(&res, Resolution::Endpoints(set)
        if set.endpoints.values().any(|m| m.opaque_transport.is_some()));
    tracing::debug!(%orig, ?proto, "outbound connection");
    match proto {
        Protocol::Http1 | Protocol::H2 if !opaque_hint => {
            http::serve(io, orig, rx, ctx).await;
        }
        _ => tcp::forward(io, orig, res, &ctx).await,
    }
}
