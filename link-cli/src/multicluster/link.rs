//! `strait multicluster link`, `unlink` and `allow`.
//!
//! `link` runs against the TARGET cluster and prints what the SOURCE cluster applies: a
//! credentials Secret whose kubeconfig holds only the target (its CA, its server, a token
//! of the remote-access ServiceAccount) and a Link whose gateway settings come from the
//! target's gateway Service. The token comes from the TokenRequest API and expires
//! (`--token-lifetime`); the source's mirror controller renews it before it does, with the
//! token itself (the remote-access account may request tokens for itself and nothing else).

pub use super::link_objects::credentials_secret;
use super::link_objects::{apply_sets, credentials_object, link_object, remote_kubeconfig};
use super::{KubeArgs, is_not_found, selector};
use crate::install::Output;
use crate::install::multicluster::{
    REMOTE_ACCESS, remote_access_account, remote_access_cluster_role,
};
use anyhow::{Context as _, bail, ensure};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use kube::api::{Api, PostParams};
use serde_json::json;
use std::time::Duration;
use strait_core::identity::{DEFAULT_CONTROL_NAMESPACE, GATEWAY_SERVICE_ACCOUNT as GATEWAY};
use strait_core::labels;
use strait_k8s_api::{Link, LinkSpec, ProbeSpec};

/// The multicluster namespace both charts default to.
pub const DEFAULT_NAMESPACE: &str = "strait-multicluster";
/// The gateway Service's named ports (charts/strait-multicluster/templates/gateway.yaml).
const GATEWAY_PORT_NAME: &str = "mc-gateway";
const PROBE_PORT_NAME: &str = "mc-probe";
/// The shortest lifetime the TokenRequest API grants.
const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(600);

/// `strait multicluster link`
#[derive(clap::Args, Debug)]
pub struct LinkArgs {
    #[command(flatten)]
    pub kube: KubeArgs,
    /// The name the source cluster gives the target; mirrors are named `<svc>-<NAME>`.
    #[arg(long)]
    pub cluster_name: String,
    /// The multicluster namespace: of the target's gateway and remote-access account, and of
    /// the Link and Secret in the source.
    #[arg(long, default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// The account whose token the Link uses (another one from `strait multicluster allow`).
    #[arg(long, default_value = REMOTE_ACCESS)]
    pub service_account_name: String,
    /// The target's API server as the source's mirror controller reaches it, for clusters
    /// whose kubeconfig names a local address (`https://host:port`).
    #[arg(long)]
    pub api_server_address: Option<String>,
    /// The gateway's addresses (IPs or hostnames), instead of its Service's ingress.
    #[arg(long, value_delimiter = ',')]
    pub gateway_addresses: Vec<String>,
    /// The gateway's mTLS port, instead of its Service's `mc-gateway` port.
    #[arg(long)]
    pub gateway_port: Option<u16>,
    /// Remote Services mirrored through the gateway (kubectl's `-l` syntax).
    #[arg(long, default_value = "mirror.strait.dev/exported=true")]
    pub selector: String,
    /// Remote Services mirrored pod to pod, for clusters on one flat network (default
    /// `mirror.strait.dev/exported=remote-discovery` when the target's remote-access account
    /// may read Pods, that is with remoteAccess.pods=true; none otherwise).
    #[arg(long)]
    pub remote_discovery_selector: Option<String>,
    /// Services (remote, and local ones) that join their federated Service `<svc>-federated`
    /// (empty: none).
    #[arg(long, default_value = "mirror.strait.dev/federated=member")]
    pub federated_selector: String,
    /// The target's DNS domain, when it is not `cluster.local`.
    #[arg(long)]
    pub target_cluster_domain: Option<String>,
    /// How long the token is valid; the mirror controller renews it before then.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "168h")]
    pub token_lifetime: Duration,
    /// A field of the Link's spec, `probeSpec.period=10s`; repeat it. Wins over the rest.
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    pub sets: Vec<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Yaml)]
    pub output: Output,
}

/// What the gateway Service says about reaching the gateway.
#[derive(Debug, PartialEq)]
struct GatewayInfo {
    addresses: Vec<String>,
    port: u16,
    identity: String,
    probe: ProbeSpec,
}

