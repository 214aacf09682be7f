//! All of the gateway's configuration, from flags with environment fallbacks. Nothing else
//! in the crate reads the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use strait_core::identity::{
    DEFAULT_CONTROL_NAMESPACE, DEFAULT_TRUST_DOMAIN, GATEWAY_NAMESPACE, GATEWAY_SERVICE_ACCOUNT,
    Identity,
};

/// The gateway's settings.
#[derive(clap::Parser, Clone, Debug)]
#[command(
    name = "strait-gateway",
    version,
    about = "Strait's multicluster gateway: mTLS on 4143, forwards to local Services"
)]
pub struct Args {
    /// Where the gateway listens for linked clusters (mTLS only).
    #[arg(
        long,
        env = "STRAIT_GATEWAY_LISTEN_ADDR",
        default_value = "0.0.0.0:4143"
    )]
    pub listen_addr: SocketAddr,
    /// Where `/live`, `/ready` and `/metrics` are served, over TLS with the gateway's certificate.
    #[arg(
        long,
        env = "STRAIT_GATEWAY_ADMIN_ADDR",
        default_value = "0.0.0.0:4191"
    )]
    pub admin_addr: SocketAddr,
    /// The gateway's own identity (its certificate's DNS SAN). Default:
    /// strait-gateway.strait-multicluster.serviceaccount.identity.strait.cluster.local
    #[arg(long, env = "STRAIT_GATEWAY_IDENTITY")]
    pub identity: Option<Identity>,
    /// PEM certificate chain of the gateway's identity (leaf first).
    #[arg(long, env = "STRAIT_GATEWAY_CERT")]
    pub cert: PathBuf,
    /// PEM private key of that certificate (PKCS#8 or SEC1).
    #[arg(long, env = "STRAIT_GATEWAY_KEY")]
    pub key: PathBuf,
    /// PEM bundle of the shared trust anchors every client must chain to.
    #[arg(long, env = "STRAIT_GATEWAY_TRUST_ANCHORS")]
    pub trust_anchors: PathBuf,
    /// The local destination service.
    #[arg(
        long,
        env = "STRAIT_DESTINATION_URL",
        default_value = "http://localhost:8086"
    )]
    pub destination: String,
    /// The identity the destination service must present (mTLS, with the gateway's own
    /// certificate). Required unless the destination URL is on loopback (plaintext, tests).
    #[arg(long, env = "STRAIT_PROXY_DESTINATION_SVC_NAME")]
    pub destination_identity: Option<Identity>,
    /// The DNS suffix of this cluster's Services; targets must be `<svc>.<ns>.svc.<domain>`.
    #[arg(long, env = "STRAIT_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
    /// A file of allowed client identity patterns (one a line, `*` for a leading label).
    /// Without it every identity under the trust anchor may pass.
    #[arg(long, env = "STRAIT_GATEWAY_ALLOW_LIST")]
    pub allow_list: Option<PathBuf>,
    /// How often the allow-list and certificate files are checked for changes.
    #[arg(long, env = "STRAIT_GATEWAY_RELOAD_PERIOD", default_value = "5s", value_parser = humantime::parse_duration)]
    pub reload_period: Duration,
    /// Refuse targets that are not meshed instead of forwarding to them in plaintext.
    #[arg(long, env = "STRAIT_GATEWAY_FORBID_PLAINTEXT")]
    pub forbid_plaintext: bool,
    /// Bound on a client's TLS handshake.
    #[arg(long, env = "STRAIT_GATEWAY_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,
    /// Bound on receiving the transport header.
    #[arg(long, env = "STRAIT_GATEWAY_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,
    /// Bound on connecting (TCP and TLS) to a target endpoint.
    #[arg(long, env = "STRAIT_GATEWAY_CONNECT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Bound on a destination lookup.
    #[arg(long, env = "STRAIT_GATEWAY_RESOLVE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub resolve_timeout: Duration,
    /// On SIGTERM, how long open connections may take to finish.
    #[arg(long, env = "STRAIT_GATEWAY_DRAIN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
}

impl Args {
    /// The configured identity, or the default gateway identity.
    pub fn identity(&self) -> Identity {
        self.identity.clone().unwrap_or_else(default_identity)
    }
}

/// `strait-gateway.strait-multicluster.serviceaccount.identity.strait.cluster.local`.
pub fn default_identity() -> Identity {
    Identity::new(
        GATEWAY_SERVICE_ACCOUNT,
        GATEWAY_NAMESPACE,
        DEFAULT_CONTROL_NAMESPACE,
        DEFAULT_TRUST_DOMAIN,
    )
    .unwrap_or_else(|e| unreachable!("the default gateway identity is valid: {e}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::Parser;

    #[test]
    fn defaults() {
        let a =
            Args::try_parse_from(["strait-gateway", "--cert=c", "--key=k", "--trust-anchors=a"])
                .unwrap();
        assert_eq!(a.listen_addr.port(), 4143);
        assert_eq!(a.admin_addr.port(), 4191);
        assert_eq!(
            a.identity().to_string(),
            "strait-gateway.strait-multicluster.serviceaccount.identity.strait.cluster.local"
        );
        assert!(!a.forbid_plaintext);
    }
}
