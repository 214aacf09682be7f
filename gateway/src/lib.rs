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
//! Modules: [`listener`] (server side, the per-connection steps), [`connect`] (client side),
//! protocols [`header`], [`http`], [`opaque`]; [`authz`] (allow-list), [`resolve`]
//! (destination client), [`admin`], [`metrics`], [`config`] (flags and environment),
//! [`app`] (wiring).
//!
//! ## How to start
//!
//! From the binary: `strait-gateway --cert gw.crt --key gw.key --trust-anchors ca.crt
//! --destination http://127.0.0.1:8086 [--allow-list allow.txt] [--forbid-plaintext]`.
//! In a test, build a [`Gateway`] from its parts ([`app::tls_configs`], a [`Resolve`] and a
//! [`Connector`] whose [`connect::Dial`] can be an in-memory pipe) and call
//! [`Gateway::serve_connection`] on any byte stream.

pub mod admin;
pub mod app;
pub mod authz;
pub mod cli;
pub mod config;
pub mod connect;
pub mod error;
pub mod header;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod opaque;
pub mod resolve;

pub use app::{StartError, run, tls_configs};
pub use config::Args;
pub use connect::Connector;
pub use error::Refusal;
pub use listener::{Gateway, GatewayConfig};
pub use metrics::Metrics;
pub use resolve::{Endpoint, Resolve, Target};

#[cfg(test)]
mod tests;
