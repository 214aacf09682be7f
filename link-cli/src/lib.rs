//! # strait-cli
//!
//! `strait`, the operator's CLI: `strait install` and `strait multicluster install` print the
//! objects of the charts in `charts/` ([`install`]); `strait inject` adds the proxy to
//! manifests ([`inject`]); `strait identity` writes a trust anchor and an issuer;
//! `strait multicluster link | unlink | allow | gateways`, `strait check` and
//! `strait export | unexport` run a multicluster mesh ([`multicluster`]). `main.rs` calls
//! [`main`]; the end-to-end suite builds the same entry point as `e2e-strait`. The demo is not
//! part of the released CLI: it is `strait-demo` in `tests/` (scripts/demo).

pub mod inject;
pub mod install;
pub mod kube_args;
pub mod multicluster;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// Print the control plane (the objects of charts/strait-control-plane), for
    /// `strait install | kubectl apply -f -`.
    Install(install::cli::InstallArgs),
    /// Print what `strait install` made, for `strait uninstall | kubectl delete -f -`.
    Uninstall(install::cli::UninstallArgs),
    /// Install or uninstall the multicluster extension (gateway, service mirror, Link CRD).
    Multicluster {
        #[command(subcommand)]
        command: multicluster::McCommand,
    },
    /// Check the installation: the control plane, and with --multicluster the extension,
    /// every Link (through its own credentials) and every mirror.
    Check(multicluster::check::CheckArgs),
    /// Export Services to linked clusters: sets `mirror.strait.dev/exported`.
    Export(multicluster::export::ExportArgs),
    /// Stop exporting Services: clears `mirror.strait.dev/exported` (their mirrors go).
    Unexport(multicluster::export::ExportArgs),
    /// Add Strait's proxy to the pods of manifests: sets `strait.dev/inject: enabled` on each
    /// pod template (the webhook does the rest), or with --manual writes the proxy out.
    Inject(inject::InjectArgs),
    /// Remove what `strait inject` (either form) added.
    Uninject(inject::UninjectArgs),
    /// Write a trust anchor and an issuer for clusters that do not use cert-manager.
    ///
    /// Writes DIR/ca.crt (the trust anchor, to share with every linked cluster),
    /// DIR/issuer.crt and DIR/issuer.key (this cluster's issuer, signed by the anchor).
    /// The anchor's private key is not kept: make a new issuer with a new anchor.
    Identity {
        /// The directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// The trust domain the certificates are for.
        #[arg(long, default_value = strait_core::identity::DEFAULT_TRUST_DOMAIN)]
        trust_domain: String,
        /// The control plane's namespace (part of the issuer's name).
        #[arg(long, default_value = strait_core::identity::DEFAULT_CONTROL_NAMESPACE)]
        control_namespace: String,
        /// How long the trust anchor is valid.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "87600h")]
        anchor_lifetime: Duration,
        /// How long the issuer is valid (never longer than the anchor).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "8760h")]
        issuer_lifetime: Duration,
        /// Replace files that already exist.
        #[arg(long)]
        force: bool,
    },
}

/// The binary's entry point: runs the command, prints any error with its causes.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("strait: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strait: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STRAIT_LOG")
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    match cli.command {
        Command::Install(args) => Ok(install::cli::install(args)?),
        Command::Inject(args) => Ok(inject::inject(args)?),
        Command::Uninject(args) => Ok(inject::uninject(args)?),
        Command::Uninstall(args) => Ok(install::cli::uninstall(args)?),
        Command::Multicluster { command } => multicluster::run(command).await,
        Command::Check(args) => multicluster::check::check(args).await,
        Command::Export(args) => multicluster::export::export(args).await,
        Command::Unexport(args) => multicluster::export::unexport(args).await,
        Command::Identity {
            out,
            trust_domain,
            control_namespace,
            anchor_lifetime,
            issuer_lifetime,
            force,
        } => identity(
            &out,
            &trust_domain,
            &control_namespace,
            anchor_lifetime,
            issuer_lifetime,
            force,
        ),
    }
}

fn identity(
    out: &Path,
    trust_domain: &str,
    control_namespace: &str,
    anchor_lifetime: Duration,
    issuer_lifetime: Duration,
    force: bool,
) -> anyhow::Result<()> {
    use strait_tls::{Issuer, write_pem};
    anyhow::ensure!(
        !trust_domain.is_empty()
            && trust_domain
                .split('.')
                .all(strait_core::identity::is_dns_label),
        "--trust-domain {trust_domain:?} is not a DNS name"
    );
    anyhow::ensure!(
        strait_core::identity::is_dns_label(control_namespace),
        "--control-namespace {control_namespace:?} is not a DNS label"
    );
    let (ca, crt, key) = (
        out.join("ca.crt"),
        out.join("issuer.crt"),
        out.join("issuer.key"),
    );
    if !force {
        for p in [&ca, &crt, &key] {
            anyhow::ensure!(
                !p.exists(),
                "{} already exists; pass --force to replace it",
                p.display()
            );
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let now = std::time::SystemTime::now();
    let anchor = Issuer::generate_anchor(trust_domain, anchor_lifetime, now)?;
    let issuer = anchor.generate_issuer(
        &format!("identity.{control_namespace}.{trust_domain}"),
        issuer_lifetime,
        now,
    )?;
    write_pem(&ca, &anchor.cert_pem(), false, force)?;
    write_pem(&crt, &issuer.cert_pem(), false, force)?;
    write_pem(&key, issuer.key_pem(), true, force)?;
    println!(
        "wrote {} (trust anchor), {} and {} (issuer, valid until {})",
        ca.display(),
        crt.display(),
        key.display(),
        humantime::format_rfc3339_seconds(issuer.not_after()),
    );
    Ok(())
}
