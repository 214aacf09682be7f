//! The identity service's configuration: flags with environment fallbacks, checked once, with
//! typed errors. `main.rs` flattens [`IdentityArgs`] into its command line.

use super::{IdentitySettings, IssuerSource};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use strait_core::identity::{DEFAULT_CONTROL_NAMESPACE, DEFAULT_TRUST_DOMAIN, is_dns_label};
use strait_tls::{DEFAULT_LEAF_LIFETIME, TlsError, TrustAnchors};

/// Flags of the identity service.
#[derive(Clone, Debug, clap::Args)]
pub struct IdentityArgs {
    /// Where the identity gRPC service listens.
    #[arg(long, env = "STRAIT_IDENTITY_ADDR", default_value_t = SocketAddr::from(([0, 0, 0, 0], strait_core::ports::IDENTITY_GRPC)))]
    pub identity_addr: SocketAddr,
    /// Where `/metrics` (Prometheus text) is served.
    #[arg(long, env = "STRAIT_ADMIN_ADDR", default_value_t = SocketAddr::from(([0, 0, 0, 0], strait_core::ports::CONTROL_PLANE_ADMIN)))]
    pub admin_addr: SocketAddr,
    /// The trust domain of identities.
    #[arg(long, env = "STRAIT_TRUST_DOMAIN", default_value = DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// The namespace the control plane runs in (part of every identity name).
    #[arg(long, env = "STRAIT_CONTROL_NAMESPACE", default_value = DEFAULT_CONTROL_NAMESPACE)]
    pub control_namespace: String,
    /// The issuer certificate (PEM; the issuer first, then any intermediates).
    #[arg(
        long,
        env = "STRAIT_ISSUER_CERT",
        requires = "issuer_key",
        conflicts_with = "issuer_secret"
    )]
    pub issuer_cert: Option<PathBuf>,
    /// The issuer's private key (PEM, PKCS#8 or SEC1).
    #[arg(long, env = "STRAIT_ISSUER_KEY", requires = "issuer_cert")]
    pub issuer_key: Option<PathBuf>,
    /// Read the issuer from this Secret in the control namespace instead of files.
    #[arg(long, env = "STRAIT_ISSUER_SECRET")]
    pub issuer_secret: Option<String>,
    /// The trust anchors (PEM bundle); checked at start-up against the issuer.
    #[arg(long, env = "STRAIT_TRUST_ANCHORS")]
    pub trust_anchors: Option<PathBuf>,
    /// Lifetime of issued certificates (e.g. `24h`).
    #[arg(long, env = "STRAIT_CERT_LIFETIME", value_parser = humantime::parse_duration,
          default_value = "24h")]
    pub cert_lifetime: Duration,
    /// How often the issuer files or Secret are checked for changes.
    #[arg(long, env = "STRAIT_ISSUER_POLL", value_parser = humantime::parse_duration,
          default_value = "10s")]
    pub issuer_poll: Duration,
    /// A kubeconfig to use instead of the in-cluster or default configuration.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

/// What is wrong with the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--trust-domain {0:?} is not a DNS name")]
    TrustDomain(String),
    #[error("--control-namespace {0:?} is not a DNS label")]
    ControlNamespace(String),
    #[error("no issuer: pass --issuer-cert and --issuer-key, or --issuer-secret")]
    NoIssuer,
    #[error("--cert-lifetime {0:?} is out of range; use between 1m and 90d")]
    Lifetime(Duration),
    #[error("--trust-anchors: {0}")]
    Anchors(#[source] TlsError),
    #[error("loading the kubeconfig: {0}")]
    Kubeconfig(String),
}

/// The checked configuration.
#[derive(Clone, Debug)]
pub struct IdentityConfig {
    pub identity_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub settings: IdentitySettings,
    pub issuer_poll: Duration,
    pub trust_anchors: Option<TrustAnchors>,
    issuer: IssuerChoice,
    kubeconfig: Option<PathBuf>,
}

#[derive(Clone, Debug)]
enum IssuerChoice {
    Files { cert: PathBuf, key: PathBuf },
    Secret(String),
}

