//! # strait-gateway
//!
//! The only door into a cluster from its linked clusters: the proxy in gateway mode on port
//! 4143. It accepts only mTLS from identities under the shared trust anchor with ALPN
//! `transport.l5d.io/v1`, reads the transport header that names the target Service, resolves
//! it through the local destination service and forwards to it.
//!
//! ```text
//!  linked cluster                       this cluster
//!  proxy ──mTLS, ALPN transport.l5d.io/v1──► :4143 listener ─► authz ─► header ─► resolve
//!        [header: name=web.shop.svc.<domain>, port, protocol]          │ (destination Get)
//!                                                                      ▼
//!                       meshed pod: ──mTLS + header(port)──► proxy :4143 ──► app
//!                       unmeshed pod: ──plain TCP──► app   (unless --forbid-plaintext)
//!  prober ──TLS──► :4191 /live /ready /metrics
//! ```
//!
//! The gateway is the proxy in gateway mode: one data plane. This crate holds only the
//! gateway's listener policy — identity required, ALPN, the name suffix, the loop check, the
//! allow-list, the `Forwarded` header and its refusal metrics — and its binary. Connecting
//! ([`strait_proxy::connect`]), discovery ([`strait_proxy::discover`]), the transport-header
//! reader ([`strait_proxy::header`]), the admin server ([`strait_proxy::admin`]) and the
//! mapping of errors to HTTP statuses ([`strait_proxy::http_server`]) are the proxy's.
//!
//! Modules: [`listener`] (server side, the per-connection steps), protocols [`http`] and
//! [`opaque`]; [`authz`] (allow-list), [`error`] (refusals), [`metrics`], [`config`] (flags
//! and environment), [`app`] (wiring).
//!
//! ## How to start
//!
//! From the binary: `strait-gateway --cert gw.crt --key gw.key --trust-anchors ca.crt
//! --destination http://127.0.0.1:8086 [--allow-list allow.txt] [--forbid-plaintext]`.
//! In a test, build a [`Gateway`] from its parts ([`app::tls_configs`], a proxy
//! [`Resolver`](strait_proxy::discover::Resolver) and a proxy
//! [`Connector`](strait_proxy::connect::Connector) whose
//! [`Dial`](strait_proxy::connect::Dial) can be an in-memory pipe) and call
//! [`Gateway::serve_connection`] on any byte stream.

mod app;
pub mod authz;
pub mod cli;
mod config;
mod error;
mod http;
mod listener;
mod metrics;
mod opaque;

pub use app::{StartError, run, tls_configs};
pub use config::Args;
pub use error::Refusal;
pub use listener::{Gateway, GatewayConfig, Target};
pub use metrics::Metrics;

#[cfg(test)]
mod tests;
