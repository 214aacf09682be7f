//! The files a node's daemons read, rendered from plain values (no I/O).
//!
//! The non-default settings each fix one trap measured on this kind of machine (design.md,
//! "Real nodes"): containerd's `restrict_oom_score_adj`, kubelet's cgroupfs driver on
//! cgroup v1 with a `cgroupRoot` of its own, relaxed eviction (cadvisor cannot stat the root
//! block device), and no local-storage isolation.

use std::net::Ipv4Addr;
use std::path::Path;

/// The image every pod sandbox runs: a process that never exits.
pub const PAUSE_IMAGE: &str = "strait.local/pause:dev";

/// The kernel settings kubelet checks (`protectKernelDefaults`), below /proc/sys, with the
/// values it requires. They are machine-wide, so the node shows kubelet bound copies instead.
pub const KUBELET_KERNEL_SETTINGS: &[(&str, &str)] = &[
    ("vm/overcommit_memory", "1"),
    ("vm/panic_on_oom", "0"),
    ("kernel/panic", "10"),
    ("kernel/panic_on_oops", "1"),
    ("kernel/keys/root_maxkeys", "1000000"),
    ("kernel/keys/root_maxbytes", "25000000"),
];

/// containerd's config: its state under `state_dir`, the CRI plugin with runc on cgroupfs,
/// CNI from Debian's plugins, and every registry mapped to a closed loopback port, so an image
/// that is not imported fails at once and no pull ever leaves the machine.
pub fn containerd_toml(state_dir: &Path, cni_conf_dir: &Path) -> String {
    let d = state_dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  level = "warn"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
    endpoint = ["http://127.0.0.1:9"]
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."*"]
    endpoint = ["http://127.0.0.1:9"]
"#,
        cni = cni_conf_dir.display()
    )
}

/// The CNI network: a bridge `cni0` whose gateway is the subnet's `.1`, host-local IPAM, and
/// portmap. Pods route everything through the bridge; the node routes only the test range.
pub fn cni_conflist(subnet: &str, ipam_dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "strait",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "dataDir": ipam_dir.display().to_string(),
                    "ranges": [[{"subnet": subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}]
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
    .to_string()
}

/// What differs between kubelets.
#[derive(Clone, Debug)]
pub struct KubeletSettings<'a> {
    pub ca_file: &'a Path,
    pub containerd_socket: &'a Path,
    pub cgroup_root: &'a str,
    pub cluster_dns: Ipv4Addr,
    pub cluster_domain: &'a str,
    pub resolv_conf: &'a Path,
    pub serving_cert: &'a Path,
    pub serving_key: &'a Path,
    pub node_ip: Ipv4Addr,
    /// Where containers' logs go: one directory per node, since every kubelet removes the
    /// pod log directories it does not know from a shared /var/log/pods (another node's).
    pub pod_logs_dir: &'a Path,
}

/// kubelet's configuration file.
pub fn kubelet_yaml(s: &KubeletSettings<'_>) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {node_ip}
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: false}}
  x509: {{clientCAFile: "{ca}"}}
authorization: {{mode: AlwaysAllow}}
tlsCertFile: "{cert}"
tlsPrivateKeyFile: "{key}"
cgroupDriver: cgroupfs
cgroupRoot: /{cgroup_root}
cgroupsPerQOS: true
failSwapOn: false
failCgroupV1: false
clusterDNS: ["{dns}"]
clusterDomain: {domain}
resolvConf: "{resolv}"
podLogsDir: "{logs}"
containerRuntimeEndpoint: unix://{sock}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
evictionHard: {{memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
enforceNodeAllocatable: []
localStorageCapacityIsolation: false
protectKernelDefaults: true
makeIPTablesUtilChains: false
serializeImagePulls: false
registerNode: true
nodeStatusReportFrequency: 10s
nodeStatusUpdateFrequency: 5s
syncFrequency: 10s
fileCheckFrequency: 10s
shutdownGracePeriod: 0s
"#,
        node_ip = s.node_ip,
        ca = s.ca_file.display(),
        cert = s.serving_cert.display(),
        key = s.serving_key.display(),
        cgroup_root = s.cgroup_root,
        dns = s.cluster_dns,
        domain = s.cluster_domain,
        resolv = s.resolv_conf.display(),
        sock = s.containerd_socket.display(),
        logs = s.pod_logs_dir.display(),
    )
}

/// A kubeconfig with one cluster, one user (client certificate files) and one context.
pub fn kubeconfig(name: &str, server: &str, ca: &Path, cert: &Path, key: &Path) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: {name}\n  user:\n    client-certificate: {cert}\n    client-key: {key}\ncontexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: {name}\ncurrent-context: {name}\n",
        ca = ca.display(),
        cert = cert.display(),
        key = key.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_keeps_its_state_in_the_node_and_never_pulls() {
        let t = containerd_toml(Path::new("/n/containerd"), Path::new("/n/cni"));
        assert!(t.contains("root = \"/n/containerd/root\""));
        assert!(t.contains("address = \"/n/containerd/containerd.sock\""));
        // Trap 2: without it runc fails on the sandbox's oomScoreAdj.
        assert!(t.contains("restrict_oom_score_adj = true"));
        assert!(t.contains("SystemdCgroup = false"));
        assert!(t.contains(&format!("sandbox_image = \"{PAUSE_IMAGE}\"")));
        // Any pull goes to a closed loopback port: it fails at once and leaves nothing.
        assert!(t.contains("endpoint = [\"http://127.0.0.1:9\"]"));
        assert!(!t.contains("registry-1.docker.io"));
    }

    #[test]
    fn the_cni_network_is_the_nodes_subnet_on_a_bridge() {
        let c: serde_json::Value =
            serde_json::from_str(&cni_conflist("198.18.96.0/24", Path::new("/n/ipam"))).unwrap();
        let bridge = &c["plugins"][0];
        assert_eq!(bridge["type"], "bridge");
        assert_eq!(bridge["isGateway"], true);
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "198.18.96.0/24");
        assert_eq!(bridge["ipam"]["dataDir"], "/n/ipam");
        assert_eq!(c["plugins"][1]["type"], "portmap");
    }

    #[test]
    fn kubelet_runs_on_cgroup_v1_with_its_own_root() {
        let y = kubelet_yaml(&KubeletSettings {
            ca_file: Path::new("/p/ca.crt"),
            containerd_socket: Path::new("/n/containerd.sock"),
            cgroup_root: "strait-s1/node0",
            cluster_dns: Ipv4Addr::new(198, 19, 64, 10),
            cluster_domain: "cluster.local",
            resolv_conf: Path::new("/n/resolv.conf"),
            serving_cert: Path::new("/p/kubelet.crt"),
            serving_key: Path::new("/p/kubelet.key"),
            node_ip: Ipv4Addr::new(198, 18, 112, 2),
            pod_logs_dir: Path::new("/n/pod-logs"),
        });
        for line in [
            "cgroupDriver: cgroupfs",
            "failCgroupV1: false",
            "failSwapOn: false",
            "cgroupRoot: /strait-s1/node0",
            "localStorageCapacityIsolation: false",
            "clusterDNS: [\"198.19.64.10\"]",
            "containerRuntimeEndpoint: unix:///n/containerd.sock",
            "address: 198.18.112.2",
            "anonymous: {enabled: false}",
            "podLogsDir: \"/n/pod-logs\"",
        ] {
            assert!(y.contains(line), "{line} missing from\n{y}");
        }
    }
}
