//! All of the gateway's configuration, from flags with environment fallbacks. Nothing else
//! in the crate reads the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use strait_core::identity::{
    DEFAULT_CONTROL_NAMESPACE, DEFAULT_TRUST_DOMAIN, GATEWAY_NAMESPACE, GATEWAY_SERVICE_ACCOUNT,
    Identity,
};
use strait_core::ports;
use strait_proxy::certify::IdentityService;

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
        env = "STRAIT_PROXY_INBOUND_LISTEN_ADDR",
        default_value_t = SocketAddr::from(([0, 0, 0, 0], ports::GATEWAY))
    )]
    pub listen_addr: SocketAddr,
    /// Where `/live`, `/ready` and `/metrics` are served, over TLS with the gateway's certificate.
    #[arg(
        long,
        env = "STRAIT_PROXY_ADMIN_LISTEN_ADDR",
        default_value_t = SocketAddr::from(([0, 0, 0, 0], ports::ADMIN))
    )]
    pub admin_addr: SocketAddr,
    /// The gateway's own identity (its certificate's DNS SAN). Default:
    /// strait-gateway.strait-multicluster.serviceaccount.identity.strait.cluster.local
    #[arg(long, env = "STRAIT_PROXY_IDENTITY_LOCAL_NAME")]
    pub identity: Option<Identity>,
    /// The identity service (`host:port`): the gateway certifies there with its
    /// service-account token and renews at 70 % of each certificate's lifetime, like any
    /// workload. Without it, `--cert` and `--key` are required.
    #[arg(long, env = "STRAIT_PROXY_IDENTITY_SVC_ADDR", conflicts_with_all = ["cert", "key"])]
    pub identity_addr: Option<String>,
    /// The identity the identity service must present before the token is sent. Required
    /// unless `--identity-addr` is on loopback (plaintext, tests).
    #[arg(
        long,
        env = "STRAIT_PROXY_IDENTITY_SVC_NAME",
        requires = "identity_addr"
    )]
    pub identity_svc_name: Option<Identity>,
    /// The service-account token file, projected with the identity audience.
    #[arg(
        long,
        env = "STRAIT_PROXY_IDENTITY_TOKEN_FILE",
        requires = "identity_addr"
    )]
    pub token_file: Option<PathBuf>,
    /// PEM certificate chain of the gateway's identity (leaf first), reloaded when it
    /// changes; for installs without the identity service.
    #[arg(long, env = "STRAIT_GATEWAY_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM private key of that certificate (PKCS#8 or SEC1).
    #[arg(long, env = "STRAIT_GATEWAY_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// PEM bundle of the shared trust anchors every client must chain to.
    #[arg(long, env = "STRAIT_PROXY_IDENTITY_TRUST_ANCHORS")]
    pub trust_anchors: PathBuf,
    /// The local destination service (`host:port`; an `http://` prefix is accepted).
    #[arg(
        long,
        env = "STRAIT_PROXY_DESTINATION_ADDR",
        default_value_t = format!("localhost:{}", ports::DESTINATION_GRPC)
    )]
    pub destination: String,
    /// The identity the destination service must present (mTLS, with the gateway's own
    /// certificate). Required unless the destination address is on loopback (plaintext, tests).
    #[arg(long, env = "STRAIT_PROXY_DESTINATION_SVC_NAME")]
    pub destination_identity: Option<Identity>,
    /// The DNS suffix of this cluster's Services; targets must be `<svc>.<ns>.svc.<domain>`.
    #[arg(
        long,
        env = "STRAIT_PROXY_CLUSTER_DOMAIN",
        default_value = "cluster.local"
    )]
    pub cluster_domain: String,
    /// `<namespace>:<pod>` of this gateway: who may cross is then also decided by the
    /// policy service (beside destination): the Server that selects this pod and the listen
    /// port, and its AuthorizationPolicies. The chart sets it from the pod's name.
    #[arg(long, env = "STRAIT_PROXY_POLICY_WORKLOAD")]
    pub policy_workload: Option<String>,
    /// Deprecated: use a Server and an AuthorizationPolicy on the gateway's port. A file of
    /// allowed client identity patterns (one a line, `*` for a leading label).
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
    /// Worker threads; `1` is a current-thread runtime. Default: the CPUs the process may
    /// use (its affinity and cgroup quota).
    #[arg(long, env = "STRAIT_PROXY_CORES")]
    pub cores: Option<std::num::NonZeroUsize>,
}

