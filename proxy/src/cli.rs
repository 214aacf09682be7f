//! The `strait-proxy` command line: `strait-proxy` runs the proxy, `strait-proxy init
//! [--remove]` manages the pod's iptables rules. Configuration comes from the environment
//! (see [`crate::env`]).

use crate::env::IdentitySource;
use std::process::ExitCode;

#[derive(Debug, clap::Parser)]
#[command(name = "strait-proxy", about = "Strait's sidecar proxy")]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Debug, clap::Subcommand)]
enum Cmd {
    /// Install the iptables rules in this network namespace (as the init container does).
    Init {
        /// Remove the rules instead.
        #[arg(long)]
        remove: bool,
    },
}

/// The binary's entry point; returns the exit code after logging any error.
pub fn main() -> ExitCode {
    use clap::Parser;
    let args = Args::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STRAIT_PROXY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let res: Result<(), Box<dyn std::error::Error>> = match args.cmd {
        Some(Cmd::Init { remove: true }) => crate::iptables::remove().map_err(Into::into),
        Some(Cmd::Init { remove: false }) => crate::env::init_from_env()
            .map_err(Into::into)
            .and_then(|c| crate::iptables::apply(&c).map_err(Into::into)),
        None => run(),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = e.source();
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            tracing::error!("strait-proxy: {msg}");
            eprintln!("strait-proxy: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let cfg = crate::env::Config::from_env()?;
    let rt = crate::runtime::build(cfg.cores)?;
    rt.block_on(async move {
        let (anchors, creds) = crate::app::load_identity(&cfg)?;
        if let Some(c) = &creds {
            tracing::info!(identity = %c.identity(), "loaded certificate");
        }
        let (tx, rx) = strait_tls::credentials_channel(creds);
        if let IdentitySource::Service(svc) = &cfg.identity {
            crate::certify::spawn(svc, &anchors, tx)?;
        } else {
            // Fixed files: the sender lives as long as the proxy, so readers never see it close.
            std::mem::forget(tx);
        }
        crate::app::run(cfg, anchors, rx, shutdown_signal()).await?;
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