/// Reads the gateway's addresses, ports, identity and probe settings from its Service,
/// as the chart writes it; flags fill or replace what the Service cannot say.
fn gateway_info(svc: &Service, args: &LinkArgs) -> anyhow::Result<GatewayInfo> {
    let ns = &args.namespace;
    let spec = svc.spec.clone().unwrap_or_default();
    let ports = spec.ports.clone().unwrap_or_default();
    let named = |n: &str| ports.iter().find(|p| p.name.as_deref() == Some(n));
    let type_ = spec.type_.as_deref().unwrap_or("ClusterIP");
    let addresses = if !args.gateway_addresses.is_empty() {
        args.gateway_addresses.clone()
    } else if type_ == "LoadBalancer" {
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.clone())
            .unwrap_or_default();
        let addrs: Vec<String> = ingress
            .into_iter()
            .filter_map(|i| i.ip.or(i.hostname))
            .collect();
        ensure!(
            !addrs.is_empty(),
            "the gateway Service {ns}/{GATEWAY} has no load-balancer address yet: wait for it \
             (`kubectl -n {ns} get service {GATEWAY} -w`) or pass --gateway-addresses"
        );
        addrs
    } else {
        bail!(
            "the gateway Service {ns}/{GATEWAY} is of type {type_}, which gives no address \
             another cluster can reach: pass --gateway-addresses (and --gateway-port for a \
             NodePort), or install the gateway with gateway.service.type=LoadBalancer"
        );
    };
    let port = match (args.gateway_port, named(GATEWAY_PORT_NAME)) {
        (Some(p), _) => p,
        (None, Some(p)) if type_ == "NodePort" => {
            p.node_port
                .and_then(|n| u16::try_from(n).ok())
                .context("the gateway Service's mc-gateway port has no nodePort yet")?
        }
        (None, Some(p)) => u16::try_from(p.port).context("the mc-gateway port is out of range")?,
        (None, None) => bail!(
            "the gateway Service {ns}/{GATEWAY} has no port named {GATEWAY_PORT_NAME}: pass --gateway-port"
        ),
    };
    let annotations = svc.metadata.annotations.clone().unwrap_or_default();
    let identity = annotations
        .get(labels::GATEWAY_IDENTITY)
        .cloned()
        .with_context(|| {
            format!(
                "the gateway Service {ns}/{GATEWAY} has no annotation {}: reinstall the \
                 multicluster chart, or pass --set gatewayIdentity=...",
                labels::GATEWAY_IDENTITY
            )
        })?;
    let mut probe = ProbeSpec::default();
    if let Some(path) = annotations.get(labels::PROBE_PATH) {
        probe.path.clone_from(path);
    }
    if let Some(period) = annotations.get(labels::PROBE_PERIOD) {
        probe.period.clone_from(period);
    }
    if let Some(p) = named(PROBE_PORT_NAME) {
        probe.port = match (type_, p.node_port) {
            ("NodePort", Some(n)) => u16::try_from(n).unwrap_or(probe.port),
            _ => u16::try_from(p.port).unwrap_or(probe.port),
        };
    }
    Ok(GatewayInfo {
        addresses,
        port,
        identity,
        probe,
    })
}

