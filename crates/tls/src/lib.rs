//! # strait-tls
//!
//! Everything Strait does with certificates: a trust anchor and per-cluster issuers made with
//! rcgen, leaf issuance from a CSR, and rustls configurations that speak TLS 1.3 only and accept
//! a peer only when its certificate names the expected identity and chains to the trust
//! anchors. The current certificate lives behind a watch channel, so rotation never drops an
//! open connection. There is no switch that turns verification off.
//!
//! ```text
//!  trust anchor (root, 10 y)                      ca.crt
//!    └── issuer (intermediate, 1 y, per cluster)  issuer.crt / issuer.key (or a Secret)
//!          └── leaf (24 h, one DNS SAN = identity, ServerAuth + ClientAuth)
//!                 ▲ Issuer::issue(csr, identity)      ▲ generate_csr(identity)
//!                 │                                   │
//!        control plane (Certify)  ◄──── CSR ────  identity client ──► watch ──► rustls configs
//! ```
//!
//! ## How to start
//!
//! ```no_run
//! # fn main() -> Result<(), strait_tls::TlsError> {
//! use std::time::SystemTime;
//! use strait_tls::*;
//! let now = SystemTime::now();
//! let anchor = Issuer::generate_anchor("cluster.local", DEFAULT_ANCHOR_LIFETIME, now)?;
//! let issuer = anchor.generate_issuer("identity.strait.cluster.local", DEFAULT_ISSUER_LIFETIME, now)?;
//! let id: strait_core::identity::Identity =
//!     "web.shop.serviceaccount.identity.strait.cluster.local".parse().expect("identity");
//! let req = generate_csr(&id)?;
//! let leaf = issuer.issue(&req.csr, &id, DEFAULT_LEAF_LIFETIME, now)?;
//! let (tx, rx) = credentials_channel(Some(Credentials::new(id, leaf.chain(), req.key)?));
//! let server = server_config(&anchor.as_anchors()?, rx, ClientAuth::Required, &[])?;
//! # let _ = (tx, server); Ok(()) }
//! ```
//!
//! Rotate by sending new [`Credentials`] on the channel; the next handshake uses them.

mod anonymous;
mod ca;
mod config;
mod creds;
mod error;
mod leaf;
mod provider;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod verify;
mod webhook;

pub use anonymous::anonymous_client_config;
pub use ca::{
    CLOCK_SKEW, DEFAULT_ANCHOR_LIFETIME, DEFAULT_ISSUER_LIFETIME, Issuer, SECRET_ANCHOR_KEYS,
    SECRET_CERT_KEYS, SECRET_KEY_KEYS, TrustAnchors, der_to_pem, write_pem,
};
pub use config::{
    ALPN_TRANSPORT_HEADER, ClientAuth, accept, client_config, connect, peer_identity, server_config,
};
pub use creds::{
    CertResolver, Credentials, CredentialsReceiver, CredentialsSender, credentials_channel,
};
pub use error::{HandshakeFailure, TlsError};
pub use leaf::{DEFAULT_LEAF_LIFETIME, KeyAndCsr, Leaf, cert_validity, dns_names, generate_csr};
pub use rustls;
pub use tokio_rustls;
pub use verify::verify_chain;
pub use webhook::{ServingCert, webhook_server_config, webhook_server_config_watch};

#[cfg(test)]
mod tests;
