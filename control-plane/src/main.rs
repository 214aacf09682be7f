//! `strait-control-plane`: destination, policy and identity gRPC.
//!
//! Parses its configuration (flags with environment fallbacks) and runs the services of
//! the library.

use anyhow::Context;
use clap::Parser;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use strait_control_plane::destination::{self, DestinationConfig, Discovery};
use strait_control_plane::identity::{
    self, IdentityService, KubeTokenReviewer, config::IdentityArgs, watch_issuer,
};
use strait_control_plane::own_cert;
use strait_control_plane::policy::{self, Policies, PolicyConfig};

/// All configuration of the binary, in one place.
#[derive(Debug, Parser)]
#[command(
    name = "strait-control-plane",
    version,
    about = "Destination, policy and identity gRPC for Strait's proxies"
)]
struct Args {
    /// Where the destination gRPC service listens.
    #[arg(long, env = "STRAIT_DESTINATION_ADDR", default_value_t = SocketAddr::from(([0, 0, 0, 0], strait_core::ports::DESTINATION_GRPC)))]
    destination_addr: SocketAddr,
    /// Where the policy gRPC service (InboundServerPolicies, OutboundPolicies) listens.
    #[arg(long, env = "STRAIT_POLICY_ADDR", default_value_t = SocketAddr::from(([0, 0, 0, 0], strait_core::ports::POLICY_GRPC)))]
    policy_addr: SocketAddr,
    /// Who may connect to a pod's port that no Server selects: all-unauthenticated,
    /// all-authenticated, cluster-unauthenticated, cluster-authenticated or deny. A namespace's
    /// or pod's `config.strait.dev/default-inbound-policy` annotation wins.
    #[arg(
        long,
        env = "STRAIT_DEFAULT_INBOUND_POLICY",
        default_value = "all-unauthenticated"
    )]
    default_inbound_policy: strait_k8s_api::policy::DefaultPolicy,
    /// The networks the cluster-* default policies admit (comma-separated CIDRs).
    #[arg(long, env = "STRAIT_CLUSTER_NETWORKS", default_value = policy::DEFAULT_CLUSTER_NETWORKS, value_parser = Networks::parse)]
    cluster_networks: Networks,
    /// Serve both gRPC services without TLS. Allowed only when both listen on loopback
    /// (tests); otherwise identity serves TLS and destination mTLS with their own identities,
    /// issued from the issuer (which then needs --trust-anchors).
    #[arg(long, env = "STRAIT_CONTROL_PLANE_PLAINTEXT")]
    plaintext: bool,
    /// The DNS suffix of this cluster's Services.
    #[arg(long, env = "STRAIT_CLUSTER_DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// Identity service flags; also --trust-domain, --control-namespace and --kubeconfig,
    /// which the destination service shares.
    #[command(flatten)]
    identity: IdentityArgs,
    /// Proxy injector flags (the admission webhook).
    #[command(flatten)]
    injector: strait_control_plane::injector::InjectorArgs,
}

/// `--cluster-networks`: one flag value holding a list, so clap must not see a `Vec` (it would
/// take the field for a repeated flag of single networks and fail to read it back).
#[derive(Clone, Debug)]
struct Networks(Vec<ipnet::IpNet>);

impl Networks {
    fn parse(s: &str) -> Result<Self, String> {
        policy::parse_networks(s).map(Self)
    }
}

impl Args {
    fn destination(&self) -> DestinationConfig {
        DestinationConfig {
            cluster_domain: self.cluster_domain.clone(),
            control_namespace: self.identity.control_namespace.clone(),
            trust_domain: self.identity.trust_domain.clone(),
            ..DestinationConfig::default()
        }
    }