impl IdentityArgs {
    /// Whether an issuer is configured at all (without one, the identity service is off).
    pub fn has_issuer(&self) -> bool {
        self.issuer_cert.is_some() || self.issuer_key.is_some() || self.issuer_secret.is_some()
    }

    /// Checks every flag.
    pub fn validate(self) -> Result<IdentityConfig, ConfigError> {
        if self.trust_domain.is_empty() || !self.trust_domain.split('.').all(is_dns_label) {
            return Err(ConfigError::TrustDomain(self.trust_domain));
        }
        if !is_dns_label(&self.control_namespace) {
            return Err(ConfigError::ControlNamespace(self.control_namespace));
        }
        if self.cert_lifetime < Duration::from_secs(60)
            || self.cert_lifetime > Duration::from_secs(90 * 24 * 3600)
        {
            return Err(ConfigError::Lifetime(self.cert_lifetime));
        }
        let issuer = match (self.issuer_cert, self.issuer_key, self.issuer_secret) {
            (Some(cert), Some(key), None) => IssuerChoice::Files { cert, key },
            (None, None, Some(name)) => IssuerChoice::Secret(name),
            _ => return Err(ConfigError::NoIssuer),
        };
        let trust_anchors = self
            .trust_anchors
            .map(|p| TrustAnchors::from_file(&p))
            .transpose()
            .map_err(ConfigError::Anchors)?;
        Ok(IdentityConfig {
            identity_addr: self.identity_addr,
            admin_addr: self.admin_addr,
            settings: IdentitySettings {
                trust_domain: self.trust_domain,
                control_namespace: self.control_namespace,
                lifetime: self.cert_lifetime,
            },
            issuer_poll: self.issuer_poll,
            trust_anchors,
            issuer,
            kubeconfig: self.kubeconfig,
        })
    }
}

impl IdentityConfig {
    /// A Kubernetes client: from `--kubeconfig`, else in-cluster or the default kubeconfig.
    pub async fn kube_client(&self) -> Result<kube::Client, ConfigError> {
        kube_client(self.kubeconfig.as_deref()).await
    }

    /// Where the issuer is read from.
    pub fn issuer_source(&self, client: &kube::Client) -> IssuerSource {
        match &self.issuer {
            IssuerChoice::Files { cert, key } => IssuerSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            IssuerChoice::Secret(name) => IssuerSource::Secret {
                client: client.clone(),
                namespace: self.settings.control_namespace.clone(),
                name: name.clone(),
            },
        }
    }
}

/// A Kubernetes client from a kubeconfig file, else in-cluster or the default kubeconfig.
pub async fn kube_client(
    kubeconfig: Option<&std::path::Path>,
) -> Result<kube::Client, ConfigError> {
    let err = |e: &dyn std::fmt::Display| ConfigError::Kubeconfig(e.to_string());
    match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| err(&e))?;
            let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| err(&e))?;
            kube::Client::try_from(cfg).map_err(|e| err(&e))
        }
        None => kube::Client::try_default().await.map_err(|e| err(&e)),
    }
}

/// The default leaf lifetime, for documentation and tests.
pub const DEFAULT_CERT_LIFETIME: Duration = DEFAULT_LEAF_LIFETIME;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        id: IdentityArgs,
    }

    fn parse(args: &[&str]) -> Result<IdentityConfig, ConfigError> {
        Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
            .unwrap()
            .id
            .validate()
    }

    #[test]
    fn defaults_and_typed_errors() {
        let c = parse(&["--issuer-cert", "c", "--issuer-key", "k"]).unwrap();
        assert_eq!(c.identity_addr.port(), 8080);
        assert_eq!(c.settings.trust_domain, "cluster.local");
        assert_eq!(c.settings.control_namespace, "strait");
        assert_eq!(c.settings.lifetime, DEFAULT_CERT_LIFETIME);
        assert!(matches!(parse(&[]), Err(ConfigError::NoIssuer)));
        assert!(matches!(
            parse(&["--issuer-secret", "s", "--trust-domain", "Bad_Domain"]),
            Err(ConfigError::TrustDomain(_))
        ));
        assert!(matches!(
            parse(&["--issuer-secret", "s", "--cert-lifetime", "1s"]),
            Err(ConfigError::Lifetime(_))
        ));
    }
}
