//! Where the issuer comes from, and how it is reloaded when it changes: files (polled by
//! modification time) or a Secret (polled by resourceVersion).

use super::metrics::Metrics;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use strait_tls::{Issuer, TlsError};
use tokio::sync::watch;

/// Where to read the issuer.
#[derive(Clone)]
pub enum IssuerSource {
    /// PEM files: the issuer certificate (chain) and its key.
    Files { cert: PathBuf, key: PathBuf },
    /// A Secret (kubernetes.io/tls or plain PEM keys) in `namespace`.
    Secret {
        client: kube::Client,
        namespace: String,
        name: String,
    },
}

impl std::fmt::Debug for IssuerSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IssuerSource({self})")
    }
}

impl std::fmt::Display for IssuerSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Files { cert, key } => {
                write!(f, "files {} and {}", cert.display(), key.display())
            }
            Self::Secret {
                namespace, name, ..
            } => write!(f, "secret {namespace}/{name}"),
        }
    }
}

/// Why the issuer could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum IssuerLoadError {
    #[error("reading the issuer from {source_name}: {error}")]
    Tls {
        source_name: String,
        #[source]
        error: TlsError,
    },
    #[error(
        "reading the issuer secret {name}: {error}; check that it exists and that the control plane may get secrets in its namespace"
    )]
    Secret {
        name: String,
        #[source]
        error: kube::Error,
    },
}

/// A fingerprint of the source: a reload happens when it changes.
type Version = String;

impl IssuerSource {
    async fn version(&self) -> Result<Version, IssuerLoadError> {
        match self {
            Self::Files { cert, key } => {
                let m = |p: &PathBuf| {
                    std::fs::metadata(p)
                        .and_then(|m| m.modified())
                        .map(|t| format!("{t:?}"))
                        .unwrap_or_default()
                };
                Ok(format!("{}|{}", m(cert), m(key)))
            }
            Self::Secret { .. } => {
                let (s, _) = self.secret().await?;
                Ok(s.metadata.resource_version.unwrap_or_default())
            }
        }
    }

    async fn secret(&self) -> Result<(Secret, String), IssuerLoadError> {
        let Self::Secret {
            client,
            namespace,
            name,
        } = self
        else {
            unreachable!("secret() is called only for Secret sources")
        };
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let full = format!("{namespace}/{name}");
        let s = api
            .get(name)
            .await
            .map_err(|error| IssuerLoadError::Secret {
                name: full.clone(),
                error,
            })?;
        Ok((s, full))
    }

    /// Reads the issuer once.
    pub async fn load(&self) -> Result<Issuer, IssuerLoadError> {
        let tls = |error| IssuerLoadError::Tls {
            source_name: self.to_string(),
            error,
        };
        match self {
            Self::Files { cert, key } => Issuer::from_files(cert, key).map_err(tls),
            Self::Secret { .. } => {
                let (s, _) = self.secret().await?;
                let data = s
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                Issuer::from_secret_data(&data).map_err(tls)
            }
        }
    }
}

/// Loads the issuer, then polls `source` every `period` and publishes a new issuer when it
/// changes. A reload that fails keeps the old issuer (and logs why).
pub async fn watch_issuer(
    source: IssuerSource,
    period: Duration,
    metrics: Metrics,
) -> Result<(watch::Receiver<Arc<Issuer>>, tokio::task::JoinHandle<()>), IssuerLoadError> {
    let mut version = source.version().await?;
    let issuer = source.load().await?;
    tracing::info!(%source, not_after = ?issuer.not_after(), "loaded the issuer");
    metrics.set_issuer_expiry(issuer.not_after());
    let (tx, rx) = watch::channel(Arc::new(issuer));
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if tx.is_closed() {
                return;
            }
            metrics.set_issuer_expiry(tx.borrow().not_after());
            let now = match source.version().await {
                Ok(v) => v,
                Err(error) => {
                    tracing::warn!(%error, "checking the issuer for changes");
                    continue;
                }
            };
            if now == version {
                continue;
            }
            match source.load().await {
                Ok(issuer) => {
                    tracing::info!(%source, not_after = ?issuer.not_after(), "reloaded the issuer");
                    metrics.set_issuer_expiry(issuer.not_after());
                    tx.send_replace(Arc::new(issuer));
                    version = now;
                }
                // Files are often written in two steps; the next poll retries.
                Err(error) => {
                    tracing::warn!(%error, "the issuer changed but cannot be loaded; keeping the old one")
                }
            }
        }
    });
    Ok((rx, task))
}

/// Seconds from now until `t` (negative once past).
pub(crate) fn seconds_until(t: SystemTime) -> f64 {
    match t.duration_since(SystemTime::now()) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}
