//! Addresses, network namespaces and veths for local clusters.
//!
//! All test addresses come from 198.18.0.0/15 (RFC 2544's benchmark range). Cluster slot `i`
//! (0–3) takes pod addresses from `198.18.(64·i).0/18` and Service addresses from
//! `198.19.(64·i).0/18`. The root namespace routes the whole /15 to a blackhole, with one more
//! specific /32 route per pod veth, so no test packet can leave the machine.
//!
//! Each pod is a network namespace `strait-s<slot>-<n>` joined to the root namespace by a
//! veth pair (`sv<slot>x<n>` outside, `eth0` inside). The host side of every veth in slot `i`
//! carries the slot's host address `198.18.(64·i).1/32`; the pod routes 198.18.0.0/15 (and
//! nothing else: there is no default route) through it. Forwarding is switched on only for
//! these veths, never machine-wide.
//!
//! Real nodes (see [`crate::node`]) take the upper half of the slot's /18:
//!
//! | block | what |
//! |---|---|
//! | `198.18.(64·i).2` – `198.18.(64·i+31).254` | process pods |
//! | `198.18.(64·i+32+k).0/24` | the pods of node `k` (its CNI bridge is `.1`) |
//! | `198.18.(64·i+48).(2+k)` | node `k`'s own address |
//! | `198.18.(64·i+60).0/24` | LoadBalancer ingress addresses, routed to node 0 |
//!
//! A slot is held with a file lock under `/run/strait`, so concurrent test binaries never
//! share addresses. Taking a slot first sweeps whatever a killed run left in it: processes,
//! namespaces and veths named for that slot.

use crate::error::{Error, io};
use std::fs::File;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

/// The range every test address comes from; blackholed in the root namespace.
pub const TEST_RANGE: &str = "198.18.0.0/15";
/// How many clusters may run on one machine at once.
pub const SLOTS: usize = 4;
const LOCK_DIR: &str = "/run/strait";

/// One of the machine's [`SLOTS`] cluster address blocks, held until dropped.
#[derive(Debug)]
pub struct Slot {
    index: u8,
    _lock: File,
}

impl Slot {
    /// Takes a free slot, waiting up to `wait` for one; sweeps what a dead run left in it.
    pub fn acquire(wait: Duration) -> Result<Self, Error> {
        crate::require_root()?;
        std::fs::create_dir_all(LOCK_DIR).map_err(io(format!("creating {LOCK_DIR}")))?;
        let deadline = Instant::now() + wait;
        loop {
            for index in 0..SLOTS as u8 {
                let lock = open_lock(index)?;
                if lock.try_lock().is_ok() {
                    let slot = Self { index, _lock: lock };
                    slot.sweep();
                    run("ip", &["route", "replace", "blackhole", TEST_RANGE])?;
                    return Ok(slot);
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::NoSlot(SLOTS));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn index(&self) -> u8 {
        self.index
    }

    /// The first pod address block of this slot: `198.18.(64·i).0/18`.
    pub fn pod_base(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 64 * self.index, 0)
    }

    /// `198.18.(64·i).0/18`
    pub fn pod_cidr(&self) -> String {
        format!("{}/18", self.pod_base())
    }

    /// `198.19.(64·i).0/18`
    pub fn service_cidr(&self) -> String {
        format!("{}/18", Ipv4Addr::new(198, 19, 64 * self.index, 0))
    }

    /// The first Service address, which kube-apiserver gives the `kubernetes` Service.
    pub fn first_service_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 19, 64 * self.index, 1)
    }

