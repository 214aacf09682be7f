//! `strait-mirror`: the service-mirror controller binary. Parses flags (with env fallbacks)
//! and runs the library.

use anyhow::Context as _;
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Parser)]
#[command(name = "strait-mirror", about = "Mirrors Services of linked clusters")]
struct Args {
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
    #[arg(long, env = "STRAIT_MIRROR_ADMIN_ADDR", default_value = "0.0.0.0:9999")]
    admin_addr: SocketAddr,
    /// This replica's identity in the leader Lease (default: hostname-pid).
    #[arg(long, env = "STRAIT_MIRROR_HOLDER")]
    holder_identity: Option<String>,
    /// Leader Lease duration.
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let anchors = std::fs::read(&args.trust_anchors)
        .with_context(|| format!("reading {}", args.trust_anchors.display()))?;
    let client = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).context("reading kubeconfig")?;
            let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
            kube::Client::try_from(cfg)?
        }
        None => kube::Client::try_default().await?,
    };
    let mut config = strait_mirror::Config::new(args.namespace, anchors);
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
    let metrics = Arc::new(strait_mirror::Metrics::new());
    tokio::select! {
        r = strait_mirror::run(client, config, metrics) => r.context("controller stopped")?,
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; stopping"),
    }
    Ok(())
}
