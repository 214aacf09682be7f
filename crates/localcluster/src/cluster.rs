//! One local cluster: etcd and kube-apiserver processes with their own PKI and kubeconfig.

use crate::assets::{self, Assets, NodeAssets};
use crate::error::{Error, io};
use crate::net::{Slot, free_port};
use crate::node::{Node, NodeNetwork};
use crate::pki::ClusterPki;
use crate::process::Process;
use base64::Engine;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tracing::instrument::WithSubscriber;

/// How to start a cluster. `ClusterConfig::new("east")` is enough for most tests.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The cluster's name: used in the kubeconfig, data folder and logs.
    pub name: String,
    /// The DNS suffix of Services, `cluster.local` by default.
    pub cluster_domain: String,
    /// How long kube-apiserver may take to answer `/readyz` with ok.
    pub ready_timeout: Duration,
    /// How long to wait for a free cluster slot when other runs hold all of them.
    pub slot_wait: Duration,
    /// Real nodes (kubelet, containerd, kube-proxy), with kube-controller-manager,
    /// kube-scheduler, CoreDNS and LoadBalancer addresses. 0 (the default) runs process
    /// pods only, the fast tier.
    pub nodes: u8,
    /// How long each node may take to become Ready.
    pub node_ready_timeout: Duration,
}

impl ClusterConfig {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            cluster_domain: "cluster.local".to_owned(),
            ready_timeout: Duration::from_secs(90),
            slot_wait: Duration::from_secs(600),
            nodes: 0,
            node_ready_timeout: Duration::from_secs(180),
        }
    }

    /// A cluster with `n` real nodes (at most 8); see [`crate::node`].
    pub fn with_nodes(mut self, n: u8) -> Self {
        self.nodes = n.min(8);
        self
    }
}

/// A running local cluster. Dropping it stops everything it started and removes its files.
pub struct Cluster {
    config: ClusterConfig,
    dir: PathBuf,
    pki: ClusterPki,
    kubeconfig: PathBuf,
    apiserver_port: u16,
    apiserver_cmd: Vec<String>,
    assets: Assets,
    etcd: Option<Process>,
    apiserver: Option<Process>,
    client: kube::Client,
    /// 127.0.0.1, or the slot's host address when real nodes must reach the API.
    bind_addr: Ipv4Addr,
    endpoints: Option<tokio::task::JoinHandle<()>>,
    cloud: Option<tokio::task::JoinHandle<()>>,
    control: Vec<Process>,
    nodes: Vec<Node>,
    node_assets: Option<NodeAssets>,
    next_pod: AtomicU32,
    // Dropped last: other runs may take the slot's addresses once it is released.
    pub(crate) slot: Slot,
}

