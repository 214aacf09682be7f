//! # strait-control-plane
//!
//! The gRPC services proxies talk to, from the `linkerd2-proxy-api` crate:
//! `io.linkerd.proxy.destination.Destination` (where to send traffic, on 8086) and
//! `io.linkerd.proxy.identity.Identity` (certificates for service-account identities, on 8080).

pub mod destination;
