//! # strait-core
//!
//! The vocabulary every Strait component shares, and nothing else: label and annotation
//! names, well-known ports, identity names, and the codec for the `transport.l5d.io/v1`
//! header. This crate does no I/O and knows no Kubernetes client, so anything that parses
//! or names things can be tested with plain values.
//!
//! ```text
//!  strait-core  ◄── strait-k8s-api ◄── control-plane, mirror-controller, link-cli
//!       ▲       ◄── strait-tls     ◄── proxy, gateway
//! ```

pub mod identity;
pub mod labels;
pub mod policy;
pub mod ports;
pub mod transport_header;

pub use identity::{Identity, IdentityError};
