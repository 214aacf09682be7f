//! The `strait-gateway` command line: parses [`Args`](crate::Args) (flags with environment
//! fallbacks), runs [`run`](crate::run) and drains on SIGTERM or Ctrl-C. The binary and the
//! end-to-end suite's copy of it both call [`main`].

use clap::Parser;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// The binary's entry point; returns the exit code after logging any error with its causes.
pub fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STRAIT_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let args = crate::Args::parse();
    let rt = match strait_proxy::runtime::build(args.cores) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("strait-gateway: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = format!("strait-gateway: {e}");
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                msg.push_str(&format!(": {c}"));
                cause = c.source();
            }
            tracing::error!("{msg}");
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: crate::Args) -> Result<(), crate::StartError> {
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: shutting down"),
        }
        signal.cancel();
    });
    crate::run(args, shutdown).await
}
