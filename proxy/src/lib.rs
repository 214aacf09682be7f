//! # strait-proxy
//!
//! The sidecar that sits beside every meshed workload: outbound on 4140 (reached through
//! iptables `REDIRECT`), inbound on 4143, admin on 4191. The multicluster gateway is this
//! proxy in gateway mode: it keeps only its listener policy and uses [`connect`],
//! [`discover`], [`header`], [`admin`] and the error mapping of [`http_server`]. This
//! library is what the `strait-proxy` binary, the gateway and the tests drive.
//!
//! ```text
//!  app ──connect(svc:80)──► iptables REDIRECT ──► outbound :4140
//!        SO_ORIGINAL_DST ─► detect (HTTP/1, HTTP/2, opaque) ─► discover (destination Get)
//!        HTTP: p2c + peak-EWMA over endpoints, pooled hyper clients, H1→H2 between proxies
//!        TCP:  one endpoint per connection
//!        connect: TCP ─► mTLS (SNI = endpoint identity) ─► [transport header]
//!                                       │
//!  peer proxy ──mTLS──► iptables ──► inbound :4143 ─► TLS? ─► [transport header] ─► detect
//!                                       └─► app on 127.0.0.1:<original port>
//!  admin :4191  /live /ready /metrics
//! ```
//!
//! ## How to start
//!
//! `strait-proxy init` installs the iptables rules in the pod's network namespace;
//! `strait-proxy` (with `STRAIT_PROXY_*` variables, see [`env`]) runs the proxy. From Rust,
//! parse a [`env::Config`] and call [`run`].

pub mod addr;
pub mod admin;
mod app;
mod balance;
pub mod certify;
pub mod cli;
pub mod connect;
mod ctx;
mod detect;
pub mod discover;
pub mod env;
pub mod header;
pub mod http_client;
pub mod http_server;
mod inbound;
pub mod io;
mod iptables;
pub mod metrics;
mod orig_dst;
pub mod outbound;
pub mod policy;
pub mod runtime;

pub use app::{RunError, load_identity, run};
pub use ctx::Ctx;
pub use header::HeaderError;
