//! Enforcing a port's inbound policy on a connection and on each of its requests, with the
//! decisions counted.
//!
//! - TCP: checked once when the connection is accepted (refused: closed), and again whenever
//!   the policy changes (no longer allowed: closed, counted as terminated).
//! - HTTP: every request is checked against the policy of that moment, so a change applies
//!   to the next request on a connection already open: 403 with `l5d-proxy-error:
//!   unauthorized request on route`, or 404 when no route matches.

use super::InboundRx;
use super::inbound::{Client, HttpDenied, Meta, ServerPolicy};
use crate::http_client::Body;
use crate::http_server::error_response;
use crate::metrics::{AuthzMetrics, HttpAuthzLabels, RouteLabels, ServerLabels, TcpAuthzLabels};
use http::StatusCode;
use std::net::IpAddr;
use std::sync::Arc;
use strait_core::identity::Identity;

/// The `l5d-proxy-error` of a request inbound policy refuses (Linkerd's words).
pub const UNAUTHORIZED: &str = "unauthorized request on route";
/// The `l5d-proxy-error` of a request no route matches.
pub const NO_ROUTE: &str = "no route found for request";

/// One connection's view of its port's policy.
#[derive(Clone, Debug)]
pub struct Enforcer {
    rx: InboundRx,
    /// Until the policy service answers for the port.
    default: Arc<ServerPolicy>,
    port: u16,
    ip: IpAddr,
    tls: bool,
    /// The verified identity's name.
    id: Option<String>,
    client_id: String,
    metrics: AuthzMetrics,
}

fn server_labels(port: u16, p: &ServerPolicy) -> ServerLabels {
    ServerLabels {
        target_port: port,
        srv_group: p.meta.group.clone(),
        srv_kind: p.meta.kind.clone(),
        srv_name: p.meta.name.clone(),
    }
}

fn route_labels(server: ServerLabels, m: &Meta) -> RouteLabels {
    RouteLabels {
        server,
        route_group: m.group.clone(),
        route_kind: m.kind.clone(),
        route_name: m.name.clone(),
    }
}

impl Enforcer {
    /// `client` is the peer's address, whether it spoke TLS, and its verified identity;
    /// `client_id` that identity as a metric label.
    pub fn new(
        (rx, default): (InboundRx, Arc<ServerPolicy>),
        port: u16,
        (ip, tls, id): (IpAddr, bool, Option<Identity>),
        client_id: String,
        metrics: AuthzMetrics,
    ) -> Self {
        Self {
            rx,
            default,
            port,
            ip,
            tls,
            id: id.map(|i| i.to_string()),
            client_id,
            metrics,
        }
    }

    fn client(&self) -> Client<'_> {
        Client {
            ip: self.ip,
            tls: self.tls,
            id: self.id.as_deref(),
        }
    }

    fn current(&self) -> Arc<ServerPolicy> {
        self.rx
            .borrow()
            .clone()
            .unwrap_or_else(|| self.default.clone())
    }

    /// How the port's traffic is read.
    pub fn protocol(&self) -> super::Protocol {
        self.current().protocol
    }

    /// Checks the connection (TCP); `false`: close it. Counted either way.
    pub fn admit_tcp(&self) -> bool {
        let p = self.current();
        let server = server_labels(self.port, &p);
        match p.check_tcp(&self.client()) {
            Some(a) => {
                self.metrics
                    .tcp_allow
                    .get_or_create(&TcpAuthzLabels {
                        server,
                        authz_group: a.meta.group.clone(),
                        authz_kind: a.meta.kind.clone(),
                        authz_name: a.meta.name.clone(),
                        tls: self.tls,
                        client_id: self.client_id.clone(),
                    })
                    .inc();
                true
            }
            None => {
                tracing::info!(port = self.port, server = %p.meta.name, client = ?self.id, ip = %self.ip, "inbound connection refused by policy");
                self.metrics.tcp_deny.get_or_create(&server).inc();
                false
            }
        }
    }

    /// Resolves once a policy change no longer admits the connection (counted as
    /// terminated); never while it does.
    pub async fn revoked(mut self) {
        loop {
            if self.rx.changed().await.is_err() {
                return std::future::pending().await;
            }
            let p = self.current();
            if p.check_tcp(&self.client()).is_none() {
                tracing::info!(port = self.port, server = %p.meta.name, client = ?self.id, "inbound connection closed: the policy no longer allows it");
                let server = server_labels(self.port, &p);
                self.metrics.tcp_terminate.get_or_create(&server).inc();
                return;
            }
        }
    }

    /// Checks a request; `Some` is the response that refuses it.
    pub fn admit_http(&self, req: &http::request::Parts) -> Option<http::Response<Body>> {
        let p = self.current();
        let server = server_labels(self.port, &p);
        match p.check_http(&self.client(), req) {
            Ok((route, a)) => {
                self.metrics
                    .http_allow
                    .get_or_create(&HttpAuthzLabels {
                        route: route_labels(server, &route.meta),
                        authz_group: a.meta.group.clone(),
                        authz_kind: a.meta.kind.clone(),
                        authz_name: a.meta.name.clone(),
                        tls: self.tls,
                        client_id: self.client_id.clone(),
                    })
                    .inc();
                None
            }
            Err(HttpDenied::Unauthorized(route)) => {
                tracing::info!(port = self.port, server = %p.meta.name, route = %route.meta.name, client = ?self.id, path = req.uri.path(), "request refused by policy");
                self.metrics
                    .http_deny
                    .get_or_create(&route_labels(server, &route.meta))
                    .inc();
                Some(error_response(StatusCode::FORBIDDEN, UNAUTHORIZED))
            }
            Err(HttpDenied::NoRoute) => {
                self.metrics.http_no_route.get_or_create(&server).inc();
                Some(error_response(StatusCode::NOT_FOUND, NO_ROUTE))
            }
        }
    }
}