    /// The root namespace's address on every veth of this slot.
    pub fn host_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 64 * self.index, 1)
    }

    /// The `n`th process-pod address (n ≥ 0): skips the network and host addresses, and
    /// stays in the lower half of the /18 (the upper half belongs to real nodes).
    pub fn pod_addr(&self, n: u32) -> Option<Ipv4Addr> {
        // .0 and .1 of the first /24 are taken; 32 /24s hold 8,192 addresses.
        let offset = n.checked_add(2).filter(|o| *o < 32 * 256 - 1)?;
        let base = u32::from(self.pod_base());
        Some(Ipv4Addr::from(base + offset))
    }

    /// The third octet of this slot's first /24.
    fn octet(&self) -> u8 {
        64 * self.index
    }

    /// Node `k`'s own address, `198.18.(64·i+48).(2+k)`.
    pub fn node_addr(&self, k: u8) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.octet() + 48, 2 + k)
    }

    /// The pods of node `k`: `198.18.(64·i+32+k).0/24`.
    pub fn node_pod_cidr(&self, k: u8) -> String {
        format!("198.18.{}.0/24", self.octet() + 32 + k)
    }

    /// Every node pod address of this slot, `198.18.(64·i+32).0/20` (kube-proxy's
    /// `--cluster-cidr`).
    pub fn node_pods_cidr(&self) -> String {
        format!("198.18.{}.0/20", self.octet() + 32)
    }

    /// LoadBalancer ingress addresses: `198.18.(64·i+60).0/24`.
    pub fn load_balancer_cidr(&self) -> String {
        format!("198.18.{}.0/24", self.octet() + 60)
    }

    /// The `n`th LoadBalancer address (n < 253): `198.18.(64·i+60).(2+n)`.
    pub fn load_balancer_addr(&self, n: u8) -> Option<Ipv4Addr> {
        Self::load_balancer_addr_of(self.index, n)
    }

    /// [`Slot::load_balancer_addr`] of slot `index`.
    pub fn load_balancer_addr_of(index: u8, n: u8) -> Option<Ipv4Addr> {
        (n < 253).then(|| Ipv4Addr::new(198, 18, 64 * index + 60, 2 + n))
    }

    /// The cluster DNS Service address (`kube-dns`), the tenth of the Service range.
    pub fn dns_service_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 19, self.octet(), 10)
    }

    pub(crate) fn node_netns(&self, k: u8) -> String {
        format!("{}node{k}", self.netns_prefix())
    }

    pub(crate) fn node_veth(&self, k: u8) -> String {
        format!("{}n{k}", self.veth_prefix())
    }

    /// The cgroup (below each v1 hierarchy's root) that holds everything this slot's
    /// nodes run.
    pub(crate) fn cgroup_root(&self) -> String {
        format!("strait-s{}", self.index)
    }

    fn netns_prefix(&self) -> String {
        format!("strait-s{}-", self.index)
    }

    fn veth_prefix(&self) -> String {
        format!("sv{}x", self.index)
    }

    /// Removes everything a killed run left in this slot. Called with the slot held.
    fn sweep(&self) {
        // Containers of a node live in namespaces of their own but in the node's cgroups:
        // kill by cgroup first, then by namespace.
        crate::node::cgroup::sweep(&self.cgroup_root());
        for ns in list_netns() {
            if ns.starts_with(&self.netns_prefix()) {
                tracing::info!(netns = %ns, "removing a namespace left by an earlier run");
                kill_netns_processes(&ns);
                let _ = run("ip", &["netns", "delete", &ns]);
            }
        }
        for link in list_links() {
            if link.starts_with(&self.veth_prefix()) {
                let _ = run("ip", &["link", "delete", &link]);
            }
        }
        let _ = std::fs::remove_file(self.pid_file());
        self.sweep_data_dirs();
    }

    /// Data folders `strait-<cluster>-s<slot>-<pid>` of runs whose process is gone (a node's
    /// containerd and kubelet state can take hundreds of MB).
    fn sweep_data_dirs(&self) {
        let marker = format!("-s{}-", self.index);
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix("strait-") else {
                continue;
            };
            let Some((_, pid)) = rest.rsplit_once(&marker) else {
                continue;
            };
            let Ok(pid) = pid.parse::<u32>() else {
                continue;
            };
            if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            {
                tracing::info!(dir = %e.path().display(), "removing a data folder left by an earlier run");
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }

    /// Records a pid this slot must kill if its run dies without cleaning up.
    pub(crate) fn record_pid(&self, pid: u32) {
        use std::io::Write;
        if let Ok(mut f) = File::options()
            .create(true)
            .append(true)
            .open(self.pid_file())
        {
            let _ = writeln!(f, "{pid}");
        }
    }

    fn pid_file(&self) -> String {
        format!("{LOCK_DIR}/slot-{}.pids", self.index)
    }

    /// Kills processes recorded by a dead run (only those still running an expected binary).
    pub(crate) fn kill_recorded(&self) {
        let Ok(text) = std::fs::read_to_string(self.pid_file()) else {
            return;
        };
        for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if matches!(
                comm.trim(),
                "etcd"
                    | "kube-apiserver"
                    | "kube-controller"
                    | "kube-scheduler"
                    | "kubelet"
                    | "kube-proxy"
                    | "containerd"
                    | "sleep"
                    | "unshare"
            ) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let _ = std::fs::remove_file(self.pid_file());
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.pid_file());
        // Remove the blackhole once no slot is held: take every other slot's lock first, so
        // no run can start using the range while the route goes away.
        let mut held = Vec::new();
        for index in 0..SLOTS as u8 {
            if index == self.index {
                continue;
            }
            match open_lock(index) {
                Ok(l) if l.try_lock().is_ok() => held.push(l),
                _ => return,
            }
        }
        let _ = run("ip", &["route", "del", "blackhole", TEST_RANGE]);
        release_netns_dir();
    }
}