impl Args {
    /// The configured identity, or the default gateway identity.
    pub fn identity(&self) -> Identity {
        self.identity.clone().unwrap_or_else(default_identity)
    }

    /// Where the gateway's certificate comes from, or what is missing.
    pub fn identity_source(&self) -> Result<IdentitySource, ConfigError> {
        match (&self.identity_addr, &self.cert, &self.key) {
            (Some(addr), _, _) => {
                let svc_name = match &self.identity_svc_name {
                    Some(n) => Some(n.clone()),
                    None if strait_proxy::env::is_loopback(addr) => None,
                    None => {
                        return Err(ConfigError::IdentitySvcName { addr: addr.clone() });
                    }
                };
                let token = self.token_file.clone().ok_or(ConfigError::TokenFile)?;
                Ok(IdentitySource::Service(IdentityService {
                    addr: addr.clone(),
                    svc_name,
                    name: self.identity(),
                    token,
                }))
            }
            (None, Some(cert), Some(key)) => Ok(IdentitySource::Files {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, _, _) => Err(ConfigError::NoIdentity),
        }
    }
}

/// Where the gateway's certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentitySource {
    /// The identity service, with the service-account token (what the chart configures).
    Service(IdentityService),
    /// Files, reloaded when they change.
    Files { cert: PathBuf, key: PathBuf },
}

/// Settings that do not fit together.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "the gateway has no certificate source: set --identity-addr \
         (STRAIT_PROXY_IDENTITY_SVC_ADDR) with --token-file, or --cert and --key"
    )]
    NoIdentity,
    #[error(
        "--identity-svc-name (STRAIT_PROXY_IDENTITY_SVC_NAME) is required: the identity \
         service {addr} is not on loopback, so it must prove its identity before the token is sent"
    )]
    IdentitySvcName { addr: String },
    #[error(
        "--token-file (STRAIT_PROXY_IDENTITY_TOKEN_FILE) is required with --identity-addr: \
         the gateway certifies with its service-account token"
    )]
    TokenFile,
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
        assert!(matches!(
            a.identity_source(),
            Ok(IdentitySource::Files { .. })
        ));
    }

    #[test]
    fn identity_service() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["strait-gateway", "--trust-anchors=a"];
            args.extend_from_slice(extra);
            Args::try_parse_from(args).unwrap()
        };
        assert_eq!(parse(&[]).identity_source(), Err(ConfigError::NoIdentity));
        let off_loopback = parse(&[
            "--identity-addr=strait-identity.strait.svc:8080",
            "--token-file=t",
        ]);
        assert!(matches!(
            off_loopback.identity_source(),
            Err(ConfigError::IdentitySvcName { .. })
        ));
        let named = parse(&[
            "--identity-addr=strait-identity.strait.svc:8080",
            "--token-file=t",
            "--identity-svc-name=strait-identity.strait.serviceaccount.identity.strait.cluster.local",
        ]);
        let Ok(IdentitySource::Service(svc)) = named.identity_source() else {
            panic!("not the identity service");
        };
        assert_eq!(svc.name, default_identity());
        assert!(svc.svc_name.is_some());
        let no_token = parse(&["--identity-addr=127.0.0.1:8080"]);
        assert_eq!(no_token.identity_source(), Err(ConfigError::TokenFile));
        // Files and the identity service do not mix.
        assert!(
            Args::try_parse_from([
                "strait-gateway",
                "--trust-anchors=a",
                "--identity-addr=127.0.0.1:8080",
                "--cert=c",
                "--key=k",
            ])
            .is_err()
        );
    }
}
