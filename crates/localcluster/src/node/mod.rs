//! Real nodes: containerd, runc, CNI, kubelet and kube-proxy in a network namespace of their
//! own, so that Deployments, probes, Services with ClusterIPs, DNS and LoadBalancers work as
//! users run them. The second tier of local clusters (process pods stay the fast one).
//!
//! ```text
//!  root ns ─ kube-apiserver :198.18.(64i).1  kube-controller-manager, kube-scheduler (127.0.0.1)
//!     │ veth sv<i>xn<k>
//!  node ns strait-s<i>-node<k>, private mount ns (holder: `sleep`)
//!     containerd ── runc ── pods on cni0 (198.18.(64i+32+k).0/24)
//!     kubelet :10250 on the node address      kube-proxy (iptables, chains in this ns only)
//!  cgroups <hierarchy>/strait-s<i>/node<k>{,-daemons}
//! ```
//!
//! Every process of a node runs in one private mount namespace (made shared inside, with its
//! own tmpfs on /run/netns), so CNI's namespaces and the overlay and shm mounts never show in
//! the machine's mount table, and go with the last process. Processes are found for clean-up
//! by cgroup (containers have namespaces of their own) and by network namespace.
//!
//! Clean-up on drop, also while a test panics: kubelet first (so nothing is restarted), then
//! every process in the node's cgroups, the holder, the cgroups, the namespace with its veth
//! and routes. The cluster removes the data folder. A killed run is swept by the next run
//! that takes the same slot (`net::Slot`).

pub mod cgroup;
pub mod cloud;
pub mod config;
pub(crate) mod control;
pub mod dns;
pub mod images;
mod network;

pub(crate) use network::NodeNetwork;

use crate::assets::NodeAssets;
use crate::error::{Error, io};
use crate::net::Slot;
use crate::pki::ClusterPki;
use crate::process::Process;
use k8s_openapi::api::core::v1::Node as NodeObject;
use kube::api::Api;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// What a node needs from its cluster.
#[derive(Debug)]
pub(crate) struct NodeContext<'a> {
    pub cluster: &'a str,
    pub cluster_domain: &'a str,
    pub slot: &'a Slot,
    pub pki: &'a ClusterPki,
    pub server: String,
    pub dir: &'a Path,
    pub assets: &'a NodeAssets,
    pub images: &'a [(String, PathBuf)],
}

/// A running node. Dropping it stops everything it runs and removes its cgroups and network.
pub struct Node {
    name: String,
    k: u8,
    dir: PathBuf,
    cgroup: String,
    daemons_cgroup: String,
    socket: PathBuf,
    kubelet: Option<Process>,
    kube_proxy: Option<Process>,
    containerd: Option<Process>,
    holder: Option<Process>,
    kubelet_cmd: Vec<String>,
    kubelet_program: PathBuf,
    network: Option<NodeNetwork>,
}

impl Node {
    /// Node `k`'s name in cluster `cluster`.
    pub fn name_for(cluster: &str, k: u8) -> String {
        format!("{cluster}-node{k}")
    }

    /// Starts the node's daemons in `network` (made beforehand, since kube-apiserver binds
    /// the address the veth brings). Returns once kubelet and kube-proxy run; see
    /// [`Node::wait_ready`].
    pub(crate) fn start(cx: &NodeContext<'_>, k: u8, network: NodeNetwork) -> Result<Self, Error> {
        for (binary, package) in [
            ("containerd", "containerd"),
            ("runc", "runc"),
            ("nsenter", "util-linux"),
            ("unshare", "util-linux"),
            ("conntrack", "conntrack"),
        ] {
            if !on_path(binary) {
                return Err(Error::MissingPackage { binary, package });
            }
        }
        if !Path::new("/usr/lib/cni/bridge").exists() {
            return Err(Error::MissingPackage {
                binary: "/usr/lib/cni/bridge",
                package: "containernetworking-plugins",
            });
        }
        let name = Self::name_for(cx.cluster, k);
        let dir = cx.dir.join("nodes").join(&name);
        for sub in ["logs", "cni", "ipam", "containerd", "kubelet", "pki"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(io(format!("creating {}", dir.join(sub).display())))?;
        }
        let cgroup = format!("{}/node{k}", cx.slot.cgroup_root());
        let daemons_cgroup = format!("{cgroup}-daemons");
        cgroup::create(&cgroup)?;
        cgroup::create(&daemons_cgroup)?;
        let socket = dir.join("containerd/containerd.sock");
        let mut node = Self {
            name,
            k,
            dir,
            cgroup,
            daemons_cgroup,
            socket,
            kubelet: None,
            kube_proxy: None,
            containerd: None,
            holder: None,
            kubelet_cmd: Vec::new(),
            kubelet_program: cx.assets.kubelet.clone(),
            network: Some(network),
        };
        node.start_holder()?;
        node.start_containerd(cx)?;
        images::import(&node.socket, cx.images)?;
        node.start_kubelet(cx)?;
        node.start_kube_proxy(cx)?;
        Ok(node)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's own address.
    pub fn addr(&self) -> std::net::Ipv4Addr {
        self.network
            .as_ref()
            .map(|n| n.addr)
            .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED)
    }