    fn policy(&self) -> PolicyConfig {
        PolicyConfig {
            cluster_domain: self.cluster_domain.clone(),
            control_namespace: self.identity.control_namespace.clone(),
            trust_domain: self.identity.trust_domain.clone(),
            default_policy: self.default_inbound_policy,
            cluster_networks: self.cluster_networks.0.clone(),
            ..PolicyConfig::default()
        }
    }
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
    let args = Args::parse();
    let (ns, td) = (
        args.identity.control_namespace.clone(),
        args.identity.trust_domain.clone(),
    );
    if args.plaintext {
        own_cert::check_plaintext(&[
            ("--identity-addr", args.identity.identity_addr),
            ("--destination-addr", args.destination_addr),
            ("--policy-addr", args.policy_addr),
        ])?;
        tracing::warn!("--plaintext: serving gRPC without TLS (loopback only)");
    }
    let destination_config = args.destination();
    let policy_config = args.policy();
    let client = identity::config::kube_client(args.identity.kubeconfig.as_deref())
        .await
        .context("kubernetes client")?;
    let mut registry = Registry::default();
    // Before identity's settings are taken apart below.
    let injector = if args.injector.enabled() {
        Some(injector(&args, client.clone(), &mut registry)?)
    } else {
        None
    };

    // Identity: only when an issuer is configured (a destination-only control plane is valid).
    let identity = if args.identity.has_issuer() {
        let config = args.identity.validate().context("identity configuration")?;
        let metrics = identity::Metrics::register(&mut registry);
        let (issuer, _reloader) = watch_issuer(
            config.issuer_source(&client),
            config.issuer_poll,
            metrics.clone(),
        )
        .await
        .context("loading the issuer")?;
        if let Some(anchors) = &config.trust_anchors {
            let probe = strait_core::identity::Identity::new(
                "identity-check",
                &config.settings.control_namespace,
                &config.settings.control_namespace,
                &config.settings.trust_domain,
            )
            .context("probe identity")?;
            issuer
                .borrow()
                .verify_against(anchors, &probe)
                .context("checking the issuer against --trust-anchors")?;
            tracing::info!("the issuer chains to the trust anchors");
        }
        let tls = match (&config.trust_anchors, args.plaintext) {
            (_, true) => None,
            (Some(anchors), false) => Some((anchors.clone(), issuer.clone())),
            (None, false) => anyhow::bail!(
                "serving TLS needs --trust-anchors (STRAIT_TRUST_ANCHORS); or pass --plaintext \
                 with loopback addresses (tests)"
            ),
        };
        let svc = IdentityService::new(
            config.settings.clone(),
            issuer,
            Arc::new(KubeTokenReviewer::new(client.clone())),
            metrics,
        );
        Some((config, svc, tls))
    } else {
        tracing::warn!(
            "no --issuer-cert/--issuer-key or --issuer-secret: identity service disabled"
        );
        if !args.plaintext {
            anyhow::bail!(
                "destination serves mTLS with a certificate from the issuer: pass \
                 --issuer-cert/--issuer-key or --issuer-secret and --trust-anchors, or \
                 --plaintext with loopback addresses (tests)"
            );
        }
        None
    };
    // The control plane's own certificates (one per identity: linkerd identities have one SAN).
    let (ns, td) = (ns.as_str(), td.as_str());
    let own = match identity
        .as_ref()
        .and_then(|(config, _, tls)| tls.clone().map(|t| (config, t)))
    {
        None => None,
        Some((config, (anchors, issuer))) => {
            let lifetime = config.settings.lifetime;
            let id_name = strait_core::identity::Identity::new(
                own_cert::IDENTITY_SERVICE_ACCOUNT,
                ns,
                ns,
                td,
            )
            .context("the identity service's identity")?;
            let dst_name = strait_core::identity::Identity::new(
                own_cert::DESTINATION_SERVICE_ACCOUNT,
                ns,
                ns,
                td,
            )
            .context("the destination service's identity")?;
            let id_tls = own_cert::identity_server_config(
                &anchors,
                own_cert::keep_issued(issuer.clone(), id_name.clone(), lifetime)
                    .context("issuing the identity service's certificate")?,
            )?;
            let dst_tls = own_cert::destination_server_config(
                &anchors,
                own_cert::keep_issued(issuer, dst_name.clone(), lifetime)
                    .context("issuing the destination service's certificate")?,
            )?;
            tracing::info!(identity = %id_name, destination = %dst_name, "serving TLS as");
            Some((id_tls, dst_tls))
        }
    };

