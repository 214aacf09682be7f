//! # strait-tls
//!
//! Everything Strait does with certificates: a trust anchor and per-cluster issuers made with
//! rcgen, leaf issuance from a CSR, and rustls configurations that speak TLS 1.3 only and accept
//! a peer only when its certificate names the expected identity and chains to the trust
//! anchors. The current certificate lives behind a watch channel, so rotation never drops an
//! open connection. There is no switch that turns verification off.
