//! # strait-control-plane
//!
//! The gRPC services proxies talk to, from the `linkerd2-proxy-api` crate:
//! `io.linkerd.proxy.destination.Destination` (where to send traffic, on 8086) and
//! `io.linkerd.proxy.identity.Identity` (certificates for service-account identities, on 8080).
//!
//! ```text
//!  strait-control-plane
//!   ├── identity     :8080  Certify: TokenReview → leaf signed by the cluster's issuer
//!   └── destination  :8086  Get / GetProfile
//! ```
//!
//! `main.rs` only parses flags (see [`identity::config`]) and wires the services up.

pub mod destination;
pub mod identity;
