//! The server side: the 4143 listener and what happens to each accepted connection.
//!
//! ```text
//! accept ─► mTLS (client cert under the anchor) ─► ALPN transport.l5d.io/v1 ─► not a loop
//!        ─► allowed identity ─► transport header (≤ 64 KiB, deadline) ─► name under svc.<domain>
//!        ─► resolve (destination Get) ─► connect (mTLS + header, or plain TCP)
//!        ─► HTTP/1 | HTTP/2 (Forwarded, Host) | opaque copy
//! ```
//!
//! Every step that fails closes the connection with one log line and one increment of
//! `gateway_refused_total{reason}`.

use crate::authz::PolicyRx;
use crate::connect::{Connector, Io};
use crate::error::{Refusal, ResolveError};
use crate::metrics::{BytesLabels, Direction, Metrics, RouteLabels};
use crate::resolve::{Endpoint, Resolve, RoundRobin, Target};
use crate::{header, http, opaque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use strait_core::identity::Identity;
use strait_core::transport_header::{ALPN, TransportHeader};
use strait_tls::rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The gateway's behaviour, independent of where its parts come from.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// This gateway's own identity: `Forwarded: by=`, and the loop check.
    pub identity: Identity,
    /// Targets must be `<svc>.<ns>.svc.<cluster_domain>`.
    pub cluster_domain: String,
    /// Refuse targets without a TLS identity instead of forwarding in plaintext.
    pub forbid_plaintext: bool,
    /// Bound on the client's TLS handshake.
    pub handshake_timeout: Duration,
    /// Bound on receiving the transport header after the handshake.
    pub header_timeout: Duration,
}

/// A gateway: clone it freely; all clones share state.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    config: GatewayConfig,
    tls: Arc<ServerConfig>,
    policy: PolicyRx,
    resolver: Arc<dyn Resolve>,
    connector: Connector,
    metrics: Metrics,
    rr: RoundRobin,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Decrements the open-connections gauge when a connection ends.