    // The injector's certificate: given as files, or issued from the issuer like the above.
    let injector = match injector {
        None => None,
        Some((tls, state)) => {
            let tls = match (tls, &identity) {
                (Some(tls), _) => tls,
                (None, Some((config, _, Some((_, issuer))))) => {
                    let dns = args.injector.dns_name(&config.settings.control_namespace);
                    let cert = own_cert::keep_serving(
                        issuer.clone(),
                        dns.clone(),
                        config.settings.lifetime,
                    )
                    .context("issuing the injector's certificate")?;
                    tracing::info!(%dns, "the injector serves a certificate from the issuer");
                    strait_tls::webhook_server_config_watch(cert)?
                }
                (None, _) => anyhow::bail!(
                    "the proxy injector needs a certificate: give --injector-tls-cert and \
                     --injector-tls-key, or an issuer (--issuer-secret or --issuer-cert/--issuer-key) \
                     without --plaintext so one is issued"
                ),
            };
            Some((tls, state))
        }
    };

    let discovery = Discovery::spawn(client.clone());
    let policies = Policies::spawn(client, &discovery, policy_config);
    let svc = discovery.service(
        destination_config,
        destination::Metrics::register(&mut registry),
    );
    let registry = Arc::new(registry);

    let mut tasks = tokio::task::JoinSet::new();
    let (id_tls, dst_tls) = own.unzip();
    if let Some((config, svc, _)) = identity {
        let admin = tokio::net::TcpListener::bind(config.admin_addr)
            .await
            .with_context(|| format!("binding the admin address {}", config.admin_addr))?;
        tokio::spawn(serve_metrics(admin, registry.clone()));
        tracing::info!(addr = %config.identity_addr, "identity gRPC listening");
        let listener = tokio::net::TcpListener::bind(config.identity_addr)
            .await
            .with_context(|| format!("binding the identity address {}", config.identity_addr))?;
        tasks.spawn(async move {
            match id_tls {
                Some(tls) => identity::serve_tls(listener, svc, tls, shutdown()).await,
                None => identity::serve(listener, svc, shutdown()).await,
            }
            .context("identity gRPC server")
        });
    }
    if let Some((tls, state)) = injector {
        let addr = args.injector.injector_addr;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the injector address {addr}"))?;
        tracing::info!(%addr, "proxy injector listening");
        tasks.spawn(async move {
            strait_control_plane::injector::serve(listener, tls, state, shutdown())
                .await
                .context("proxy injector")
        });
    }
    let listener = tokio::net::TcpListener::bind(args.policy_addr)
        .await
        .with_context(|| format!("binding the policy address {}", args.policy_addr))?;
    tracing::info!(addr = %args.policy_addr, default = %args.default_inbound_policy, "policy gRPC listening");
    let (policy_tls, policies) = (dst_tls.clone(), Arc::new(policies));
    let for_policy = policies.clone();
    tasks.spawn(async move {
        match policy_tls {
            Some(tls) => policy::serve_tls(listener, &for_policy, tls, shutdown()).await,
            None => policy::serve(listener, &for_policy, shutdown()).await,
        }
        .context("policy gRPC server")
    });
    let listener = tokio::net::TcpListener::bind(args.destination_addr).await?;
    tracing::info!(addr = %args.destination_addr, "destination gRPC (and policy) listening");
    tasks.spawn(async move {
        policy::serve_with_destination(listener, svc, &policies, dst_tls, shutdown())
            .await
            .context("destination gRPC server")
    });
    while let Some(done) = tasks.join_next().await {
        done.context("server task")??;
    }
    Ok(())
}

