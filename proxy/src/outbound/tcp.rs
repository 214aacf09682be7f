//! Opaque TCP: one endpoint per connection, bytes copied both ways.

use crate::addr::{EndpointAddr, OrigDstAddr};
use crate::connect::Endpoint;
use crate::ctx::Ctx;
use crate::discover::{EndpointMeta, Resolution};
use crate::io::{CountingIo, Io};
use crate::metrics::{Direction, Flow};
use rand::seq::IteratorRandom;
use strait_core::transport_header::TransportHeader;

/// How to reach `addr` for opaque bytes meant for it.
pub fn tcp_endpoint(addr: EndpointAddr, meta: &EndpointMeta) -> Endpoint {
    let identity = meta.identity.clone();
    match (&meta.authority_override, meta.opaque_transport, &identity) {
        (Some((host, port)), _, Some(_)) => Endpoint {
            addr,
            identity,
            transport_header: Some(TransportHeader {
                port: *port,
                name: Some(host.clone()),
                protocol: None,
            }),
        },
        (None, Some(inbound), Some(_)) => Endpoint {
            addr: EndpointAddr(std::net::SocketAddr::new(addr.0.ip(), inbound)),
            identity,
            transport_header: Some(TransportHeader {
                port: addr.0.port(),
                name: None,
                protocol: None,
            }),
        },
        _ => Endpoint {
            addr,
            identity,
            transport_header: None,
        },
    }
}

pub async fn forward<I: Io>(io: I, orig: OrigDstAddr, res: Resolution, ctx: &Ctx) {
    let (ep, dst) = match &res {
        Resolution::Endpoints(set) => {
            let Some((addr, meta)) = set.endpoints.iter().choose(&mut rand::rng()) else {
                tracing::info!(%orig, "outbound TCP: no endpoints; closing");
                ctx.metrics.tcp_error(Direction::Outbound, "no_endpoints");
                return;
            };
            (tcp_endpoint(*addr, meta), Some(set.dst.clone()))
        }
        _ => (Endpoint::plain(EndpointAddr(orig.0)), None),
    };
    let mut conn = match ctx.connector.connect(&ep).await {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(%orig, endpoint = %ep.addr, error = %e, cause = ?std::error::Error::source(&e), "outbound TCP: connect failed; closing");
            ctx.metrics.tcp_error(Direction::Outbound, e.metric_label());
            return;
        }
    };
    let target = orig.to_string();
    let labels = ctx.metrics.labels(&Flow {
        direction: Direction::Outbound,
        authority: &target,
        client_id: None,
        server_id: conn.server_id(),
        tls: conn.is_tls(),
        dst: dst.as_ref(),
    });
    let guard = ctx.metrics.tcp_open(labels);
    let mut client = CountingIo::new(io, guard.read.clone(), guard.write.clone());
    if let Err(e) = crate::io::copy_bidirectional(&mut client, &mut conn).await {
        tracing::debug!(%orig, error = %e, "outbound TCP closed with an error");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::balance::http_endpoint;
    use strait_core::transport_header::SessionProtocol;

    fn meta(id: bool) -> EndpointMeta {
        EndpointMeta {
            identity: id.then(|| {
                "strait-gateway.strait-multicluster.serviceaccount.identity.strait.cluster.local"
                    .parse()
                    .unwrap()
            }),
            h2: true,
            opaque_transport: None,
            authority_override: None,
        }
    }

    #[test]
    fn mirror_behind_a_gateway_names_the_override() {
        let addr = EndpointAddr("198.18.64.10:4143".parse().unwrap());
        let mut m = meta(true);
        m.authority_override = Some(("web.shop.svc.cluster.local".into(), 80));
        let ep = tcp_endpoint(addr, &m);
        assert_eq!(ep.addr, addr);
        let h = ep.transport_header.unwrap();
        assert_eq!(
            (h.port, h.name.as_deref()),
            (80, Some("web.shop.svc.cluster.local"))
        );
        assert_eq!(h.protocol, None);
        // HTTP: the same header; the client fills in its session protocol.
        let ep = http_endpoint(addr, &m);
        assert!(ep.transport_header.is_some());
        let _ = SessionProtocol::Http2;
    }

    #[test]
    fn opaque_transport_connects_to_the_inbound_port_with_the_original_port() {
        let addr = EndpointAddr("10.0.0.5:3306".parse().unwrap());
        let mut m = meta(true);
        m.opaque_transport = Some(4143);
        let ep = tcp_endpoint(addr, &m);
        assert_eq!(ep.addr.0.port(), 4143);
        assert_eq!(ep.transport_header.unwrap().port, 3306);
    }

    #[test]
    fn no_identity_means_plaintext_and_no_header() {
        let addr = EndpointAddr("10.0.0.5:80".parse().unwrap());
        let mut m = meta(false);
        m.authority_override = Some(("x.svc.cluster.local".into(), 80));
        m.opaque_transport = Some(4143);
        let ep = tcp_endpoint(addr, &m);
        assert_eq!(
            (ep.addr, ep.identity, ep.transport_header),
            (addr, None, None)
        );
    }
}
