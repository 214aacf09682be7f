//! `strait-demo`: Strait as a user meets it, on this machine. Two real-node clusters (west
//! and east: kubelet, containerd and kube-proxy in network namespaces, running the images
//! built from `images/`), installed the way a user installs them (`strait identity`,
//! `strait install | kubectl apply`, `strait multicluster install | kubectl apply`), east's
//! injected samples exported with `strait export`, west linked with
//! `strait multicluster link`, and a meshed client in west calling the mirrors by DNS name
//! through east's gateway. Prints a summary a person reads at a glance.
//!
//! ```text
//!  stages (stderr, one line each, timed)        summary (stdout)
//!  clusters ─ identity ─ install ─ samples ─     mirrors, requests, success, p50/p99,
//!  link ─ traffic ─ what the gateway saw         identities at the gateway, gateways
//! ```
//!
//! Everything it starts stops when it ends, fails, or gets Ctrl-C; `--keep` leaves the
//! clusters running until Ctrl-C and prints how to reach them. `scripts/demo` builds the
//! CLI, this program and the images first; the Kubernetes binaries build on first use.

mod stages;

use anyhow::Context as _;
use clap::Parser;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "strait-demo",
    about = "Two real-node clusters, linked by Strait"
)]
struct Args {
    /// Leave the clusters running (until Ctrl-C) and print how to reach them.
    #[arg(long)]
    keep: bool,
    /// HTTP requests the client in west sends through the gateway.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    requests: u32,
    /// The `strait` CLI (default: next to this program).
    #[arg(long, env = "STRAIT_DEMO_STRAIT_BIN")]
    strait_bin: Option<PathBuf>,
    /// Where the detailed log goes (default: strait-demo.log in a fresh temporary folder).
    #[arg(long)]
    log: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("strait-demo: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strait-demo: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    strait_localcluster::require_root().context("the demo makes network namespaces")?;
    let strait = match &args.strait_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("finding this program")?
            .with_file_name("strait"),
    };
    anyhow::ensure!(
        strait.is_file(),
        "{} not found: build it (`cargo build -p strait-cli`, as scripts/demo does) or pass --strait-bin",
        strait.display()
    );
    let work = tempfile::Builder::new()
        .prefix("strait-demo-")
        .tempdir()
        .context("making a work folder")?;
    let log = args
        .log
        .clone()
        .unwrap_or_else(|| work.path().join("strait-demo.log"));
    let file =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STRAIT_LOG")
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init();
    eprintln!("strait-demo: the detailed log is {}", log.display());
    let demo = stages::Demo::new(strait, work.path().to_path_buf(), args.requests);
    // Ctrl-C at any stage drops the demo, and with it every cluster (their Drop stops the
    // processes and removes the namespaces, mounts and routes).
    tokio::select! {
        result = demo.run(args.keep) => result,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("\nstrait-demo: interrupted; stopping and cleaning up");
            Ok(())
        }
    }
}
