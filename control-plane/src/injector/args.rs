//! The injector's flags (with environment fallbacks), flattened into the binary's `Args`.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct InjectorArgs {
    /// Serve the proxy injector (admission webhook, HTTPS). Its certificate is issued from
    /// the identity issuer for `<--injector-service>.<control namespace>.svc` and renewed
    /// like the control plane's own, so the webhook's caBundle is the trust anchors; or give
    /// one with --injector-tls-cert and --injector-tls-key.
    #[arg(long, env = "STRAIT_INJECTOR")]
    pub injector: bool,
    /// The injector's Service (in the control namespace): the name its certificate carries.
    #[arg(
        long,
        env = "STRAIT_INJECTOR_SERVICE",
        default_value = "strait-injector"
    )]
    pub injector_service: String,
    /// Where the proxy injector listens.
    #[arg(long, env = "STRAIT_INJECTOR_ADDR", default_value_t = SocketAddr::from(([0, 0, 0, 0], strait_core::ports::INJECTOR)))]
    pub injector_addr: SocketAddr,
    /// The webhook's serving certificate (PEM, for the injector Service's DNS name), for
    /// installs that manage it themselves (cert-manager); implies --injector.
    #[arg(long, env = "STRAIT_INJECTOR_TLS_CERT", requires = "injector_tls_key")]
    pub injector_tls_cert: Option<PathBuf>,
    /// Its key.
    #[arg(long, env = "STRAIT_INJECTOR_TLS_KEY", requires = "injector_tls_cert")]
    pub injector_tls_key: Option<PathBuf>,
    /// The proxy image injected pods run.
    #[arg(
        long,
        env = "STRAIT_PROXY_IMAGE",
        default_value = "strait.local/proxy:dev"
    )]
    pub proxy_image: String,
    /// The init image that installs a pod's iptables rules.
    #[arg(
        long,
        env = "STRAIT_PROXY_INIT_IMAGE",
        default_value = "strait.local/proxy-init:dev"
    )]
    pub proxy_init_image: String,
    /// imagePullPolicy of both.
    #[arg(long, env = "STRAIT_PROXY_IMAGE_PULL_POLICY", default_value = "IfNotPresent",
          value_parser = ["IfNotPresent", "Always", "Never"])]
    pub proxy_image_pull_policy: String,
    /// The proxy's default log filter (a pod's config.strait.dev/proxy-log-level wins).
    #[arg(
        long,
        env = "STRAIT_PROXY_LOG_LEVEL",
        default_value = "warn,strait_proxy=info"
    )]
    pub proxy_log_level: String,
}

impl InjectorArgs {
    /// Whether the injector is to be served.
    pub fn enabled(&self) -> bool {
        self.injector || self.injector_tls_cert.is_some()
    }

    /// The DNS name the API server calls the webhook at.
    pub fn dns_name(&self, control_namespace: &str) -> String {
        format!("{}.{control_namespace}.svc", self.injector_service)
    }

    /// The settings injected proxies get, for a control plane in `control_namespace` of a
    /// cluster with `cluster_domain` and `trust_domain`, verifying with `trust_anchors_pem`.
    pub fn config(
        &self,
        control_namespace: &str,
        cluster_domain: &str,
        trust_domain: &str,
        trust_anchors_pem: String,
    ) -> strait_inject::Config {
        strait_inject::Config::for_install(strait_inject::Install {
            proxy_image: self.proxy_image.clone(),
            proxy_init_image: self.proxy_init_image.clone(),
            image_pull_policy: self.proxy_image_pull_policy.clone(),
            control_namespace: control_namespace.into(),
            cluster_domain: cluster_domain.into(),
            trust_domain: trust_domain.into(),
            trust_anchors_pem,
            log_level: self.proxy_log_level.clone(),
        })
    }
}
