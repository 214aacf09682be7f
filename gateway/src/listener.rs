//! The server side: the 4143 listener and what happens to each accepted connection.
//!
//! ```text
//! accept ─► mTLS (client cert under the anchor) ─► ALPN transport.l5d.io/v1 ─► not a loop
//!        ─► allowed identity ─► transport header (≤ 64 KiB, deadline) ─► name under svc.<domain>
//!        ─► resolve (destination Get) ─► connect (mTLS + header, or plain TCP)
//!        ─► HTTP/1 | HTTP/2 (Forwarded, Host) | opaque copy
//! ```
//!
//! The checks are the gateway's own (its listener policy); the header reader, discovery and
//! connect are the proxy's ([`strait_proxy::header`], [`strait_proxy::discover`],
//! [`strait_proxy::connect`]). Every step that fails closes the connection with one log
//! line and one increment of `gateway_refused_total{reason}`.

use crate::authz::PolicyRx;
use crate::error::Refusal;
use crate::metrics::{BytesLabels, Direction, Metrics, RouteLabels};
use crate::{http, opaque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use strait_core::identity::Identity;
use strait_core::transport_header::{ALPN, SessionProtocol, TransportHeader};
use strait_proxy::addr::EndpointAddr;
use strait_proxy::connect::{Connection, Connector, Endpoint};
use strait_proxy::discover::{self, EndpointMeta, Fallback, Resolution, Resolver};
use strait_proxy::io::Io;
use strait_proxy::metrics::AuthzMetrics;
use strait_proxy::policy::Policies;
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
    /// Bound on the destination service's first answer for a target.
    pub resolve_timeout: Duration,
}

/// A Service and port inside this cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// `<svc>.<ns>.svc.<cluster-domain>`.
    pub name: String,
    pub port: u16,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.port)
    }
}

/// The default inbound port of a meshed pod's proxy.
pub const DEFAULT_INBOUND_PORT: u16 = strait_core::ports::GATEWAY;

/// How the gateway reaches one endpoint of a target: a meshed pod (it has a TLS identity)
/// over mTLS at its proxy's inbound port (the `opaque_transport` hint, else 4143) with a
/// transport header naming the pod's port and the session protocol; an unmeshed pod over
/// plain TCP. The gateway never forwards to another gateway, so an authority override is
/// not followed.
pub fn upstream(
    addr: EndpointAddr,
    meta: &EndpointMeta,
    protocol: Option<SessionProtocol>,
) -> Endpoint {
    let meta = EndpointMeta {
        opaque_transport: meta.opaque_transport.or(Some(DEFAULT_INBOUND_PORT)),
        authority_override: None,
        ..meta.clone()
    };
    let mut ep = strait_proxy::outbound::tcp::tcp_endpoint(addr, &meta);
    if let Some(h) = &mut ep.transport_header {
        h.protocol = protocol;
    }
    ep
}

/// Picks endpoints round robin.
#[derive(Debug, Default)]
struct RoundRobin(AtomicUsize);

impl RoundRobin {
    fn pick<'a, T>(&self, eps: &'a [T]) -> Option<&'a T> {
        if eps.is_empty() {
            return None;
        }
        let i = self.0.fetch_add(1, Ordering::Relaxed);
        eps.get(i % eps.len())
    }
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
    /// The gateway port's inbound policy (a Server and its AuthorizationPolicies); off
    /// unless [`Gateway::with_policies`].
    policies: Policies,
    authz: AuthzMetrics,
    /// The port the policy service is asked about (the listener's).
    policy_port: u16,
    resolver: Resolver,
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
        resolver: Resolver,
        connector: Connector,
        metrics: Metrics,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                tls,
                policy,
                policies: Policies::disabled(),
                authz: AuthzMetrics::default(),
                policy_port: strait_core::ports::GATEWAY,
                resolver,
                connector,
                metrics,
                rr: RoundRobin::default(),
            }),
        }
    }

    /// Who may cross is also decided by the policy service: the Server that selects this
    /// gateway's pod and `port`, and its AuthorizationPolicies. Call before the first clone.
    pub fn with_policies(mut self, policies: Policies, authz: AuthzMetrics, port: u16) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => {
                inner.policies = policies;
                inner.authz = authz;
                inner.policy_port = port;
            }
            None => tracing::error!("with_policies after the gateway was shared; policy is off"),
        }
        self
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
        self.authorize_policy(&client_id, client_addr).await?;
        let header = strait_proxy::header::read(&mut tls, cfg.header_timeout)
            .await
            .map_err(Refusal::Header)?;
        let target = target_of(&header, &cfg.cluster_domain)?;

        let endpoints = self.resolve(&target).await?;
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

    /// The policy service's verdict on this client at this port (always yes when policy is
    /// off).
    async fn authorize_policy(
        &self,
        id: &Identity,
        client_addr: SocketAddr,
    ) -> Result<(), Refusal> {
        let port = self.inner.policy_port;
        let enforcer = self
            .inner
            .policies
            .enforcer(
                port,
                (client_addr.ip(), true, Some(id.clone())),
                id.to_string(),
                &self.inner.authz,
                self.inner.config.resolve_timeout,
            )
            .await;
        match enforcer {
            Some(e) if !e.admit_tcp() => Err(Refusal::Unauthorized(Box::new(id.clone()))),
            _ => Ok(()),
        }
    }

    /// The target's endpoints, from the proxy's discovery.
    async fn resolve(&self, target: &Target) -> Result<Vec<(EndpointAddr, EndpointMeta)>, Refusal> {
        let mut rx = self.inner.resolver.resolve(&target.to_string());
        let timeout = self.inner.config.resolve_timeout;
        match discover::first_answer(&mut rx, timeout).await {
            Resolution::Endpoints(set) if !set.endpoints.is_empty() => {
                Ok(set.endpoints.iter().map(|(a, m)| (*a, m.clone())).collect())
            }
            Resolution::Endpoints(_) => Err(Refusal::NoEndpoints(target.to_string())),
            Resolution::Fallback(Fallback::NotDiscoverable) => {
                Err(Refusal::UnknownTarget(target.to_string()))
            }
            Resolution::Fallback(_) | Resolution::Pending => {
                Err(Refusal::ResolveFailed(target.to_string()))
            }
        }
    }

    /// Tries up to three endpoints, round robin.
    async fn connect(
        &self,
        target: &Target,
        endpoints: &[(EndpointAddr, EndpointMeta)],
        header: &TransportHeader,
    ) -> Result<(Endpoint, Connection), Refusal> {
        let mut last = None;
        for _ in 0..endpoints.len().min(3) {
            let Some(ep) = self.inner.rr.pick(endpoints) else {
                break;
            };
            if ep.1.identity.is_none() && self.inner.config.forbid_plaintext {
                return Err(Refusal::PlaintextForbidden(format!("{target} ({})", ep.0)));
            }
            let to = upstream(ep.0, &ep.1, header.protocol);
            match self.inner.connector.connect(&to).await {
                Ok(io) => return Ok((to, io)),
                Err(e) => {
                    tracing::debug!(%target, endpoint = %ep.0, error = %e, "endpoint failed");
                    last = Some(e);
                }
            }
        }
        match last {
            Some(source) => Err(Refusal::Connect {
                target: target.to_string(),
                source: Box::new(source),
            }),
            None => Err(Refusal::NoEndpoints(target.to_string())),
        }
    }
}

