//! # strait-proxy
//!
//! The sidecar that sits beside every meshed workload: outbound on 4140 (reached through
//! iptables `REDIRECT`), inbound on 4143, admin on 4191. The multicluster gateway is this proxy
//! in gateway mode. This library is what the `strait-proxy` binary and the tests drive.