/// `strait multicluster link`: reads the target, prints the Secret and the Link.
pub async fn link(args: LinkArgs) -> anyhow::Result<()> {
    ensure!(
        strait_core::identity::is_dns_label(&args.cluster_name),
        "--cluster-name {:?} is not a DNS label (lower-case letters, digits and '-', at most 63)",
        args.cluster_name
    );
    ensure!(
        args.token_lifetime >= MIN_TOKEN_LIFETIME,
        "--token-lifetime must be at least 10m (the TokenRequest API's minimum)"
    );
    let rd_default = format!("{}={}", labels::EXPORTED, labels::EXPORTED_REMOTE_DISCOVERY);
    let rd_selector = args.remote_discovery_selector.clone().unwrap_or(rd_default);
    let selectors = [
        ("--selector", &args.selector),
        ("--remote-discovery-selector", &rd_selector),
        ("--federated-selector", &args.federated_selector),
    ]
    .map(|(flag, s)| selector::parse(s).with_context(|| format!("{flag} {s:?}")));
    let [selector, remote_discovery, federated] = selectors;
    let (selector, mut remote_discovery, federated) = (selector?, remote_discovery?, federated?);
    let empty = |s: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector| {
        (s != Default::default()).then_some(s)
    };

    let config = args.kube.config().await?;
    let server = match &args.api_server_address {
        Some(a) => {
            let uri: http::Uri = a
                .parse()
                .with_context(|| format!("--api-server-address {a:?} is not a URL"))?;
            ensure!(
                uri.scheme_str() == Some("https") && uri.host().is_some(),
                "--api-server-address {a:?} must be https://HOST[:PORT]"
            );
            a.trim_end_matches('/').to_owned()
        }
        None => config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_owned(),
    };
    ensure!(
        !config.accept_invalid_certs,
        "the target's kubeconfig skips TLS verification; a Link made from it would send its \
         token to any server: give the cluster's CA (certificate-authority-data) instead"
    );
    let ca_pem = config.root_cert.as_ref().map(|certs| {
        certs
            .iter()
            .map(|der| strait_tls::der_to_pem(der))
            .collect::<String>()
    });
    let client = kube::Client::try_from(config).context("building the Kubernetes client")?;
    let ns = &args.namespace;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    match accounts.get(&args.service_account_name).await {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => bail!(
            "the target cluster has no ServiceAccount {ns}/{sa}: install the multicluster \
             extension there (`helm install strait-multicluster charts/strait-multicluster` or \
             `strait multicluster install | kubectl apply -f -`){hint}",
            sa = args.service_account_name,
            hint = if args.service_account_name == REMOTE_ACCESS {
                String::new()
            } else {
                format!(
                    ", then `strait multicluster allow --service-account-name {}`",
                    args.service_account_name
                )
            }
        ),
        Err(e) => {
            return Err(e).context(format!(
                "reading ServiceAccount {ns}/{}",
                args.service_account_name
            ));
        }
    }
    let gateway = match Api::<Service>::namespaced(client.clone(), ns)
        .get(GATEWAY)
        .await
    {
        Ok(svc) => gateway_info(&svc, &args)?,
        Err(e) if is_not_found(&e) && !args.gateway_addresses.is_empty() => GatewayInfo {
            addresses: args.gateway_addresses.clone(),
            port: args.gateway_port.unwrap_or(strait_core::ports::GATEWAY),
            // Only a `--set gatewayIdentity=...` can say it (checked below).
            identity: String::new(),
            probe: ProbeSpec::default(),
        },
        Err(e) if is_not_found(&e) => bail!(
            "the target cluster has no gateway Service {ns}/{GATEWAY}: install the multicluster \
             extension with gateway.enabled=true, or pass --gateway-addresses for a gateway of your own"
        ),
        Err(e) => return Err(e).context(format!("reading the gateway Service {ns}/{GATEWAY}")),
    };

    // Remote discovery watches the target's Pods, which its account may read only with
    // remoteAccess.pods=true: a Link asking for more than it may read would never sync.
    if remote_discovery != Default::default()
        && !may_read_pods(&client, ns, &args.service_account_name).await?
    {
        ensure!(
            args.remote_discovery_selector.is_none(),
            "--remote-discovery-selector: the target's account {ns}/{} may not read Pods, which \
             remote discovery watches: install the target's multicluster chart with \
             remoteAccess.pods=true, or drop the flag",
            args.service_account_name
        );
        eprintln!(
            "strait multicluster link: remote discovery is off (the target's remote-access \
             account may not read Pods; install its multicluster chart with remoteAccess.pods=true to turn it on)"
        );
        remote_discovery = Default::default();
    }
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(
                i64::try_from(args.token_lifetime.as_secs()).unwrap_or(i64::MAX),
            ),
            bound_object_ref: None,
        },
        ..Default::default()
    };
    let granted = accounts
        .create_token_request(&args.service_account_name, &PostParams::default(), &request)
        .await
        .context(format!(
            "requesting a token for {ns}/{} (the target's kubeconfig needs `create serviceaccounts/token` there)",
            args.service_account_name
        ))?;
    let status = granted
        .status
        .context("the API server answered the TokenRequest without a token")?;
    let kubeconfig = remote_kubeconfig(
        &args.cluster_name,
        &server,
        ca_pem.as_deref(),
        &status.token,
    )?;

    let mut spec = LinkSpec {
        target_cluster_name: args.cluster_name.clone(),
        target_cluster_domain: args.target_cluster_domain.clone(),
        cluster_credentials_secret: credentials_secret(&args.cluster_name),
        gateway_address: gateway.addresses.join(","),
        gateway_port: gateway.port,
        gateway_identity: gateway.identity,
        probe_spec: gateway.probe,
        selector: empty(selector),
        remote_discovery_selector: empty(remote_discovery),
        federated_service_selector: empty(federated),
        excluded_labels: Vec::new(),
        excluded_annotations: Vec::new(),
        create_namespaces: None,
        mirror_headless_services: None,
    };
    spec = apply_sets(spec, &args.sets)?;
    ensure!(
        !spec.gateway_identity.is_empty(),
        "there is no gateway Service to read the gateway's identity from: pass \
         --set gatewayIdentity=<its certificate's DNS name>"
    );
    let objects = vec![
        credentials_object(&args.cluster_name, ns, &kubeconfig),
        link_object(&args.cluster_name, ns, spec)?,
    ];
    eprintln!(
        "strait multicluster link: token for {ns}/{} valid until {}; the mirror controller renews it. \
         Apply the output in the SOURCE cluster: `... | kubectl --context SOURCE apply -f -`",
        args.service_account_name, status.expiration_timestamp.0,
    );
    print!("{}", crate::install::format(&objects, args.output)?);
    Ok(())
}

