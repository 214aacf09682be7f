//! The flags of `strait install`, `strait uninstall` and `strait multicluster …`, as
//! Linkerd's CLI names them, and the commands that print.

use super::{InstallError, Output, Settings, format, multicluster};
use std::path::PathBuf;

/// `strait install`
#[derive(clap::Args, Debug)]
pub struct InstallArgs {
    /// PEM trust anchors (the root every linked cluster shares). Without the three identity
    /// files, an anchor and an issuer are generated.
    #[arg(long)]
    identity_trust_anchors_file: Option<PathBuf>,
    /// PEM issuer certificate, signed by the trust anchors.
    #[arg(long)]
    identity_issuer_certificate_file: Option<PathBuf>,
    /// PEM issuer private key (ECDSA P-256).
    #[arg(long)]
    identity_issuer_key_file: Option<PathBuf>,
    /// Use an existing kubernetes.io/tls Secret as the issuer (e.g. written by cert-manager),
    /// named by identity.issuer.secretName; needs --identity-trust-anchors-file.
    #[arg(long)]
    identity_external_issuer: bool,
    #[command(flatten)]
    common: Common,
}

/// `strait multicluster install`
#[derive(clap::Args, Debug)]
pub struct McInstallArgs {
    /// The PEM trust anchors the control plane was installed with.
    #[arg(long)]
    identity_trust_anchors_file: Option<PathBuf>,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Args, Debug)]
struct Common {
    /// A chart value, as `helm --set` takes it (the keys of the chart's values.yaml);
    /// repeat it or separate pairs with commas.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// A chart value that stays a string (`true`, `1`), as `helm --set-string` takes it.
    #[arg(long = "set-string", value_name = "KEY=VALUE")]
    set_strings: Vec<String>,
    /// High availability: the chart's values-ha.yaml (more replicas, PodDisruptionBudgets,
    /// anti-affinity), under any --set.
    #[arg(long)]
    ha: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Yaml)]
    output: Output,
}

/// `strait uninstall`
#[derive(clap::Args, Debug)]
pub struct UninstallArgs {
    /// The --set values the install used that name things (e.g. namespace=...).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Yaml)]
    output: Output,
}

/// `strait multicluster uninstall`
#[derive(clap::Args, Debug)]
pub struct McUninstallArgs {
    #[command(flatten)]
    uninstall: UninstallArgs,
    /// The cluster to check for Links.
    #[command(flatten)]
    kube: crate::kube_args::KubeArgs,
}

fn print(objects: &[serde_json::Value], output: Output) -> Result<(), InstallError> {
    print!("{}", format(objects, output)?);
    Ok(())
}

pub fn install(args: InstallArgs) -> Result<(), InstallError> {
    let settings = Settings {
        sets: args.common.sets,
        set_strings: args.common.set_strings,
        ha: args.common.ha,
        trust_anchors_file: args.identity_trust_anchors_file,
        issuer_cert_file: args.identity_issuer_certificate_file,
        issuer_key_file: args.identity_issuer_key_file,
        external_issuer: args.identity_external_issuer,
    };
    let rendered = super::render_control_plane(&settings)?;
    if let Some(notice) = rendered.notice {
        eprintln!("{notice}");
    }
    print(&rendered.objects, args.common.output)
}

pub fn uninstall(args: UninstallArgs) -> Result<(), InstallError> {
    print(&super::uninstall_control_plane(&args.sets)?, args.output)
}

pub fn multicluster_install(args: McInstallArgs) -> Result<(), InstallError> {
    let settings = Settings {
        sets: args.common.sets,
        set_strings: args.common.set_strings,
        ha: args.common.ha,
        trust_anchors_file: args.identity_trust_anchors_file,
        ..Settings::default()
    };
    print(
        &super::render_multicluster(&settings)?.objects,
        args.common.output,
    )
}

pub async fn multicluster_uninstall(args: McUninstallArgs) -> Result<(), InstallError> {
    // Render first: a bad --set is reported without touching the cluster.
    let objects = super::uninstall_multicluster(&args.uninstall.sets)?;
    let links = list_links(&args.kube).await?;
    multicluster::refuse_while_links(&links)?;
    eprintln!(
        "strait multicluster uninstall: the Link CRD is kept; delete it with \
         `kubectl delete crd links.multicluster.strait.dev` once no cluster needs it"
    );
    print(&objects, args.uninstall.output)
}

/// Every Link in the cluster, as (namespace, name); none when the CRD is not installed.
async fn list_links(
    cluster: &crate::kube_args::KubeArgs,
) -> Result<Vec<(String, String)>, InstallError> {
    use kube::api::{Api, ListParams};
    let err = |e: &dyn std::fmt::Display| InstallError::Cluster(e.to_string());
    let client = cluster
        .client()
        .await
        .map_err(|e| InstallError::Cluster(format!("{e:#}")))?;
    let api: Api<strait_k8s_api::Link> = Api::all(client);
    match api.list_metadata(&ListParams::default()).await {
        Ok(list) => Ok(list
            .items
            .into_iter()
            .map(|l| {
                (
                    l.metadata.namespace.unwrap_or_default(),
                    l.metadata.name.unwrap_or_default(),
                )
            })
            .collect()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Vec::new()),
        Err(e) => Err(err(&e)),
    }
}
