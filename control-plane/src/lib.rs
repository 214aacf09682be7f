//! # strait-control-plane
//!
//! The gRPC services proxies talk to, from the `linkerd2-proxy-api` crate:
//! `io.linkerd.proxy.destination.Destination` (where to send traffic, on 8086) and
//! `io.linkerd.proxy.identity.Identity` (certificates for service-account identities, on 8080).
//!
//! ```text
//!  strait-control-plane
//!   ├── identity     :8080  Certify: TokenReview → leaf signed by the cluster's issuer
//!   ├── destination  :8086  Get / GetProfile from Services, EndpointSlices and Pods
//!   ├── policy       :8090  InboundServerPolicies, OutboundPolicies (Server, AuthorizationPolicy…)
//!   └── injector     :8443  the proxy injector (admission webhook, HTTPS)
//! ```
//!
//! Start with [`identity::IdentityService`] and [`destination::Discovery`]; `main.rs` only
//! parses the configuration and wires them up.

pub mod destination;
pub mod identity;
pub mod injector;
pub mod listen;
pub mod own_cert;
pub mod policy;