struct OpenGuard(prometheus_client::metrics::gauge::Gauge);
impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Gateway {
    /// `tls` must require client certificates and offer ALPN `transport.l5d.io/v1`
    /// (see [`crate::tls_configs`]).
    pub fn new(
        config: GatewayConfig,
        tls: Arc<ServerConfig>,
        policy: PolicyRx,
        resolver: Arc<dyn Resolve>,
        connector: Connector,
        metrics: Metrics,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                tls,
                policy,
                resolver,
                connector,
                metrics,
                rr: RoundRobin::default(),
            }),
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Accepts connections until `shutdown` fires, then waits at most `drain` for open
    /// connections to finish (HTTP connections are asked to close after their in-flight
    /// requests) and aborts the rest.
    pub async fn serve(&self, listener: TcpListener, shutdown: CancellationToken, drain: Duration) {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, addr)) => {
                        let _ = stream.set_nodelay(true);
                        let gw = self.clone();
                        let sd = shutdown.clone();
                        conns.spawn(async move {
                            let _ = gw.serve_connection(stream, addr, sd).await;
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off briefly.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
            while conns.try_join_next().is_some() {}
        }
        drop(listener);
        tracing::info!(
            open = conns.len(),
            ?drain,
            "shutting down: draining connections"
        );
        let drained =
            tokio::time::timeout(drain, async { while conns.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(open = conns.len(), "drain bound reached; closing the rest");
            conns.abort_all();
            while conns.join_next().await.is_some() {}
        }
    }

    /// Serves one accepted connection; a refusal is logged and counted before it returns.
    pub async fn serve_connection<S: Io>(
        &self,
        io: S,
        client_addr: SocketAddr,
        shutdown: CancellationToken,
    ) -> Result<(), Refusal> {
        let m = &self.inner.metrics;
        m.open.inc();
        let _open = OpenGuard(m.open.clone());
        let result = self.forward(io, client_addr, shutdown).await;
        if let Err(r) = &result {
            m.refuse(r.metric_label());
            tracing::info!(client = %client_addr, reason = r.metric_label(), error = %r, "connection refused");
        }
        result
    }

    async fn forward<S: Io>(
        &self,
        io: S,
        client_addr: SocketAddr,
        shutdown: CancellationToken,
    ) -> Result<(), Refusal> {
        let cfg = &self.inner.config;
        let started = Instant::now();
        let mut tls = match tokio::time::timeout(
            cfg.handshake_timeout,
            strait_tls::accept(self.inner.tls.clone(), io),
        )
        .await
        {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return Err(Refusal::from_handshake(e)),
            Err(_) => return Err(Refusal::HandshakeTimeout),
        };
        let client_id = {
            let conn = tls.get_ref().1;
            if conn.alpn_protocol() != Some(ALPN) {
                return Err(Refusal::NoAlpn);
            }
            strait_tls::peer_identity(conn).map_err(|e| Refusal::NoIdentity(Box::new(e)))?
        };
        self.authorize(&client_id)?;
        let header = header::read(&mut tls, cfg.header_timeout)
            .await
            .map_err(Refusal::Header)?;
        let target = target_of(&header, &cfg.cluster_domain)?;

        let endpoints = self
            .inner
            .resolver
            .resolve(&target)
            .await
            .map_err(|source| Refusal::Resolve {
                target: target.to_string(),
                source: Box::new(source),
            })?;
        let (endpoint, upstream) = self.connect(&target, &endpoints, &header).await?;

        let m = &self.inner.metrics;
        let labels = RouteLabels {
            client_id: client_id.to_string(),
            target: target.to_string(),
        };
        m.connect_latency
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        m.connections.get_or_create(&labels).inc();
        let bytes = |direction| {
            m.bytes
                .get_or_create(&BytesLabels {
                    client_id: labels.client_id.clone(),
                    target: labels.target.clone(),
                    direction,
                })
                .clone()
        };
        let client = strait_proxy::io::CountingIo::new(
            tls,
            bytes(Direction::ToTarget),
            bytes(Direction::ToClient),
        );
        tracing::debug!(client = %client_addr, %client_id, %target, endpoint = %endpoint.addr, protocol = ?header.protocol, "forwarding");

        match header.protocol {
            None => {
                if let Err(e) = opaque::forward(client, upstream).await {
                    tracing::debug!(%client_id, %target, error = %e, "opaque connection ended with an error");
                }
            }
            Some(protocol) => {
                let route = http::RouteInfo {
                    gateway_id: cfg.identity.to_string(),
                    client_id: labels.client_id.clone(),
                    target: target.clone(),
                    protocol,
                };
                let fwd = http::Forwarder::new(
                    route,
                    endpoint,
                    self.inner.connector.clone(),
                    m.requests.get_or_create(&labels).clone(),
                    m.request_latency.get_or_create(&labels).clone(),
                );
                if let Err(e) = http::serve(client, fwd, upstream, shutdown).await {
                    tracing::debug!(%client_id, %target, error = %e, "HTTP connection ended with an error");
                }
            }
        }
        Ok(())
    }

    fn authorize(&self, id: &Identity) -> Result<(), Refusal> {
        if *id == self.inner.config.identity {
            return Err(Refusal::Loop(Box::new(id.clone())));
        }
        if !self.inner.policy.borrow().allows(id) {
            return Err(Refusal::Unauthorized(Box::new(id.clone())));
        }
        Ok(())
    }

    /// Tries up to three endpoints, round robin.
    async fn connect(
        &self,
        target: &Target,
        endpoints: &[Endpoint],
        header: &TransportHeader,
    ) -> Result<(Endpoint, crate::connect::BoxIo), Refusal> {
        let mut last = None;
        for _ in 0..endpoints.len().min(3) {
            let Some(ep) = self.inner.rr.pick(endpoints) else {
                break;
            };
            if ep.identity.is_none() && self.inner.config.forbid_plaintext {
                return Err(Refusal::PlaintextForbidden(format!(
                    "{target} ({})",
                    ep.addr
                )));
            }
            match self.inner.connector.connect(ep, header.protocol).await {
                Ok(io) => return Ok((ep.clone(), io)),
                Err(e) => {
                    tracing::debug!(%target, endpoint = %ep.addr, error = %e, "endpoint failed");
                    last = Some(e);
                }
            }
        }
        match last {
            Some(source) => Err(Refusal::Connect {
                target: target.to_string(),
                source: Box::new(source),
            }),
            None => Err(Refusal::Resolve {
                target: target.to_string(),
                source: Box::new(ResolveError::NoEndpoints),
            }),
        }
    }
}

/// The target a header names: `<svc>.<ns>.svc.<cluster_domain>` (a trailing dot and case
/// are ignored) and its port.
pub fn target_of(header: &TransportHeader, cluster_domain: &str) -> Result<Target, Refusal> {
    let outside = |n: &str| Refusal::NameOutsideDomain(n.to_owned(), cluster_domain.to_owned());
    let raw = header.name.as_deref().ok_or_else(|| outside(""))?;
    let name = raw.strip_suffix('.').unwrap_or(raw).to_ascii_lowercase();
    let domain = cluster_domain.trim_end_matches('.').to_ascii_lowercase();
    let prefix = name
        .strip_suffix(&format!(".svc.{domain}"))
        .ok_or_else(|| outside(raw))?;
    match prefix.split('.').collect::<Vec<_>>()[..] {
        [svc, ns]
            if strait_core::identity::is_dns_label(svc)
                && strait_core::identity::is_dns_label(ns) =>
        {
            Ok(Target {
                name,
                port: header.port,
            })
        }
        _ => Err(outside(raw)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn h(name: Option<&str>) -> TransportHeader {
        TransportHeader {
            port: 80,
            name: name.map(str::to_owned),
            protocol: None,
        }
    }

    #[test]
    fn names_must_be_services_in_this_domain() {
        let ok = target_of(&h(Some("web.shop.svc.cluster.local.")), "cluster.local").unwrap();
        assert_eq!(ok.to_string(), "web.shop.svc.cluster.local:80");
        for bad in [
            None,
            Some("web.shop.svc.other.local"),
            Some("kubernetes.default.svc.cluster.local.evil.com"),
            Some("a.web.shop.svc.cluster.local"),
            Some("shop.svc.cluster.local"),
            Some("web.shop.cluster.local"),
            Some("10.0.0.1"),
            Some("we_b.shop.svc.cluster.local"),
        ] {
            let e = target_of(&h(bad), "cluster.local").unwrap_err();
            assert_eq!(e.metric_label(), "name_outside_domain", "{bad:?}");
        }
    }
}
