//! Which cluster a command talks to: kubectl's `--kubeconfig` (or `$KUBECONFIG`) and
//! `--context`, shared by every command that reads or writes a cluster.

use anyhow::Context as _;
use std::path::PathBuf;

/// Which cluster a command talks to, as kubectl's flags name it.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct KubeArgs {
    /// The kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    #[arg(long)]
    pub context: Option<String>,
}

impl KubeArgs {
    /// The client configuration these flags name.
    pub async fn config(&self) -> anyhow::Result<kube::Config> {
        let options = kube::config::KubeConfigOptions {
            context: self.context.clone(),
            ..Default::default()
        };
        let config = match &self.kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path).with_context(|| {
                    format!(
                        "reading the kubeconfig {} (pass --kubeconfig or set KUBECONFIG)",
                        path.display()
                    )
                })?;
                kube::Config::from_custom_kubeconfig(kc, &options).await
            }
            None => kube::Config::from_kubeconfig(&options).await,
        };
        config.with_context(|| match &self.context {
            Some(c) => format!(
                "the kubeconfig has no usable context {c:?} (see `kubectl config get-contexts`)"
            ),
            None => {
                "no usable kubeconfig: pass --kubeconfig, set KUBECONFIG or write ~/.kube/config"
                    .into()
            }
        })
    }

    /// A client for the cluster these flags name.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let config = self.config().await?;
        kube::Client::try_from(config).context("building the Kubernetes client")
    }
}
