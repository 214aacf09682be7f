//! `strait-control-plane`: destination and identity gRPC.

use anyhow::Context;
use clap::Parser;
use std::sync::Arc;
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
    let service = IdentityService::new(
        config.settings.clone(),
        issuer,
        Arc::new(KubeTokenReviewer::new(client)),
        metrics.clone(),
    );

    let admin = tokio::net::TcpListener::bind(config.admin_addr)
        .await
        .with_context(|| format!("binding the admin address {}", config.admin_addr))?;
    tokio::spawn(serve_metrics(admin, metrics));

    tracing::info!(addr = %config.identity_addr, "serving io.linkerd.proxy.identity.Identity");
    tonic::transport::Server::builder()
        .add_service(service.into_server())
        .serve_with_shutdown(config.identity_addr, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("identity gRPC server")?;
    Ok(())
}

/// `GET /metrics` in the Prometheus text format; every other path is 404.
async fn serve_metrics(listener: tokio::net::TcpListener, metrics: Metrics) {
    use http_body_util::Full;
    use hyper::{Response, StatusCode, body::Bytes, service::service_fn};
    loop {
        let Ok((io, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move {
                    let (status, body) = if req.uri().path() == "/metrics" {
                        (StatusCode::OK, metrics.encode())
                    } else {
                        (StatusCode::NOT_FOUND, String::new())
                    };
                    let mut rsp = Response::new(Full::new(Bytes::from(body)));
                    *rsp.status_mut() = status;
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