/// Where `ip netns` keeps its namespaces.
const NETNS_DIR: &str = "/run/netns";

/// Whether [`NETNS_DIR`] is a mount point of this mount namespace.
pub fn netns_dir_mounted() -> bool {
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(NETNS_DIR))
}

/// The first `ip netns add` bind-mounts [`NETNS_DIR`] on itself (to share its mounts); once
/// no slot is held and no namespace is left, that mount is the last thing a run made, so it
/// goes too. A plain unmount: should some namespace be mounted in it meanwhile, it fails and
/// the mount stays.
fn release_netns_dir() {
    if list_netns().is_empty() && netns_dir_mounted() {
        let _ = run("umount", &[NETNS_DIR]);
    }
}

fn open_lock(index: u8) -> Result<File, Error> {
    let path = format!("{LOCK_DIR}/slot-{index}.lock");
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(format!("opening {path}")))
}

/// A pod's network: a namespace and a veth pair to the root namespace. Removed on drop.
#[derive(Debug)]
pub struct PodNetwork {
    netns: String,
    host_veth: String,
    addr: Ipv4Addr,
}

impl PodNetwork {
    /// Creates namespace `strait-s<slot>-<n>` with address `addr` on its `eth0`.
    pub fn create(slot: &Slot, n: u32, addr: Ipv4Addr) -> Result<Self, Error> {
        let netns = format!("{}{n}", slot.netns_prefix());
        let host_veth = format!("{}{n}", slot.veth_prefix());
        run("ip", &["netns", "add", &netns])?;
        // From here on, drop removes whatever was made.
        let net = Self {
            netns,
            host_veth,
            addr,
        };
        let host = slot.host_addr().to_string();
        let pod = addr.to_string();
        let (ns, veth) = (net.netns.as_str(), net.host_veth.as_str());
        run(
            "ip",
            &[
                "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ],
        )?;
        run("ip", &["addr", "add", &format!("{host}/32"), "dev", veth])?;
        write_sysctl(&format!("net/ipv4/conf/{veth}/forwarding"), "1")?;
        run("ip", &["link", "set", veth, "up"])?;
        run(
            "ip",
            &[
                "route",
                "add",
                &format!("{pod}/32"),
                "dev",
                veth,
                "src",
                &host,
            ],
        )?;
        run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        run(
            "ip",
            &["-n", ns, "addr", "add", &format!("{pod}/32"), "dev", "eth0"],
        )?;
        run("ip", &["-n", ns, "link", "set", "eth0", "up"])?;
        run(
            "ip",
            &[
                "-n", ns, "route", "add", &host, "dev", "eth0", "scope", "link",
            ],
        )?;
        run(
            "ip",
            &[
                "-n", ns, "route", "add", TEST_RANGE, "via", &host, "dev", "eth0", "src", &pod,
            ],
        )?;
        Ok(net)
    }

    pub fn netns(&self) -> &str {
        &self.netns
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn host_veth(&self) -> &str {
        &self.host_veth
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        kill_netns_processes(&self.netns);
        // Deleting the namespace deletes eth0, so its peer and the /32 route go too; the
        // explicit delete covers a namespace that some process still pins.
        let _ = run("ip", &["netns", "delete", &self.netns]);
        let _ = run("ip", &["link", "delete", &self.host_veth]);
    }
}

pub(crate) fn kill_netns_processes(netns: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", netns]).output() else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Names of the network namespaces on this machine.
pub fn list_netns() -> Vec<String> {
    Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Names of the links in the root namespace.
pub fn list_links() -> Vec<String> {
    Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| {
                    let name = l.split(": ").nth(1)?;
                    Some(name.split('@').next().unwrap_or(name).to_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Routes in the root namespace's main table that fall inside [`TEST_RANGE`].
pub fn test_routes() -> Vec<String> {
    Command::new("ip")
        .args(["-4", "route", "show", "root", TEST_RANGE])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn write_sysctl(key: &str, value: &str) -> Result<(), Error> {
    let path = format!("/proc/sys/{key}");
    std::fs::write(&path, value).map_err(io(format!("writing {path}")))
}

/// Runs a command to completion; a non-zero exit becomes [`Error::Command`] with its stderr.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<(), Error> {
    let out = Command::new(program).args(args).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::MissingTool {
                tool: if program == "ip" { "ip" } else { "iptables" },
                hint: "install Debian's iproute2 and iptables (the README's test command does)",
            }
        } else {
            Error::Io {
                what: format!("running {program}"),
                source: e,
            }
        }
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Command {
            command: format!("{program} {}", args.join(" ")),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub(crate) fn free_port() -> Result<u16, Error> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(Error::NoPort)?;
    Ok(l.local_addr().map_err(Error::NoPort)?.port())
}