/// The target a header names: `<svc>.<ns>.svc.<cluster_domain>`, or one pod of a headless
/// Service by hostname, `<host>.<svc>.<ns>.svc.<cluster_domain>` (a per-pod mirror's remote
/// name; destination resolves it to that pod alone); a trailing dot and case are ignored.
pub fn target_of(header: &TransportHeader, cluster_domain: &str) -> Result<Target, Refusal> {
    let outside = |n: &str| Refusal::NameOutsideDomain(n.to_owned(), cluster_domain.to_owned());
    let raw = header.name.as_deref().ok_or_else(|| outside(""))?;
    let name = raw.strip_suffix('.').unwrap_or(raw).to_ascii_lowercase();
    let domain = cluster_domain.trim_end_matches('.').to_ascii_lowercase();
    let prefix = name
        .strip_suffix(&format!(".svc.{domain}"))
        .ok_or_else(|| outside(raw))?;
    let labels: Vec<&str> = prefix.split('.').collect();
    match labels[..] {
        [_, _] | [_, _, _]
            if labels
                .iter()
                .all(|l| strait_core::identity::is_dns_label(l)) =>
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
    fn meshed_pods_get_mtls_and_a_header_at_their_inbound_port() {
        let addr = EndpointAddr("198.18.0.10:8080".parse().unwrap());
        let mut meta = EndpointMeta {
            identity: Some(
                "api.shop.serviceaccount.identity.strait.cluster.local"
                    .parse()
                    .unwrap(),
            ),
            h2: false,
            opaque_transport: None,
            authority_override: Some(("elsewhere.svc.cluster.local".into(), 80)),
        };
        let ep = upstream(addr, &meta, Some(SessionProtocol::Http2));
        assert_eq!(ep.addr.0, "198.18.0.10:4143".parse().unwrap());
        let h = ep.transport_header.unwrap();
        assert_eq!(
            (h.port, h.name, h.protocol),
            (8080, None, Some(SessionProtocol::Http2))
        );
        meta.opaque_transport = Some(4200);
        assert_eq!(upstream(addr, &meta, None).addr.0.port(), 4200);
        meta.identity = None;
        let plain = upstream(addr, &meta, None);
        assert_eq!((plain.addr, plain.transport_header), (addr, None));
    }

    #[test]
    fn names_must_be_services_in_this_domain() {
        let ok = target_of(&h(Some("web.shop.svc.cluster.local.")), "cluster.local").unwrap();
        assert_eq!(ok.to_string(), "web.shop.svc.cluster.local:80");
        // One pod of a headless Service, by hostname.
        let pod = target_of(
            &h(Some("Web-0.web.shop.svc.cluster.local")),
            "cluster.local",
        );
        assert_eq!(
            pod.unwrap().to_string(),
            "web-0.web.shop.svc.cluster.local:80"
        );
        for bad in [
            None,
            Some("web.shop.svc.other.local"),
            Some("kubernetes.default.svc.cluster.local.evil.com"),
            Some("b.a.web.shop.svc.cluster.local"),
            Some("a_b.web.shop.svc.cluster.local"),
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
