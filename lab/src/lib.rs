//! # strait-lab
//!
//! The picture of the design, assembled on one machine from real parts: two local clusters
//! sharing one trust anchor, each with its control plane, a meshed `web` in east behind the
//! east gateway, the mirror controller in west with a `Link` to east, and a meshed client in
//! west. The end-to-end suite (`tests/tests/multicluster.rs`) and `strait demo` both build
//! their world with it, so the demo shows exactly what CI proves.
//!
//! ```text
//!  west                                         east
//!  client pod ─► strait-proxy ──mTLS+header──► gateway pod (strait-gateway :4143, :4191)
//!     ▲ Get(web-east)                             │ Get(web.shop.svc) ─► web pod: proxy ─► app
//!  ControlPlane (destination, identity)        ControlPlane (destination, identity)
//!  MirrorLink: strait-mirror + Link ── watches exported Services, probes :4191/ready ──►
//! ```
//!
//! How to start: [`Lab::new`] with the [`Binaries`] to run in pods, then
//! [`Lab::control_plane`] per cluster, [`Lab::meshed_pod`] for workloads (its certificate comes
//! from the cluster's identity service), [`Lab::gateway`] in the exporting cluster and
//! [`Lab::link`] in the importing one. Everything stops when dropped. The programs pods run
//! (HTTP/1, HTTP/2, gRPC, TCP servers and clients) are in [`tool`].

pub mod tool;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::CustomResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use strait_control_plane::destination::{self, DestinationConfig, Discovery};
use strait_control_plane::identity::{self as id_svc, IdentityService, IdentitySettings};
use strait_control_plane::own_cert;
use strait_core::identity::Identity;
use strait_k8s_api::Link;
use strait_localcluster::{Cluster, Pod, PodSpec};
use strait_tls::{Issuer, TrustAnchors};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The namespace of the gateway and of Links.
pub const MULTICLUSTER_NS: &str = strait_core::identity::GATEWAY_NAMESPACE;
/// The uid the sidecar proxy runs as (its own traffic is never redirected).
pub const PROXY_UID: u32 = 2102;
/// The longest the lab waits for anything to become ready.
pub const WAIT: Duration = Duration::from_secs(60);

