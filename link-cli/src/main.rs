//! `strait`: the operator's CLI.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::time::Duration;
use strait_localcluster::{Cluster, ClusterConfig};

#[derive(Parser, Debug)]
#[command(
    name = "strait",
    version,
    about = "Strait: a multi-cluster gateway and service mirror for Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start two local clusters (west and east) on this machine and show how to reach them.
    ///
    /// Needs root (network namespaces); builds etcd and kube-apiserver on first use.
    Demo {
        /// Stop by itself after this long (e.g. `30s`); by default, run until Ctrl-C.
        #[arg(long, value_parser = humantime::parse_duration)]
        exit_after: Option<Duration>,
    },
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
    match Cli::parse().command {
        Command::Demo { exit_after } => demo(exit_after).await,
    }
}

async fn demo(exit_after: Option<Duration>) -> anyhow::Result<()> {
    eprintln!("strait demo: starting clusters west and east …");
    let started = std::time::Instant::now();
    let (west, east) = tokio::try_join!(
        Cluster::start(ClusterConfig::new("west")),
        Cluster::start(ClusterConfig::new("east")),
    )
    .context("starting the demo clusters")?;
    println!(
        "two clusters are up after {:.1}s:\n",
        started.elapsed().as_secs_f64()
    );
    for c in [&west, &east] {
        let kubectl = c
            .assets()
            .kubectl
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "kubectl".into());
        println!(
            "  {name:<5} {url}  pods {pods}  services {svcs}\n        {kubectl} --kubeconfig {kc} get namespaces\n",
            name = c.name(),
            url = c.server_url(),
            pods = c.pod_cidr(),
            svcs = c.service_cidr(),
            kc = c.kubeconfig_path().display(),
        );
    }
    match exit_after {
        Some(d) => {
            println!("stopping after {d:?} (--exit-after)");
            tokio::time::sleep(d).await;
        }
        None => {
            println!("press Ctrl-C to stop and clean up");
            tokio::signal::ctrl_c()
                .await
                .context("waiting for Ctrl-C")?;
        }
    }
    drop((west, east));
    println!("clusters stopped and cleaned up");
    Ok(())
}
