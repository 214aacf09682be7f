//! The commands a multicluster operator types every day, as Linkerd's CLI names them:
//! `strait multicluster link | unlink | allow | gateways`, `strait check`, and
//! `strait export | unexport`.
//!
//! ```text
//!   target cluster (east)                         source cluster (west)
//!   strait multicluster link --cluster-name east  ──► Secret + Link ──► kubectl apply
//!     reads: remote-access ServiceAccount,            the mirror controller then mirrors
//!            gateway Service, TokenRequest            east's exported Services
//!   strait multicluster allow --service-account-name west-2 ──► kubectl apply (in east)
//!   strait multicluster gateways | strait check --multicluster   (read west, and east
//!                                                                  through each Link)
//! ```
//!
//! Every command that talks to a cluster takes `--kubeconfig` (or `$KUBECONFIG`) and
//! `--context`, as kubectl does; printing commands write objects for `kubectl apply -f -` and
//! never write to a cluster themselves, except `export`/`unexport` which set one label.

pub mod check;
pub mod export;
pub mod gateways;
pub mod link;
mod link_objects;
pub mod selector;

use crate::install::cli::{McInstallArgs, McUninstallArgs};
pub use crate::kube_args::KubeArgs;

/// `strait multicluster …`
#[derive(clap::Subcommand, Debug)]
pub enum McCommand {
    /// Print the gateway, the service mirror controller, the remote-access ServiceAccount and
    /// the Link CRD (the objects of charts/strait-multicluster), for `kubectl apply -f -`.
    Install(McInstallArgs),
    /// Print what `strait multicluster install` made, for `kubectl delete -f -`; refuses
    /// while Links exist. The Link CRD is kept.
    Uninstall(McUninstallArgs),
    /// Run against the TARGET cluster: print the credentials Secret and the Link with which
    /// the SOURCE cluster mirrors the target's exported Services (apply them in the source).
    Link(Box<link::LinkArgs>),
    /// Print the Link to a cluster and its credentials, for `kubectl delete -f -` in the
    /// source cluster; the mirror controller removes that Link's mirrors first.
    Unlink(link::UnlinkArgs),
    /// Print a separate remote-access account for one consuming cluster, for
    /// `kubectl apply -f -` in this (the target) cluster; revoke it by deleting it.
    Allow(link::AllowArgs),
    /// Show each linked cluster's gateway: alive, mirrored services, probe latency.
    Gateways(gateways::GatewaysArgs),
}

/// Runs a `strait multicluster` subcommand.
pub async fn run(cmd: McCommand) -> anyhow::Result<()> {
    match cmd {
        McCommand::Install(args) => Ok(crate::install::cli::multicluster_install(args)?),
        McCommand::Uninstall(args) => Ok(crate::install::cli::multicluster_uninstall(args).await?),
        McCommand::Link(args) => link::link(*args).await,
        McCommand::Unlink(args) => link::unlink(args).await,
        McCommand::Allow(args) => link::allow(args).await,
        McCommand::Gateways(args) => gateways::gateways(args).await,
    }
}

/// Output of the reading commands: a table for people, JSON for programs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TableOutput {
    #[default]
    Table,
    Json,
}

/// Whether `err` is the API server's 404.
pub(crate) fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 404)
}

/// Whether `err` is the API server refusing the credentials (401) or the request (403).
pub(crate) fn is_denied(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 401 || s.code == 403)
}

/// Columns padded to their widest cell, two spaces apart, as kubectl prints tables.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            out.push_str(cell);
            if i < last {
                out.push_str(&" ".repeat(w - cell.chars().count() + 2));
            }
        }
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables_align_on_the_widest_cell() {
        let t = super::table(
            &["CLUSTER", "ALIVE"],
            &[
                vec!["east".into(), "True".into()],
                vec!["far-away".into(), "False".into()],
            ],
        );
        assert_eq!(t, "CLUSTER   ALIVE\neast      True\nfar-away  False\n");
    }
}