/// The injector's TLS config when given as files (else it is issued from the issuer) and its
/// state: the trust anchors it hands to every injected proxy (--trust-anchors is required).
fn injector(
    args: &Args,
    client: kube::Client,
    registry: &mut Registry,
) -> anyhow::Result<(
    Option<Arc<strait_tls::rustls::ServerConfig>>,
    strait_control_plane::injector::State,
)> {
    let read = |flag: &str, p: &std::path::Path| {
        std::fs::read(p).with_context(|| format!("reading {flag} {}", p.display()))
    };
    let tls = match (
        &args.injector.injector_tls_cert,
        &args.injector.injector_tls_key,
    ) {
        (Some(cert), Some(key)) => Some(
            strait_tls::webhook_server_config(
                &read("--injector-tls-cert", cert)?,
                &read("--injector-tls-key", key)?,
                "--injector-tls-cert/--injector-tls-key",
            )
            .context("the injector's certificate")?,
        ),
        (None, None) => None,
        _ => anyhow::bail!("--injector-tls-cert and --injector-tls-key go together"),
    };
    let anchors_path = args.identity.trust_anchors.as_ref().context(
        "the proxy injector needs --trust-anchors: injected proxies verify the control plane with them",
    )?;
    let anchors = String::from_utf8(read("--trust-anchors", anchors_path)?)
        .context("--trust-anchors is not PEM text")?;
    strait_tls::TrustAnchors::from_pem(anchors.as_bytes(), "--trust-anchors")
        .context("--trust-anchors")?;
    let mut config = args.injector.config(
        &args.identity.control_namespace,
        &args.cluster_domain,
        &args.identity.trust_domain,
        anchors,
    );
    // What injected proxies apply while the policy service has not answered: the cluster's.
    args.default_inbound_policy
        .as_str()
        .clone_into(&mut config.default_inbound_policy);
    Ok((
        tls,
        strait_control_plane::injector::State {
            config: Arc::new(config),
            client,
            metrics: strait_control_plane::injector::Metrics::register(registry),
        },
    ))
}

async fn shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(error) => {
            tracing::warn!(%error, "cannot watch SIGTERM; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
}

/// `GET /metrics` in the Prometheus text format; every other path is 404.
async fn serve_metrics(listener: tokio::net::TcpListener, registry: Arc<Registry>) {
    use http_body_util::Full;
    use hyper::{Response, StatusCode, body::Bytes, service::service_fn};
    loop {
        let Ok((io, _)) = listener.accept().await else {
            continue;
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let registry = registry.clone();
                async move {
                    let (status, body) = if req.uri().path() == "/metrics" {
                        let mut text = String::new();
                        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
                        (StatusCode::OK, text)
                    } else {
                        (StatusCode::NOT_FOUND, String::new())
                    };
                    let mut rsp = Response::new(Full::new(Bytes::from(body)));
                    *rsp.status_mut() = status;
                    Ok::<_, std::convert::Infallible>(rsp)
                }
            });
            let io = hyper_util::rt::TokioIo::new(io);
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await
            {
                tracing::debug!(%error, "metrics connection");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_are_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }

    #[test]
    fn cluster_networks_default_and_parse_as_one_list() {
        let args = Args::try_parse_from(["strait-control-plane"]).expect("defaults parse");
        assert_eq!(
            args.policy().cluster_networks,
            policy::parse_networks(policy::DEFAULT_CLUSTER_NETWORKS).expect("default networks")
        );
        let args = Args::try_parse_from([
            "strait-control-plane",
            "--cluster-networks",
            "10.0.0.0/8, fd00::/8",
        ])
        .expect("a list parses");
        let nets: Vec<String> = args
            .policy()
            .cluster_networks
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(nets, ["10.0.0.0/8", "fd00::/8"]);
    }

    #[test]
    fn a_bad_cluster_network_is_refused_by_name() {
        let parsed = Args::try_parse_from([
            "strait-control-plane",
            "--cluster-networks",
            "10.0.0.0/8,10.0.0.300/8",
        ]);
        let Err(err) = parsed else {
            panic!("10.0.0.300/8 was accepted");
        };
        let text = err.to_string();
        assert!(text.contains("--cluster-networks"), "{text}");
        assert!(text.contains("10.0.0.300/8"), "{text}");
    }
}
