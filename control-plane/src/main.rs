//! `strait-control-plane`: identity (8080) and destination (8086) gRPC, metrics on the admin
//! port. Parses its configuration (flags with environment fallbacks) and runs the library.

use anyhow::Context;
use clap::Parser;
use std::net::SocketAddr;
use std::sync::Arc;
use strait_control_plane::destination::{self, DestinationConfig, Discovery};
use strait_control_plane::identity::{
    IdentityService, KubeTokenReviewer, Metrics, config::IdentityArgs, watch_issuer,
};

#[derive(Parser, Debug)]
#[command(
    name = "strait-control-plane",
    version,
    about = "Strait's control plane: identity and destination gRPC"
)]
struct Cli {
    #[command(flatten)]
    identity: IdentityArgs,
    /// Where the destination gRPC service listens.
    #[arg(long, env = "STRAIT_DESTINATION_ADDR", default_value = "0.0.0.0:8086")]
    destination_addr: SocketAddr,
    /// The DNS suffix of this cluster's Services.
    #[arg(long, env = "STRAIT_CLUSTER_DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STRAIT_LOG")
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let config = cli.identity.validate().context("configuration")?;
    let client = config.kube_client().await.context("kubernetes client")?;

    // Identity.
    let metrics = Metrics::new();
    let (issuer, _reloader) = watch_issuer(
        config.issuer_source(&client),
        config.issuer_poll,
        metrics.clone(),
    )
    .await
    .context("loading the issuer")?;
    if let Some(anchors) = &config.trust_anchors {
        tracing::info!(anchors = anchors.certs().len(), "trust anchors loaded");
    }
    let identity = IdentityService::new(
        config.settings.clone(),
        issuer,
        Arc::new(KubeTokenReviewer::new(client.clone())),
        metrics.clone(),
    );

    // Destination.
    let mut registry = prometheus_client::registry::Registry::default();
    let discovery = Discovery::spawn(client);
    let destination = discovery.service(
        DestinationConfig {
            cluster_domain: cli.cluster_domain.clone(),
            control_namespace: config.settings.control_namespace.clone(),
            trust_domain: config.settings.trust_domain.clone(),
            ..DestinationConfig::default()
        },
        destination::Metrics::register(&mut registry),
    );
    let destination_listener = tokio::net::TcpListener::bind(cli.destination_addr)
        .await
        .with_context(|| format!("binding the destination address {}", cli.destination_addr))?;

    let admin = tokio::net::TcpListener::bind(config.admin_addr)
        .await
        .with_context(|| format!("binding the admin address {}", config.admin_addr))?;
    let registry = Arc::new(registry);
    tokio::spawn(serve_metrics(admin, metrics, registry));

    tracing::info!(identity = %config.identity_addr, destination = %cli.destination_addr, "serving");
    let identity_server = tonic::transport::Server::builder()
        .add_service(identity.into_server())
        .serve_with_shutdown(config.identity_addr, shutdown());
    let destination_server = destination::serve(destination_listener, destination, shutdown());
    let (i, d) = tokio::join!(identity_server, destination_server);
    i.context("identity gRPC server")?;
    d.context("destination gRPC server")?;
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

/// Both services' metrics as one Prometheus text document.
fn encode_all(identity: &Metrics, destination: &prometheus_client::registry::Registry) -> String {
    let mut out = identity.encode();
    // Each encoding ends with `# EOF`; only the last may.
    if let Some(stripped) = out.strip_suffix("# EOF\n") {
        out.truncate(stripped.len());
    }
    if prometheus_client::encoding::text::encode(&mut out, destination).is_err() {
        out.push_str("# EOF\n");
    }
    out
}

/// `GET /metrics` in the Prometheus text format; every other path is 404.
async fn serve_metrics(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    registry: Arc<prometheus_client::registry::Registry>,
) {
    use http_body_util::Full;
    use hyper::{Response, StatusCode, body::Bytes, service::service_fn};
    loop {
        let Ok((io, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        let registry = registry.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let body = if req.uri().path() == "/metrics" {
                    Some(encode_all(&metrics, &registry))
                } else {
                    None
                };
                async move {
                    let mut rsp =
                        Response::new(Full::new(Bytes::from(body.clone().unwrap_or_default())));
                    if body.is_none() {
                        *rsp.status_mut() = StatusCode::NOT_FOUND;
                    }
                    Ok::<_, std::convert::Infallible>(rsp)
                }
            });
            let io = hyper_util::rt::TokioIo::new(io);
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await
            {
                tracing::debug!(%error, "metrics connection");
            }
        });
    }
}