    /// The node's network namespace (for `ip netns exec`, e.g. to read its iptables).
    pub fn netns(&self) -> &str {
        self.network
            .as_ref()
            .map(|n| n.netns.as_str())
            .unwrap_or("")
    }

    /// Where this node's kubelet keeps its pods' logs (`<namespace>_<pod>_<uid>/<container>/`).
    pub fn pod_logs_dir(&self) -> PathBuf {
        self.dir.join("pod-logs")
    }

    /// The images its containerd holds.
    pub fn images(&self) -> Vec<String> {
        images::list(&self.socket)
    }

    /// The cgroup (below each hierarchy) that holds the node's pods.
    pub fn cgroup(&self) -> &str {
        &self.cgroup
    }

    /// The holder's pid: `nsenter -t <pid> -m -n` enters the node.
    pub fn pid(&self) -> Option<u32> {
        self.holder.as_ref().map(Process::pid)
    }

    /// A command that runs `program` inside the node: in its cgroup for daemons, its
    /// network namespace and its private mount namespace.
    fn command(&self, program: &Path, args: &[String]) -> Result<Command, Error> {
        let holder = self.pid().ok_or_else(|| Error::Cgroup {
            what: format!("node {} has no namespace holder", self.name),
        })?;
        let joins: Vec<String> = cgroup::procs_files(&self.daemons_cgroup)
            .iter()
            .map(|f| format!("echo $$ > {}", f.display()))
            .collect();
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "set -e; {}; exec nsenter -t {holder} -m -n -- \"$0\" \"$@\"",
                joins.join("; ")
            ))
            .arg(program)
            .args(args);
        Ok(cmd)
    }

    fn start_holder(&mut self) -> Result<(), Error> {
        let netns = self.netns().to_owned();
        let ready = self.dir.join("holder.ready");
        let joins: Vec<String> = cgroup::procs_files(&self.daemons_cgroup)
            .iter()
            .map(|f| format!("echo $$ > {}", f.display()))
            .collect();
        // kubelet wants a few machine-wide kernel settings. Inside the node's mount
        // namespace, files holding exactly those values are bound over them, so kubelet
        // (with protectKernelDefaults) finds what it checks for and the machine's own
        // settings are never touched.
        let sysctl_dir = self.dir.join("sysctl");
        std::fs::create_dir_all(&sysctl_dir)
            .map_err(io(format!("creating {}", sysctl_dir.display())))?;
        let mut binds = Vec::new();
        for (key, value) in config::KUBELET_KERNEL_SETTINGS {
            let file = sysctl_dir.join(key.replace('/', "."));
            write(&file, &format!("{value}\n"))?;
            binds.push(format!("mount --bind {} /proc/sys/{key}", file.display()));
        }
        let script = format!(
            "set -e; {}; mount --make-rshared /; mkdir -p /run/netns; \
             mount -t tmpfs -o mode=0755 strait-node-netns /run/netns; {}; touch {}; exec sleep 2147483647",
            joins.join("; "),
            binds.join("; "),
            ready.display()
        );
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "slave", "--", "nsenter"])
            .arg(format!("--net=/run/netns/{netns}"))
            .args(["--", "sh", "-c", &script]);
        let holder = Process::spawn("node-holder", cmd, self.dir.join("logs/holder.log"))?;
        self.holder = Some(holder);
        self.wait_for(
            "the node's namespace holder",
            Duration::from_secs(10),
            |_| Ok(ready.exists().then_some(())),
        )
    }

    fn start_containerd(&mut self, cx: &NodeContext<'_>) -> Result<(), Error> {
        let conf = self.dir.join("containerd.toml");
        write(
            &conf,
            &config::containerd_toml(&self.dir.join("containerd"), &self.dir.join("cni")),
        )?;
        write(
            &self.dir.join("cni/10-strait.conflist"),
            &config::cni_conflist(&cx.slot.node_pod_cidr(self.k), &self.dir.join("ipam")),
        )?;
        let cmd = self.command(
            Path::new("containerd"),
            &["--config".into(), conf.display().to_string()],
        )?;
        let p = Process::spawn("containerd", cmd, self.dir.join("logs/containerd.log"))?;
        cx.slot.record_pid(p.pid());
        self.containerd = Some(p);
        let socket = self.socket.clone();
        self.wait_for("containerd", Duration::from_secs(30), move |_| {
            let ok = Command::new("ctr")
                .arg("--address")
                .arg(&socket)
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success());
            Ok(ok.then_some(()))
        })
    }

    fn start_kubelet(&mut self, cx: &NodeContext<'_>) -> Result<(), Error> {
        let k = self.k;
        let pki_dir = self.dir.join("pki");
        let client = cx.pki.client(
            &format!("nodes/{}/pki/kubelet-client", self.name),
            &format!("system:node:{}", self.name),
            Some("system:nodes"),
        )?;
        let serving = cx.pki.serving(
            &format!("nodes/{}/pki/kubelet-serving", self.name),
            &format!("system:node:{}", self.name),
            &[cx.slot.node_addr(k)],
        )?;
        let kubeconfig = pki_dir.join("kubelet.kubeconfig");
        write(
            &kubeconfig,
            &config::kubeconfig(
                &self.name,
                &cx.server,
                &cx.pki.ca_cert,
                &client.cert,
                &client.key,
            ),
        )?;
        // Pods get the cluster DNS; nothing is taken from the machine's resolver.
        let resolv = self.dir.join("resolv.conf");
        write(&resolv, "# strait: no upstream resolver on a test node\n")?;
        let pod_logs = self.pod_logs_dir();
        std::fs::create_dir_all(&pod_logs).map_err(io("creating the pod log directory"))?;
        let conf = self.dir.join("kubelet.yaml");
        write(
            &conf,
            &config::kubelet_yaml(&config::KubeletSettings {
                ca_file: &cx.pki.ca_cert,
                containerd_socket: &self.socket,
                cgroup_root: &self.cgroup,
                cluster_dns: cx.slot.dns_service_ip(),
                cluster_domain: cx.cluster_domain,
                resolv_conf: &resolv,
                serving_cert: &serving.cert,
                serving_key: &serving.key,
                node_ip: cx.slot.node_addr(k),
                pod_logs_dir: &pod_logs,
            }),
        )?;
        self.kubelet_cmd = vec![
            format!("--config={}", conf.display()),
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--root-dir={}", self.dir.join("kubelet").display()),
            format!("--hostname-override={}", self.name),
            format!("--node-ip={}", cx.slot.node_addr(k)),
            "--v=1".into(),
        ];
        self.start_kubelet_process(cx.slot)
    }

    fn start_kubelet_process(&mut self, slot: &Slot) -> Result<(), Error> {
        let cmd = self.command(&self.kubelet_program.clone(), &self.kubelet_cmd.clone())?;
        let p = Process::spawn("kubelet", cmd, self.dir.join("logs/kubelet.log"))?;
        slot.record_pid(p.pid());
        self.kubelet = Some(p);
        Ok(())
    }

    /// Kills kubelet (its pods keep running, as on a real node) and starts it again.
    pub fn restart_kubelet(&mut self, slot: &Slot) -> Result<(), Error> {
        if let Some(mut p) = self.kubelet.take() {
            p.kill();
        }
        self.start_kubelet_process(slot)
    }

    fn start_kube_proxy(&mut self, cx: &NodeContext<'_>) -> Result<(), Error> {
        let client = cx.pki.client(
            &format!("nodes/{}/pki/kube-proxy", self.name),
            "system:kube-proxy",
            None,
        )?;
        let kubeconfig = self.dir.join("pki/kube-proxy.kubeconfig");
        write(
            &kubeconfig,
            &config::kubeconfig(
                "kube-proxy",
                &cx.server,
                &cx.pki.ca_cert,
                &client.cert,
                &client.key,
            ),
        )?;
        let args: Vec<String> = vec![
            format!("--kubeconfig={}", kubeconfig.display()),
            "--proxy-mode=iptables".into(),
            format!("--cluster-cidr={}", cx.slot.node_pods_cidr()),
            "--conntrack-max-per-core=0".into(),
            format!("--hostname-override={}", self.name),
            "--metrics-bind-address=127.0.0.1:10249".into(),
            "--healthz-bind-address=127.0.0.1:10256".into(),
            "--v=1".into(),
        ];
        let cmd = self.command(&cx.assets.kube_proxy, &args)?;
        let p = Process::spawn("kube-proxy", cmd, self.dir.join("logs/kube-proxy.log"))?;
        cx.slot.record_pid(p.pid());
        self.kube_proxy = Some(p);
        Ok(())
    }

    /// Waits until the Node object says Ready; a daemon that exits, or a timeout, is an error
    /// with every daemon's log tail.
    pub async fn wait_ready(
        &mut self,
        client: &kube::Client,
        timeout: Duration,
    ) -> Result<(), Error> {
        let nodes = Api::<NodeObject>::all(client.clone());
        let started = Instant::now();
        let mut reason = "not registered yet".to_owned();
        loop {
            if let Some(exited) = self.exited_daemon() {
                return Err(Error::NodeNotReady {
                    node: self.name.clone(),
                    secs: started.elapsed().as_secs(),
                    reason: format!("{exited} exited"),
                    tails: self.log_tails(30),
                });
            }
            if let Ok(Some(node)) = nodes.get_opt(&self.name).await {
                let ready = node
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
                match ready {
                    Some(c) if c.status == "True" => {
                        tracing::info!(node = %self.name, elapsed = ?started.elapsed(), "node Ready");
                        return Ok(());
                    }
                    Some(c) => {
                        reason = format!(
                            "Ready={}: {}",
                            c.status,
                            c.message.clone().unwrap_or_default()
                        )
                    }
                    None => reason = "registered, no Ready condition yet".into(),
                }
            }
            if started.elapsed() > timeout {
                return Err(Error::NodeNotReady {
                    node: self.name.clone(),
                    secs: timeout.as_secs(),
                    reason,
                    tails: self.log_tails(30),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn exited_daemon(&mut self) -> Option<String> {
        for p in [
            self.holder.as_mut(),
            self.containerd.as_mut(),
            self.kubelet.as_mut(),
            self.kube_proxy.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            if let Some(status) = p.exited() {
                return Some(format!("{} ({status})", p.name()));
            }
        }
        None
    }

    /// The tails of the node's daemon logs.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for p in [
            self.holder.as_ref(),
            self.containerd.as_ref(),
            self.kubelet.as_ref(),
            self.kube_proxy.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            out.push_str(&format!(
                "----- {} of node {} ({}) -----\n{}\n",
                p.name(),
                self.name,
                p.log_path().display(),
                p.log_tail(lines)
            ));
        }
        out
    }

    fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&mut Self) -> Result<Option<()>, Error>,
    ) -> Result<(), Error> {
        let started = Instant::now();
        loop {
            if check(self)?.is_some() {
                return Ok(());
            }
            if let Some(exited) = self.exited_daemon() {
                return Err(Error::NodeNotReady {
                    node: self.name.clone(),
                    secs: started.elapsed().as_secs(),
                    reason: format!("{exited} exited while waiting for {what}"),
                    tails: self.log_tails(30),
                });
            }
            if started.elapsed() > timeout {
                return Err(Error::NodeNotReady {
                    node: self.name.clone(),
                    secs: timeout.as_secs(),
                    reason: format!("{what} did not start"),
                    tails: self.log_tails(30),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails(40));
        }
        // kubelet first, so that nothing restarts what is being stopped.
        if let Some(mut p) = self.kubelet.take() {
            p.kill();
        }
        cgroup::sweep(&self.cgroup);
        for p in [self.kube_proxy.take(), self.containerd.take()]
            .into_iter()
            .flatten()
        {
            drop(p);
        }
        cgroup::sweep(&self.daemons_cgroup);
        if let Some(mut p) = self.holder.take() {
            p.kill();
        }
        self.network.take();
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.name)
            .field("addr", &self.addr())
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(io(format!("writing {}", path.display())))
}

fn on_path(binary: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(binary).is_file()))
}
