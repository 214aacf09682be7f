//! # strait-gateway
//!
//! The only door into a cluster from its linked clusters: the proxy in gateway mode on port
//! 4143. It accepts only mTLS from identities under the shared trust anchor with ALPN
//! `transport.l5d.io/v1`, reads the transport header that names the target Service, and
//! forwards to it.