/// Why a step of the lab failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("local cluster")]
    Cluster(#[from] strait_localcluster::Error),
    #[error("Kubernetes API")]
    Kube(#[from] kube::Error),
    #[error("certificates")]
    Tls(#[from] strait_tls::TlsError),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} not ready after {after:?}\n{logs}")]
    NotReady {
        what: String,
        after: Duration,
        logs: String,
    },
    #[error("{0}")]
    Invalid(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// The programs the lab starts in pods.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// The `strait-proxy` binary (run, and `init` for iptables).
    pub proxy: PathBuf,
    /// The `strait-gateway` binary.
    pub gateway: PathBuf,
    /// A program that runs [`tool::run`] on its arguments after `tool_args`.
    pub tool: PathBuf,
    pub tool_args: Vec<String>,
}

/// The identity of service account `sa` in namespace `ns` (default domain).
pub fn identity(sa: &str, ns: &str) -> Result<Identity, Error> {
    Identity::new(
        sa,
        ns,
        strait_core::identity::DEFAULT_CONTROL_NAMESPACE,
        strait_core::identity::DEFAULT_TRUST_DOMAIN,
    )
    .map_err(|e| Error::Invalid(format!("identity {sa}.{ns}: {e}")))
}

/// One shared trust anchor, the binaries, and a folder that proxies (uid 2102) can read.
#[derive(Debug)]
pub struct Lab {
    bins: Binaries,
    anchor: Issuer,
    dir: tempfile::TempDir,
}

impl Lab {
    pub fn new(bins: Binaries) -> Result<Self, Error> {
        let anchor = Issuer::generate_anchor(
            strait_core::identity::DEFAULT_TRUST_DOMAIN,
            strait_tls::DEFAULT_ANCHOR_LIFETIME,
            SystemTime::now(),
        )?;
        let dir = tempfile::Builder::new()
            .prefix("strait-lab-")
            .tempdir()
            .map_err(io("creating the lab folder"))?;
        set_mode(dir.path(), 0o755)?;
        std::fs::write(dir.path().join("ca.crt"), anchor.cert_pem())
            .map_err(io("writing the trust anchor"))?;
        set_mode(&dir.path().join("ca.crt"), 0o644)?;
        Ok(Self { bins, anchor, dir })
    }

    /// PEM of the shared trust anchor.
    pub fn anchors_pem(&self) -> String {
        self.anchor.cert_pem()
    }

    fn anchors(&self) -> Result<TrustAnchors, Error> {
        Ok(self.anchor.as_anchors()?)
    }

    /// A command running the tool in `pod` with `args`.
    pub fn tool_command(&self, pod: &Pod, args: &[&str]) -> std::process::Command {
        let mut cmd = pod.command(&self.bins.tool);
        cmd.args(&self.bins.tool_args).args(args);
        cmd
    }

    /// Runs the tool in `pod` to completion (bounded): (success, stdout, stderr).
    pub async fn tool(&self, pod: &Pod, args: &[&str]) -> Result<(bool, String, String), Error> {
        let mut cmd = tokio::process::Command::from(self.tool_command(pod, args));
        cmd.kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
            .await
            .map_err(|_| Error::Invalid(format!("tool {args:?} in {} timed out", pod.name())))?
            .map_err(io(format!("running the tool in {}", pod.name())))?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Starts `cluster`'s control plane in this process: a fresh issuer under the shared anchor,
    /// the identity service and the destination service, both on all addresses so pods reach
    /// them at the cluster's host address.
    pub async fn control_plane(&self, cluster: &Cluster) -> Result<ControlPlane, Error> {
        let issuer = self.anchor.generate_issuer(
            &format!(
                "identity.{}.{}",
                strait_core::identity::DEFAULT_CONTROL_NAMESPACE,
                strait_core::identity::DEFAULT_TRUST_DOMAIN
            ),
            strait_tls::DEFAULT_ISSUER_LIFETIME,
            SystemTime::now(),
        )?;
        let issuer = Arc::new(issuer);
        let host = cluster.host_addr();
        // The control plane's own certificates, as the real one issues them at start: pods
        // reach it at the host address, so it speaks TLS (identity) and mTLS (destination).
        let (issuer_tx, issuer_rx) = tokio::sync::watch::channel(issuer.clone());
        let anchors = self.anchors()?;
        let ns = strait_core::identity::DEFAULT_CONTROL_NAMESPACE;
        let identity_name = identity(own_cert::IDENTITY_SERVICE_ACCOUNT, ns)?;
        let destination_name = identity(own_cert::DESTINATION_SERVICE_ACCOUNT, ns)?;
        let lifetime = strait_tls::DEFAULT_LEAF_LIFETIME;
        let id_tls = own_cert::identity_server_config(
            &anchors,
            own_cert::keep_issued(issuer_rx.clone(), identity_name.clone(), lifetime)?,
        )?;
        let dst_tls = own_cert::destination_server_config(
            &anchors,
            own_cert::keep_issued(issuer_rx.clone(), destination_name.clone(), lifetime)?,
        )?;

        let discovery = Discovery::spawn(cluster.client());
        let mut registry = prometheus_registry();
        let metrics = destination::Metrics::register(&mut registry);
        let config = DestinationConfig {
            cluster_domain: cluster.cluster_domain().to_owned(),
            ..DestinationConfig::default()
        };
        let svc = discovery.service(config, metrics);
        let dst_listener = bind_any().await?;
        let destination_addr = SocketAddr::new(host.into(), local_port(&dst_listener)?);
        let dst_task = tokio::spawn(async move {
            if let Err(e) =
                destination::serve_tls(dst_listener, svc, dst_tls, std::future::pending()).await
            {
                tracing::error!(error = %e, "destination service stopped");
            }
        });

        let id = IdentityService::new(
            IdentitySettings {
                trust_domain: strait_core::identity::DEFAULT_TRUST_DOMAIN.into(),
                control_namespace: strait_core::identity::DEFAULT_CONTROL_NAMESPACE.into(),
                lifetime: strait_tls::DEFAULT_LEAF_LIFETIME,
            },
            issuer_rx,
            Arc::new(id_svc::KubeTokenReviewer::new(cluster.client())),
            id_svc::Metrics::new(),
        );
        let id_listener = bind_any().await?;
        let identity_addr = SocketAddr::new(host.into(), local_port(&id_listener)?);
        let id_task = tokio::spawn(async move {
            if let Err(e) = id_svc::serve_tls(id_listener, id, id_tls, std::future::pending()).await
            {
                tracing::error!(error = %e, "identity service stopped");
            }
        });
        tokio::time::timeout(WAIT, discovery.synced())
            .await
            .map_err(|_| Error::NotReady {
                what: format!("{}'s destination caches", cluster.name()),
                after: WAIT,
                logs: String::new(),
            })?;
        Ok(ControlPlane {
            cluster: cluster.name().to_owned(),
            destination: destination_addr,
            identity: identity_addr,
            identity_name,
            destination_name,
            issuer,
            _issuer: issuer_tx,
            _discovery: discovery,
            tasks: vec![dst_task, id_task],
        })
    }

    /// Starts a pod with the sidecar: iptables interception (`strait-proxy init`), then the
    /// proxy as uid 2102, certified by `cp`'s identity service with the pod's token. Returns
    /// once the proxy is ready (it holds its certificate).
    pub async fn meshed_pod(
        &self,
        cluster: &Cluster,
        cp: &ControlPlane,
        spec: PodSpec,
    ) -> Result<MeshedPod, Error> {
        let spec = spec.annotation(strait_core::labels::PROXY_VERSION, "lab");
        let pod = cluster.pod(spec).await?;
        let sa = service_account_of(&pod).await?;
        let me = identity(&sa, pod.namespace())?;
        // The token, readable by the proxy's uid.
        let token = self.dir.path().join(format!(
            "{}-{}-{}.token",
            cp.cluster,
            pod.namespace(),
            pod.name()
        ));
        std::fs::copy(pod.identity_token_path(), &token).map_err(io("copying the token"))?;
        set_mode(&token, 0o644)?;

        let out = pod
            .exec(
                &self.bins.proxy.display().to_string(),
                &["init"],
                Duration::from_secs(30),
            )
            .await?;
        if !out.status.success() {
            return Err(Error::Invalid(format!(
                "strait-proxy init in {}: {}",
                pod.name(),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let mut cmd = pod.command("setpriv");
        cmd.arg(format!("--reuid={PROXY_UID}"))
            .arg(format!("--regid={PROXY_UID}"))
            .arg("--clear-groups")
            .arg(&self.bins.proxy)
            .env(
                "STRAIT_PROXY_IDENTITY_TRUST_ANCHORS",
                self.dir.path().join("ca.crt"),
            )
            .env("STRAIT_PROXY_IDENTITY_SVC_ADDR", cp.identity.to_string())
            .env(
                "STRAIT_PROXY_IDENTITY_SVC_NAME",
                cp.identity_name.to_string(),
            )
            .env(
                "STRAIT_PROXY_DESTINATION_SVC_NAME",
                cp.destination_name.to_string(),
            )
            .env("STRAIT_PROXY_IDENTITY_LOCAL_NAME", me.to_string())
            .env("STRAIT_PROXY_IDENTITY_TOKEN_FILE", &token)
            .env("STRAIT_PROXY_DESTINATION_ADDR", cp.destination.to_string())
            .env("STRAIT_PROXY_SHUTDOWN_GRACE_PERIOD", "2s")
            .env(
                "STRAIT_PROXY_LOG",
                std::env::var("STRAIT_LAB_PROXY_LOG").unwrap_or_else(|_| "info".into()),
            );
        let pid = pod.spawn("proxy", cmd)?;
        let admin = SocketAddr::new(pod.ip().into(), strait_core::ports::ADMIN);
        wait_until(&format!("the proxy in {}", pod.name()), &pod, || async {
            matches!(http_get(admin, "/ready").await, Ok((200, _)))
        })
        .await?;
        Ok(MeshedPod {
            pod,
            identity: me,
            proxy_pid: pid,
        })
    }

    /// Starts the gateway in `cluster` as a pod (service account `strait-gateway` in
    /// `strait-multicluster`), with a certificate from `cp`'s issuer, resolving through `cp`.
    /// Returns once `/ready` answers over TLS.
    pub async fn gateway(&self, cluster: &Cluster, cp: &ControlPlane) -> Result<GatewayPod, Error> {
        let me = identity(
            strait_core::identity::GATEWAY_SERVICE_ACCOUNT,
            MULTICLUSTER_NS,
        )?;
        let pod = cluster
            .pod(
                PodSpec::new(MULTICLUSTER_NS, "strait-gateway-0")
                    .label("app", "strait-gateway")
                    .service_account(strait_core::identity::GATEWAY_SERVICE_ACCOUNT)
                    .port("mc-gateway", strait_core::ports::GATEWAY)
                    .port("mc-probe", strait_core::ports::ADMIN),
            )
            .await?;
        let dir = self.dir.path().join(format!("{}-gateway", cp.cluster));
        std::fs::create_dir_all(&dir).map_err(io("creating the gateway folder"))?;
        let req = strait_tls::generate_csr(&me)?;
        let leaf = cp.issuer.issue(
            &req.csr,
            &me,
            strait_tls::DEFAULT_LEAF_LIFETIME,
            SystemTime::now(),
        )?;
        let chain = TrustAnchors::from_certs(leaf.chain())?.to_pem();
        std::fs::write(dir.join("tls.crt"), chain).map_err(io("writing the gateway cert"))?;
        std::fs::write(
            dir.join("tls.key"),
            pem("PRIVATE KEY", req.key.secret_der()),
        )
        .map_err(io("writing the gateway key"))?;
        let gw = GatewayPod {
            pod,
            identity: me,
            dir,
            binary: self.bins.gateway.clone(),
            anchors: self.anchors()?,
            anchors_file: self.dir.path().join("ca.crt"),
            destination: cp.destination,
            destination_name: cp.destination_name.clone(),
            cluster_domain: cluster.cluster_domain().to_owned(),
            pid: std::sync::Mutex::new(0),
        };
        gw.start().await?;
        Ok(gw)
    }

    /// Links `west` to `east` and runs west's mirror controller in this process: the Link
    /// CRD, a credentials Secret holding east's kubeconfig, a `Link` named after east whose
    /// gateway is `gateway`, selecting `mirror.strait.dev/exported=true` (through the
    /// gateway) and `=remote-discovery` (straight to the pods, the lab's network being flat).
    pub async fn link(
        &self,
        west: &Cluster,
        east: &Cluster,
        gateway: &GatewayPod,
    ) -> Result<MirrorLink, Error> {
        let w = west.client();
        install_link_crd(&w).await?;
        west.ensure_namespace(MULTICLUSTER_NS).await?;
        let secret_name = format!("cluster-credentials-{}", east.name());
        let kubeconfig = std::fs::read_to_string(east.kubeconfig_path())
            .map_err(io("reading east's kubeconfig"))?;
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": secret_name, "namespace": MULTICLUSTER_NS},
            "type": "mirror.strait.dev/remote-kubeconfig",
            "stringData": {"kubeconfig": kubeconfig},
        }))
        .map_err(|e| Error::Invalid(e.to_string()))?;
        let pp = PatchParams::apply("strait-lab").force();
        Api::<Secret>::namespaced(w.clone(), MULTICLUSTER_NS)
            .patch(&secret_name, &pp, &Patch::Apply(&secret))
            .await?;
        let link: Link = serde_json::from_value(serde_json::json!({
            "apiVersion": "multicluster.strait.dev/v1alpha1", "kind": "Link",
            "metadata": {"name": east.name(), "namespace": MULTICLUSTER_NS},
            "spec": {
                "targetClusterName": east.name(),
                "targetClusterDomain": east.cluster_domain(),
                "clusterCredentialsSecret": secret_name,
                "gatewayAddress": gateway.pod.ip().to_string(),
                "gatewayPort": strait_core::ports::GATEWAY,
                "gatewayIdentity": gateway.identity.to_string(),
                "probeSpec": {"path": "/ready", "port": strait_core::ports::ADMIN,
                    "period": "1s", "timeout": "1s", "failureThreshold": 2},
                "selector": {"matchLabels": {strait_core::labels::EXPORTED: strait_core::labels::EXPORTED_GATEWAY}},
                "remoteDiscoverySelector": {"matchLabels": {strait_core::labels::EXPORTED: strait_core::labels::EXPORTED_REMOTE_DISCOVERY}},
            }
        }))
        .map_err(|e| Error::Invalid(e.to_string()))?;
        Api::<Link>::namespaced(w.clone(), MULTICLUSTER_NS)
            .patch(east.name(), &pp, &Patch::Apply(&link))
            .await?;
        let mut config =
            strait_mirror::Config::new(MULTICLUSTER_NS, self.anchors_pem().into_bytes());
        config.admin_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config.holder_identity = format!("strait-lab-{}", west.name());
        config.lease_duration = Duration::from_secs(5);
        let metrics = Arc::new(strait_mirror::Metrics::new());
        let task = tokio::spawn(strait_mirror::run(w.clone(), config, metrics));
        Ok(MirrorLink {
            client: w,
            remote: east.name().to_owned(),
            task,
        })
    }
}

/// A cluster's control plane, running in this process; stops when dropped.
#[derive(Debug)]
pub struct ControlPlane {
    cluster: String,
    /// Where pods reach the destination service.
    pub destination: SocketAddr,
    /// Where pods reach the identity service.
    pub identity: SocketAddr,
    /// The identity the identity service presents (TLS).
    pub identity_name: Identity,
    /// The identity the destination service presents (mTLS).
    pub destination_name: Identity,
    issuer: Arc<Issuer>,
    /// Keeps the issuer channel open (the own certificates' renewal watches it).
    _issuer: tokio::sync::watch::Sender<Arc<Issuer>>,
    _discovery: Discovery,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A pod with the sidecar proxy.
#[derive(Debug)]
pub struct MeshedPod {
    pub pod: Pod,
    pub identity: Identity,
    pub proxy_pid: u32,
}

impl MeshedPod {
    /// The proxy's Prometheus text (plain HTTP on the admin port).
    pub async fn metrics(&self) -> Result<String, Error> {
        let admin = SocketAddr::new(self.pod.ip().into(), strait_core::ports::ADMIN);
        Ok(http_get(admin, "/metrics").await?.1)
    }
}

/// The gateway running as a pod; [`GatewayPod::restart`] kills its process and starts a new
/// one at the same address.
#[derive(Debug)]
pub struct GatewayPod {
    pub pod: Pod,
    pub identity: Identity,
    dir: PathBuf,
    binary: PathBuf,
    anchors: TrustAnchors,
    anchors_file: PathBuf,
    destination: SocketAddr,
    destination_name: Identity,
    cluster_domain: String,
    pid: std::sync::Mutex<u32>,
}

impl GatewayPod {
    /// The pod's address: what the Link names.
    pub fn ip(&self) -> Ipv4Addr {
        self.pod.ip()
    }

    /// The running gateway process.
    pub fn pid(&self) -> u32 {
        *self.pid.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn start(&self) -> Result<(), Error> {
        let mut cmd = self.pod.command(&self.binary);
        cmd.arg(format!("--cert={}", self.dir.join("tls.crt").display()))
            .arg(format!("--key={}", self.dir.join("tls.key").display()))
            .arg(format!("--trust-anchors={}", self.anchors_file.display()))
            .arg(format!("--destination=http://{}", self.destination))
            .arg(format!("--destination-identity={}", self.destination_name))
            .arg(format!("--cluster-domain={}", self.cluster_domain))
            .arg("--drain-timeout=2s")
            .env(
                "STRAIT_LOG",
                std::env::var("STRAIT_LAB_GATEWAY_LOG").unwrap_or_else(|_| "info".into()),
            );
        let n = {
            let mut pid = self.pid.lock().unwrap_or_else(|e| e.into_inner());
            let n = if *pid == 0 { 0 } else { 1 };
            *pid = self.pod.spawn(&format!("gateway-{n}"), cmd)?;
            n
        };
        wait_until(&format!("gateway process {n}"), &self.pod, || async {
            matches!(self.admin_get("/ready").await, Ok((200, _)))
        })
        .await
    }

    /// Kills the gateway process outright (SIGKILL, no drain) and starts it again at the same
    /// address; returns once the new process is ready.
    pub async fn restart(&self) -> Result<(), Error> {
        let pid = self.pid();
        let pid = nix::unistd::Pid::from_raw(
            i32::try_from(pid).map_err(|_| Error::Invalid(format!("pid {pid}")))?,
        );
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL)
            .map_err(|e| Error::Invalid(format!("killing the gateway {pid}: {e}")))?;
        // Bounded: the admin port stops answering once the process is gone.
        for _ in 0..100 {
            if self.admin_get("/live").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.start().await
    }

    /// The gateway's Prometheus text, over TLS to its admin port (verifying its identity).
    pub async fn metrics(&self) -> Result<String, Error> {
        Ok(self.admin_get("/metrics").await?.1)
    }

    /// GET `path` on the admin port over TLS: (status, body).
    pub async fn admin_get(&self, path: &str) -> Result<(u16, String), Error> {
        let (_tx, rx) = strait_tls::credentials_channel(None);
        let cfg = strait_tls::client_config(&self.anchors, rx, &[b"http/1.1"])?;
        let addr = SocketAddr::new(self.pod.ip().into(), strait_core::ports::ADMIN);
        let tls = tokio::time::timeout(Duration::from_secs(5), async {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(io(format!("connecting to {addr}")))?;
            Ok::<_, Error>(strait_tls::connect(cfg, &self.identity, tcp).await?)
        })
        .await
        .map_err(|_| Error::Invalid(format!("{addr}: TLS timed out")))??;
        exchange(tls, addr, path).await
    }
}

/// West's mirror controller with its Link; stops when dropped.
pub struct MirrorLink {
    client: kube::Client,
    remote: String,
    task: tokio::task::JoinHandle<Result<(), strait_mirror::Error>>,
}

impl std::fmt::Debug for MirrorLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorLink")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl Drop for MirrorLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A mirror Service as the importing cluster sees it.
#[derive(Clone, Debug)]
pub struct Mirror {
    pub name: String,
    pub cluster_ip: Ipv4Addr,
    /// The ready addresses in its EndpointSlices (the gateway's, or the remote pods').
    pub endpoints: Vec<String>,
}

impl MirrorLink {
    /// Stops the controller and waits until its task has ended (before the clusters go,
    /// so it does not log a remote that vanished).
    pub async fn stop(self) {
        self.task.abort();
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while !self.task.is_finished() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    /// Waits until the mirror of `service` in `ns` exists with a ready endpoint (the gateway,
    /// or for remote discovery the remote pods).
    pub async fn wait_mirror(&self, ns: &str, service: &str) -> Result<Mirror, Error> {
        let name = format!("{service}-{}", self.remote);
        let svcs = Api::<Service>::namespaced(self.client.clone(), ns);
        let slices = Api::<EndpointSlice>::namespaced(self.client.clone(), ns);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(m) = self.ready_mirror(&svcs, &slices, &name).await {
                return Ok(m);
            }
            if self.task.is_finished() {
                return Err(Error::Invalid("the mirror controller stopped".into()));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::NotReady {
                    what: format!("mirror {ns}/{name}"),
                    after: WAIT,
                    logs: String::new(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn ready_mirror(
        &self,
        svcs: &Api<Service>,
        slices: &Api<EndpointSlice>,
        name: &str,
    ) -> Option<Mirror> {
        let svc = svcs.get_opt(name).await.ok()??;
        let ip: Ipv4Addr = svc.spec?.cluster_ip?.parse().ok()?;
        let list = slices
            .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={name}")))
            .await
            .ok()?;
        let endpoints: Vec<String> = list
            .items
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
            .flat_map(|e| e.addresses.iter().cloned())
            .collect();
        (!endpoints.is_empty()).then(|| Mirror {
            name: name.to_owned(),
            cluster_ip: ip,
            endpoints,
        })
    }
}

async fn install_link_crd(client: &kube::Client) -> Result<(), Error> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "links.multicluster.strait.dev",
        &PatchParams::apply("strait-lab").force(),
        &Patch::Apply(Link::crd()),
    )
    .await?;
    let links: Api<Link> = Api::all(client.clone());
    for _ in 0..150 {
        if links.list(&ListParams::default().limit(1)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(Error::NotReady {
        what: "the Link CRD".into(),
        after: Duration::from_secs(30),
        logs: String::new(),
    })
}

async fn service_account_of(pod: &Pod) -> Result<String, Error> {
    // The localcluster pod keeps its spec private; the token file's claims would do too, but
    // the Pod object is the source of truth.
    let token = std::fs::read_to_string(pod.service_account_dir().join("token"))
        .map_err(io("reading the pod's token"))?;
    let claims = token
        .split('.')
        .nth(1)
        .and_then(|c| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(c)
                .ok()
        })
        .and_then(|c| serde_json::from_slice::<serde_json::Value>(&c).ok())
        .ok_or_else(|| Error::Invalid(format!("{}'s token has no claims", pod.name())))?;
    claims["sub"]
        .as_str()
        .and_then(|s| s.rsplit(':').next())
        .map(str::to_owned)
        .ok_or_else(|| Error::Invalid(format!("{}'s token has no subject", pod.name())))
}

/// Polls `ready` every 100 ms for at most [`WAIT`]; the error carries the pod's log tails.
async fn wait_until<F, Fut>(what: &str, pod: &Pod, mut ready: F) -> Result<(), Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if ready().await {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Error::NotReady {
                what: what.to_owned(),
                after: WAIT,
                logs: pod.log_tails(30),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One HTTP/1.0 GET in plaintext: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), Error> {
    let tcp = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| Error::Invalid(format!("{addr}: connect timed out")))?
        .map_err(io(format!("connecting to {addr}")))?;
    exchange(tcp, addr, path).await
}

async fn exchange<S>(mut s: S, addr: SocketAddr, path: &str) -> Result<(u16, String), Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    s.write_all(format!("GET {path} HTTP/1.0\r\nhost: {addr}\r\n\r\n").as_bytes())
        .await
        .map_err(io(format!("writing to {addr}")))?;
    let mut out = Vec::new();
    let mut limited = (&mut s).take(4 << 20);
    match tokio::time::timeout(Duration::from_secs(5), limited.read_to_end(&mut out)).await {
        Ok(Ok(_)) => {}
        // A TLS peer that closes without close_notify still sent the whole answer.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {}
        Ok(Err(e)) => return Err(io(format!("reading from {addr}"))(e)),
        Err(_) => return Err(Error::Invalid(format!("{addr}: read timed out"))),
    }
    let out = String::from_utf8_lossy(&out);
    let (head, body) = out
        .split_once("\r\n\r\n")
        .ok_or_else(|| Error::Invalid(format!("{addr}: no HTTP response")))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Invalid(format!("{addr}: no status")))?;
    Ok((status, body.to_owned()))
}

/// The lines of Prometheus text `text` that start with `metric` and contain every `needle`.
pub fn metric_lines<'a>(text: &'a str, metric: &str, needles: &[&str]) -> Vec<&'a str> {
    text.lines()
        .filter(|l| l.starts_with(metric) && needles.iter().all(|n| l.contains(n)))
        .collect()
}

/// The sum of the values of [`metric_lines`].
pub fn metric_sum(text: &str, metric: &str, needles: &[&str]) -> f64 {
    metric_lines(text, metric, needles)
        .iter()
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn prometheus_registry() -> prometheus_client::registry::Registry {
    prometheus_client::registry::Registry::default()
}

async fn bind_any() -> Result<tokio::net::TcpListener, Error> {
    tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .map_err(io("binding a control-plane listener"))
}

fn local_port(l: &tokio::net::TcpListener) -> Result<u16, Error> {
    Ok(l.local_addr().map_err(io("a listener's address"))?.port())
}

fn set_mode(p: &Path, mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(io(format!("chmod {}", p.display())))
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn metric_sums() {
        let t = "gateway_bytes_total{client_id=\"a\",direction=\"ToClient\"} 5\n\
                 gateway_bytes_total{client_id=\"a\",direction=\"ToTarget\"} 7\n\
                 gateway_bytes_total{client_id=\"b\",direction=\"ToTarget\"} 100\n";
        assert_eq!(metric_sum(t, "gateway_bytes_total", &["\"a\""]), 12.0);
        assert_eq!(metric_lines(t, "gateway_bytes_total", &["\"b\""]).len(), 1);
    }

    #[test]
    fn identities() {
        assert_eq!(
            identity("strait-gateway", MULTICLUSTER_NS)
                .unwrap()
                .to_string(),
            "strait-gateway.strait-multicluster.serviceaccount.identity.strait.cluster.local"
        );
    }
}
