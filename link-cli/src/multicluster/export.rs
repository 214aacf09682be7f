//! `strait export SVC` / `strait unexport SVC`: set or clear the export label
//! (`mirror.strait.dev/exported`) on a Service, which is what linked clusters' default
//! selectors match. A merge patch touches that one label and nothing else.

use super::{KubeArgs, is_not_found};
use anyhow::{Context as _, ensure};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use strait_core::labels;

/// `strait export` and `strait unexport`
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub kube: KubeArgs,
    /// The Services (names in the namespace).
    #[arg(required = true)]
    pub services: Vec<String>,
    /// The namespace of the Services (default: the context's namespace).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Export for pod-to-pod discovery on a flat network (`remote-discovery`), not through
    /// the gateway (`export` only).
    #[arg(long)]
    pub remote_discovery: bool,
}

/// Sets (`Some(value)`) or clears (`None`) the export label of each Service.
async fn label(args: ExportArgs, value: Option<&str>) -> anyhow::Result<()> {
    let config = args.kube.config().await?;
    let ns = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config).context("building the Kubernetes client")?;
    let api: Api<Service> = Api::namespaced(client, &ns);
    let patch = json!({"metadata": {"labels": {labels::EXPORTED: value}}});
    for svc in &args.services {
        ensure!(
            strait_core::identity::is_dns_label(svc),
            "{svc:?} is not a Service name"
        );
        match api
            .patch(svc, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => match value {
                Some(v) => println!("service/{svc} exported ({}={v})", labels::EXPORTED),
                None => println!("service/{svc} unexported"),
            },
            Err(e) if is_not_found(&e) => anyhow::bail!(
                "there is no Service {ns}/{svc} (`kubectl -n {ns} get services` lists them)"
            ),
            Err(e) => return Err(e).context(format!("labelling Service {ns}/{svc}")),
        }
    }
    Ok(())
}

pub async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let value = if args.remote_discovery {
        labels::EXPORTED_REMOTE_DISCOVERY
    } else {
        labels::EXPORTED_GATEWAY
    };
    label(args, Some(value)).await
}

pub async fn unexport(args: ExportArgs) -> anyhow::Result<()> {
    ensure!(
        !args.remote_discovery,
        "--remote-discovery is for `strait export`; `strait unexport` clears either kind"
    );
    label(args, None).await
}