impl Cluster {
    /// Starts etcd and kube-apiserver and waits until `/readyz` answers ok. Several clusters
    /// can start concurrently (`tokio::try_join!`).
    pub async fn start(config: ClusterConfig) -> Result<Self, Error> {
        // A port found free can be taken before etcd or the API server binds it (any socket's
        // ephemeral port may land on it): start again on new ports, a few times.
        const ATTEMPTS: u32 = 3;
        let mut attempt = 1;
        loop {
            match Self::start_once(config.clone()).await {
                Err(e) if attempt < ATTEMPTS && e.is_port_taken() => {
                    tracing::warn!(cluster = %config.name, attempt, error = %e, "a port was taken meanwhile; starting again");
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    async fn start_once(config: ClusterConfig) -> Result<Self, Error> {
        let name = config.name.clone();
        let (slot, assets, node_assets, images, dir, pki) = tokio::task::spawn_blocking({
            let config = config.clone();
            move || -> Result<_, Error> {
                crate::require_root()?;
                let assets = assets::ensure()?;
                let (node_assets, images) = if config.nodes > 0 {
                    (
                        Some(assets::ensure_node()?),
                        crate::node::images::archives()?,
                    )
                } else {
                    (None, Vec::new())
                };
                let slot = Slot::acquire(config.slot_wait)?;
                slot.kill_recorded();
                let dir = std::env::temp_dir().join(format!(
                    "strait-{}-s{}-{}",
                    config.name,
                    slot.index(),
                    std::process::id()
                ));
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(dir.join("logs"))
                    .map_err(io(format!("creating {}", dir.display())))?;
                let pki = ClusterPki::generate(
                    &dir,
                    &config.name,
                    slot.first_service_ip(),
                    slot.host_addr(),
                )?;
                Ok((slot, assets, node_assets, images, dir, pki))
            }
        })
        .await
        .map_err(|e| Error::Io {
            what: "cluster setup task".into(),
            source: std::io::Error::other(e.to_string()),
        })??;

        let etcd_port = free_port()?;
        let etcd_peer = free_port()?;
        let apiserver_port = free_port()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let mut etcd_cmd = Command::new(&assets.etcd);
        etcd_cmd.args([
            "--name",
            &name,
            "--data-dir",
            &dir.join("etcd").display().to_string(),
            "--listen-client-urls",
            &etcd_url,
            "--advertise-client-urls",
            &etcd_url,
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{etcd_peer}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{etcd_peer}"),
            "--initial-cluster",
            &format!("{name}=http://127.0.0.1:{etcd_peer}"),
            "--unsafe-no-fsync",
            "--quota-backend-bytes",
            "4294967296",
            "--log-level",
            "warn",
        ]);
        let etcd = Process::spawn("etcd", etcd_cmd, dir.join("logs/etcd.log"))?;
        slot.record_pid(etcd.pid());

        // Real nodes reach the API on the slot's host address (on their veths); the
        // process-pod tier keeps it on loopback.
        let mut networks = Vec::new();
        for k in 0..config.nodes {
            networks.push(NodeNetwork::create(&slot, k, k == 0)?);
        }
        let bind_addr = if config.nodes > 0 {
            slot.host_addr()
        } else {
            Ipv4Addr::LOCALHOST
        };
        let issuer = format!("https://kubernetes.default.svc.{}", config.cluster_domain);
        let mut apiserver_cmd: Vec<String> = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--bind-address={bind_addr}"),
            format!("--advertise-address={bind_addr}"),
            format!("--secure-port={apiserver_port}"),
            format!("--tls-cert-file={}", pki.serving_cert.display()),
            format!("--tls-private-key-file={}", pki.serving_key.display()),
            format!("--client-ca-file={}", pki.ca_cert.display()),
            format!(
                "--service-account-key-file={}",
                pki.service_account_pub.display()
            ),
            format!(
                "--service-account-signing-key-file={}",
                pki.service_account_key.display()
            ),
            format!("--service-account-issuer={issuer}"),
            "--authorization-mode=Node,RBAC".into(),
            format!("--service-cluster-ip-range={}", slot.service_cidr()),
            format!("--cert-dir={}", dir.join("apiserver-certs").display()),
            "--enable-priority-and-fairness=false".into(),
            "--profiling=false".into(),
            "--v=1".into(),
        ];
        if config.nodes > 0 {
            apiserver_cmd.extend(crate::node::control::apiserver_flags(&pki)?);
        }
        let client = kubeconfig_client(&config, &pki, bind_addr, apiserver_port, &dir).await?;
        let kubeconfig = dir.join("kubeconfig");
        let mut cluster = Self {
            config,
            dir,
            pki,
            kubeconfig,
            apiserver_port,
            apiserver_cmd,
            assets,
            etcd: Some(etcd),
            apiserver: None,
            client,
            bind_addr,
            endpoints: None,
            cloud: None,
            control: Vec::new(),
            nodes: Vec::new(),
            node_assets,
            next_pod: AtomicU32::new(0),
            slot,
        };
        cluster.start_api_server().await?;
        if cluster.config.nodes == 0 {
            cluster.endpoints = Some(tokio::spawn(crate::endpoints::run(
                cluster.client.clone(),
                cluster.config.name.clone(),
            )));
        } else {
            cluster.start_nodes(networks, &images).await?;
        }
        Ok(cluster)
    }

    /// kube-controller-manager, kube-scheduler, the nodes, the LoadBalancer "cloud" and
    /// CoreDNS; returns once every node is Ready and DNS answers.
    async fn start_nodes(
        &mut self,
        networks: Vec<NodeNetwork>,
        images: &[(String, PathBuf)],
    ) -> Result<(), Error> {
        let Some(node_assets) = self.node_assets.clone() else {
            return Ok(());
        };
        let server = self.server_url();
        self.control = crate::node::control::start(
            &self.config.name,
            &server,
            &self.pki,
            &self.dir,
            &node_assets,
            &self.slot,
        )?;
        for (k, network) in (0u8..).zip(networks) {
            // Blocking, but short: the namespace holder and containerd start in well under
            // a second each, then the images are imported; kubelet is waited for below.
            let cx = crate::node::NodeContext {
                cluster: &self.config.name,
                cluster_domain: &self.config.cluster_domain,
                slot: &self.slot,
                pki: &self.pki,
                server: server.clone(),
                dir: &self.dir,
                assets: &node_assets,
                images,
            };
            let node = Node::start(&cx, k, network)?;
            self.nodes.push(node);
        }
        let client = self.client.clone();
        let timeout = self.config.node_ready_timeout;
        for node in &mut self.nodes {
            node.wait_ready(&client, timeout).await?;
        }
        let slot_index = self.slot.index();
        self.cloud = Some(tokio::spawn(crate::node::cloud::run(
            self.client.clone(),
            move |n| Slot::load_balancer_addr_of(slot_index, n),
        )));
        let dns = crate::node::dns::manifests(
            self.slot.dns_service_ip(),
            &self.config.cluster_domain,
            &crate::node::images::reference("coredns"),
        );
        self.apply(&dns).await?;
        self.wait_rollout("kube-system", "coredns", Duration::from_secs(120))
            .await
    }

    /// The cluster's real nodes (empty for the process-pod tier).
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Kills node `k`'s kubelet and starts it again; its pods keep running meanwhile.
    pub fn restart_kubelet(&mut self, k: usize) -> Result<(), Error> {
        let slot = &self.slot;
        match self.nodes.get_mut(k) {
            Some(node) => node.restart_kubelet(slot),
            None => Err(Error::Cgroup {
                what: format!("cluster {} has no node {k}", self.config.name),
            }),
        }
    }

    /// Stops kube-apiserver (etcd keeps its data), as an outage would.
    pub fn stop_api_server(&mut self) {
        if let Some(mut p) = self.apiserver.take() {
            p.kill();
        }
    }

    /// Starts kube-apiserver again (after [`Cluster::stop_api_server`]) on the same port and
    /// waits until it is ready.
    pub async fn start_api_server(&mut self) -> Result<(), Error> {
        self.stop_api_server();
        let mut cmd = Command::new(&self.assets.kube_apiserver);
        cmd.args(&self.apiserver_cmd);
        let p = Process::spawn(
            "kube-apiserver",
            cmd,
            self.dir.join("logs/kube-apiserver.log"),
        )?;
        self.slot.record_pid(p.pid());
        self.apiserver = Some(p);
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> Result<(), Error> {
        let started = Instant::now();
        loop {
            for p in [self.etcd.as_mut(), self.apiserver.as_mut()]
                .into_iter()
                .flatten()
            {
                if let Some(status) = p.exited() {
                    return Err(Error::Exited {
                        process: format!("{} of cluster {}", p.name(), self.config.name),
                        status: status.to_string(),
                        log: p.log_path().to_path_buf(),
                        tail: p.log_tail(25),
                    });
                }
            }
            // Refused connections and 500s are expected while it starts: poll quietly, with
            // no subscriber, so kube's client does not log each one as an error.
            let req = http::Request::get("/readyz").body(Vec::new());
            if let Ok(req) = req
                && let Ok(body) = self
                    .client
                    .request_text(req)
                    .with_subscriber(tracing::subscriber::NoSubscriber::default())
                    .await
                && body.trim() == "ok"
            {
                tracing::info!(cluster = %self.config.name, elapsed = ?started.elapsed(), "kube-apiserver ready");
                return Ok(());
            }
            if started.elapsed() > self.config.ready_timeout {
                let p = self.apiserver.as_ref();
                return Err(Error::NotReady {
                    process: format!("kube-apiserver of cluster {}", self.config.name),
                    secs: self.config.ready_timeout.as_secs(),
                    log: p.map(|p| p.log_path().to_path_buf()).unwrap_or_default(),
                    tail: p.map(|p| p.log_tail(25)).unwrap_or_default(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn cluster_domain(&self) -> &str {
        &self.config.cluster_domain
    }

    /// An admin client (`system:masters`).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The kubeconfig file for `kubectl --kubeconfig`.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// `https://127.0.0.1:<port>`, or `https://198.18.(64·slot).1:<port>` for a cluster
    /// with real nodes.
    pub fn server_url(&self) -> String {
        format!("https://{}:{}", self.bind_addr, self.apiserver_port)
    }

    /// The cluster CA in PEM, which signed the API server's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.pki.ca_pem
    }

    /// The PEM files of this cluster (CA, admin certificate, service-account key).
    pub fn pki(&self) -> &ClusterPki {
        &self.pki
    }

    /// The binaries this cluster runs; `kubectl` is there unless `KUBEBUILDER_ASSETS` lacks it.
    pub fn assets(&self) -> &Assets {
        &self.assets
    }

    /// The cluster's data folder (logs under `logs/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `198.18.(64·slot).0/18`
    pub fn pod_cidr(&self) -> String {
        self.slot.pod_cidr()
    }

    /// `198.19.(64·slot).0/18`
    pub fn service_cidr(&self) -> String {
        self.slot.service_cidr()
    }

    /// The root namespace's address on this cluster's pod veths: pods reach the host here.
    pub fn host_addr(&self) -> Ipv4Addr {
        self.slot.host_addr()
    }

    pub(crate) fn next_pod_index(&self) -> u32 {
        self.next_pod.fetch_add(1, Ordering::Relaxed)
    }

    /// The tails of etcd's and kube-apiserver's logs.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for p in [self.etcd.as_ref(), self.apiserver.as_ref()]
            .into_iter()
            .flatten()
        {
            out.push_str(&format!(
                "----- {} of cluster {} ({}) -----\n{}\n",
                p.name(),
                self.config.name,
                p.log_path().display(),
                p.log_tail(lines)
            ));
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails(40));
        }
        for task in [self.endpoints.take(), self.cloud.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
        // Nodes first (kubelet, then every container, then the daemons), while the API
        // server still answers their last calls.
        self.nodes.clear();
        self.control.clear();
        self.stop_api_server();
        if let Some(mut etcd) = self.etcd.take() {
            etcd.kill();
        }
        if self.config.nodes > 0 {
            crate::node::cgroup::sweep(&self.slot.cgroup_root());
        }
        if crate::keep_data() {
            eprintln!(
                "STRAIT_KEEP=1: cluster {} kept its data in {}",
                self.config.name,
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Writes the kubeconfig and builds an admin client from it.
async fn kubeconfig_client(
    config: &ClusterConfig,
    pki: &ClusterPki,
    addr: Ipv4Addr,
    port: u16,
    dir: &Path,
) -> Result<kube::Client, Error> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let name = &config.name;
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: https://{addr}:{port}\n    certificate-authority-data: {ca}\nusers:\n- name: {name}-admin\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\ncontexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: {name}-admin\ncurrent-context: {name}\n",
        ca = b64(&pki.ca_pem),
        cert = b64(&pki.admin_cert_pem),
        key = b64(&pki.admin_key_pem),
    );
    let path = dir.join("kubeconfig");
    std::fs::write(&path, &yaml).map_err(io(format!("writing {}", path.display())))?;
    let kubeconfig = kube::config::Kubeconfig::read_from(&path)?;
    let cfg = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    Ok(kube::Client::try_from(cfg)?)
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.config.name)
            .field("server", &self.server_url())
            .field("slot", &self.slot.index())
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}