/// Whether ServiceAccount `ns/name` may list and watch Pods in every namespace, asked of the
/// target's API server with SubjectAccessReviews (the linking user may create them).
async fn may_read_pods(client: &kube::Client, ns: &str, name: &str) -> anyhow::Result<bool> {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
    };
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    for verb in ["list", "watch"] {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(format!("system:serviceaccount:{ns}:{name}")),
                groups: Some(vec![
                    "system:serviceaccounts".into(),
                    format!("system:serviceaccounts:{ns}"),
                    "system:authenticated".into(),
                ]),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.into()),
                    resource: Some("pods".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .context("asking the target whether the account may read Pods (the linking user needs `create subjectaccessreviews`)")?;
        if !answer.status.is_some_and(|s| s.allowed) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `strait multicluster unlink`
#[derive(clap::Args, Debug)]
pub struct UnlinkArgs {
    #[command(flatten)]
    pub kube: KubeArgs,
    /// The linked cluster's name, as given to `link`.
    #[arg(long)]
    pub cluster_name: String,
    /// The namespace of the Link.
    #[arg(long, default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Yaml)]
    pub output: Output,
}

/// `strait multicluster unlink`: prints the Link and its credentials Secret, for
/// `kubectl delete -f -` in the SOURCE cluster; the controller's finalizer removes the
/// Link's mirrors before the Link goes.
pub async fn unlink(args: UnlinkArgs) -> anyhow::Result<()> {
    let ns = &args.namespace;
    let client = args.kube.client().await?;
    let links: Api<Link> = Api::namespaced(client, ns);
    let all = links.list(&Default::default()).await.with_context(|| {
        format!("listing the Links in {ns} (is the multicluster extension installed here?)")
    })?;
    let Some(link) = all
        .items
        .into_iter()
        .find(|l| l.spec.target_cluster_name == args.cluster_name)
    else {
        bail!(
            "no Link in {ns} targets cluster {:?}; `kubectl -n {ns} get links` lists them",
            args.cluster_name
        );
    };
    let name = link.metadata.name.clone().unwrap_or_default();
    let objects = vec![
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": link.spec.cluster_credentials_secret, "namespace": ns}}),
        json!({"apiVersion": "multicluster.strait.dev/v1alpha1", "kind": "Link",
               "metadata": {"name": name, "namespace": ns}}),
    ];
    eprintln!(
        "strait multicluster unlink: delete these in the source cluster (`... | kubectl delete -f -`); \
         the mirror controller removes the mirrors of {} first",
        args.cluster_name
    );
    print!("{}", crate::install::format(&objects, args.output)?);
    Ok(())
}

/// `strait multicluster allow`
#[derive(clap::Args, Debug)]
pub struct AllowArgs {
    /// The target cluster, checked for the multicluster extension the account is bound into.
    #[command(flatten)]
    pub kube: KubeArgs,
    /// The new account, one per consuming cluster, so each can be revoked on its own
    /// (`kubectl -n NAMESPACE delete serviceaccount NAME` ends every token it was given).
    #[arg(long)]
    pub service_account_name: String,
    /// The multicluster namespace of this (the target) cluster.
    #[arg(long, default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// The control plane's namespace (the trust anchors linked clusters compare).
    #[arg(long, default_value = DEFAULT_CONTROL_NAMESPACE)]
    pub control_plane_namespace: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Yaml)]
    pub output: Output,
}

/// `strait multicluster allow`: prints an account with the remote-access rights, for
/// `kubectl apply -f -` in the TARGET cluster; `link --service-account-name` then uses it.
pub async fn allow(args: AllowArgs) -> anyhow::Result<()> {
    for (flag, v) in [
        ("--service-account-name", &args.service_account_name),
        ("--namespace", &args.namespace),
        ("--control-plane-namespace", &args.control_plane_namespace),
    ] {
        ensure!(
            strait_core::identity::is_dns_label(v),
            "{flag} {v:?} is not a DNS label (lower-case letters, digits and '-', at most 63)"
        );
    }
    // The account is bound to the extension's ClusterRole: without it the account could
    // read nothing, and the Link using it would fail later and less clearly.
    use k8s_openapi::api::rbac::v1::ClusterRole;
    let role = remote_access_cluster_role(&args.namespace);
    let client = args.kube.client().await?;
    match Api::<ClusterRole>::all(client).get(&role).await {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => bail!(
            "this cluster has no ClusterRole {role}: install the multicluster extension here \
             first (`helm install strait-multicluster charts/strait-multicluster ...`), with \
             --namespace {}",
            args.namespace
        ),
        Err(e) => return Err(e).context(format!("reading ClusterRole {role}")),
    }
    let objects = remote_access_account(
        &args.service_account_name,
        &args.namespace,
        &args.control_plane_namespace,
    );
    print!("{}", crate::install::format(&objects, args.output)?);
    Ok(())
}

#[cfg(test)]
mod tests;
