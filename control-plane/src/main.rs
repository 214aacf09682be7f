//! `strait-control-plane`: destination and identity gRPC.
//!
//! Parses its configuration (flags with environment fallbacks) and runs the services of
//! the library.

use clap::Parser;
use std::net::SocketAddr;
use strait_control_plane::destination::{self, DestinationConfig, Discovery};

/// All configuration of the binary, in one place.
#[derive(Debug, Parser)]
#[command(
    name = "strait-control-plane",
    about = "Destination and identity gRPC for Strait's proxies"
)]
struct Args {
    /// Where the destination gRPC service listens.
    #[arg(long, env = "STRAIT_DESTINATION_ADDR", default_value = "0.0.0.0:8086")]
    destination_addr: SocketAddr,
    /// The DNS suffix of this cluster's Services.
    #[arg(long, env = "STRAIT_CLUSTER_DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// The control plane's namespace, part of every identity name.
    #[arg(long, env = "STRAIT_CONTROL_NAMESPACE", default_value = strait_core::identity::DEFAULT_CONTROL_NAMESPACE)]
    control_namespace: String,
    /// The trust domain, the tail of every identity name.
    #[arg(long, env = "STRAIT_TRUST_DOMAIN", default_value = strait_core::identity::DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
}

impl Args {
    fn destination(&self) -> DestinationConfig {
        DestinationConfig {
            cluster_domain: self.cluster_domain.clone(),
            control_namespace: self.control_namespace.clone(),
            trust_domain: self.trust_domain.clone(),
            ..DestinationConfig::default()
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let client = kube::Client::try_default().await?;
    let mut registry = prometheus_client::registry::Registry::default();

    let discovery = Discovery::spawn(client);
    let svc = discovery.service(
        args.destination(),
        destination::Metrics::register(&mut registry),
    );
    let listener = tokio::net::TcpListener::bind(args.destination_addr).await?;
    tracing::info!(addr = %args.destination_addr, "destination gRPC listening");
    destination::serve(listener, svc, shutdown()).await?;
    Ok(())
}

async fn shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(error) => {
            tracing::warn!(%error, "cannot watch SIGTERM; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
}
