//! The `strait-mirror` command line: parses [`Args`] (flags with environment fallbacks), runs
//! [`run_until`](crate::run_until) and, on SIGTERM or Ctrl-C, stops the workers and gives up
//! the leader Lease. The binary and the end-to-end suite's copy of it both call [`main`].

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, Parser)]
#[command(name = "strait-mirror", about = "Mirrors Services of linked clusters")]
pub struct Args {
    /// Namespace whose Links this process serves.
    #[arg(
        long,
        env = "STRAIT_MIRROR_NAMESPACE",
        default_value = "strait-multicluster"
    )]
    namespace: String,
    /// PEM file of the trust anchors the gateway certificate must chain to.
    #[arg(long, env = "STRAIT_TRUST_ANCHORS")]
    trust_anchors: PathBuf,
    /// Kubeconfig for the local cluster (default: in-cluster or $KUBECONFIG).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Address of /metrics and /ready.
    #[arg(long, env = "STRAIT_MIRROR_ADMIN_ADDR", default_value_t = SocketAddr::from(([0, 0, 0, 0], strait_core::ports::MIRROR_ADMIN)))]
    admin_addr: SocketAddr,
    /// This replica's identity in the leader Lease (default: hostname-pid).
    #[arg(long, env = "STRAIT_MIRROR_HOLDER")]
    holder_identity: Option<String>,
    /// Leader Lease duration. The leader renews it every fifth of that and stops serving
    /// after two thirds of it without a renewal.
    #[arg(long, env = "STRAIT_MIRROR_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    lease_duration: std::time::Duration,
    /// Writes in flight at once, per Link.
    #[arg(long, env = "STRAIT_MIRROR_WRITE_CONCURRENCY", default_value_t = 32)]
    write_concurrency: usize,
    /// Keep mirrors when a Link is deleted.
    #[arg(long, env = "STRAIT_MIRROR_KEEP_MIRRORS")]
    keep_mirrors_on_delete: bool,
    /// Resolve gateway hostnames with this nameserver (ip:port) instead of the system's.
    #[arg(long, env = "STRAIT_MIRROR_NAMESERVER")]
    nameserver: Option<SocketAddr>,
    /// How often a remote cluster without the ServiceExport API is asked again.
    #[arg(long, env = "STRAIT_MIRROR_EXPORTS_RECHECK", default_value = "1m", value_parser = humantime::parse_duration)]
    exports_recheck: std::time::Duration,
    /// Renew a Link's ServiceAccount token (a TokenRequest on the remote cluster) this
    /// percent of the way through its lifetime.
    #[arg(
        long,
        env = "STRAIT_MIRROR_CREDENTIALS_RENEW_AT_PERCENT",
        default_value_t = crate::renew::DEFAULT_RENEW_AT_PERCENT,
        value_parser = clap::value_parser!(u8).range(1..=99)
    )]
    credentials_renew_at_percent: u8,
}

/// Why the binary stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("starting the runtime")]
    Runtime(#[source] std::io::Error),
    #[error("reading the trust anchors from {0}")]
    Anchors(PathBuf, #[source] std::io::Error),
    #[error("reading the kubeconfig {0}")]
    Kubeconfig(PathBuf, #[source] kube::config::KubeconfigError),
    #[error("building the Kubernetes client")]
    Client(#[source] kube::Error),
    #[error("controller stopped")]
    Run(#[source] crate::Error),
}

/// The binary's entry point; returns the exit code after logging any error with its causes.
pub fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .try_init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)
        .and_then(|rt| rt.block_on(serve(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = format!("strait-mirror: {e}");
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                msg.push_str(&format!(": {c}"));
                cause = c.source();
            }
            tracing::error!("{msg}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> Result<(), StartError> {
    let anchors = std::fs::read(&args.trust_anchors)
        .map_err(|e| StartError::Anchors(args.trust_anchors.clone(), e))?;
    let client = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| StartError::Kubeconfig(path.clone(), e))?;
            let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| StartError::Kubeconfig(path.clone(), e))?;
            kube::Client::try_from(cfg).map_err(StartError::Client)?
        }
        None => kube::Client::try_default()
            .await
            .map_err(StartError::Client)?,
    };
    let mut config = crate::Config::new(args.namespace, anchors);
    config.admin_addr = args.admin_addr;
    if let Some(h) = args.holder_identity {
        config.holder_identity = h;
    } else if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        config.holder_identity = format!("{}-{}", h.trim(), std::process::id());
    }
    config.lease_duration = args.lease_duration;
    config.write_concurrency = args.write_concurrency;
    config.keep_mirrors_on_delete = args.keep_mirrors_on_delete;
    config.nameserver = args.nameserver;
    config.exports_recheck = args.exports_recheck;
    config.credentials_renew_at_percent = args.credentials_renew_at_percent;
    let metrics = Arc::new(crate::Metrics::new());
    crate::run_until(client, config, metrics, shutdown_signal())
        .await
        .map_err(StartError::Run)
}

/// Completes on SIGTERM (how Kubernetes stops a pod) or Ctrl-C.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = term => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: shutting down"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
        let mut argv = vec!["strait-mirror", "--trust-anchors=ca.crt"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv)
    }

    #[test]
    fn renew_at_percent_is_between_1_and_99() {
        assert_eq!(parse(&[]).unwrap().credentials_renew_at_percent, 80);
        let a = parse(&["--credentials-renew-at-percent=50"]).unwrap();
        assert_eq!(a.credentials_renew_at_percent, 50);
        for bad in ["0", "100", "-1", "eighty"] {
            let flag = format!("--credentials-renew-at-percent={bad}");
            assert!(parse(&[&flag]).is_err(), "{bad}");
        }
    }
}
