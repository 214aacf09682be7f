//! What the real-node tests share: workloads, waits, and the traces a node leaves.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;
use strait_localcluster::node::{cgroup, images};
use strait_localcluster::{Cluster, net};

/// Polls `f` until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A two-replica web Deployment with readiness probes, its Service (and, with `lb`, a
/// LoadBalancer Service), and a client pod to run commands in.
pub fn workloads(lb: bool) -> String {
    let sample = images::reference("sample");
    let mut y = format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: shop}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: shop}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      securityContext: {{runAsNonRoot: true, seccompProfile: {{type: RuntimeDefault}}}}
      containers:
      - name: web
        image: {sample}
        imagePullPolicy: IfNotPresent
        args: [serve, "8080"]
        env: [{{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}]
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe: {{httpGet: {{path: /, port: http}}, periodSeconds: 1}}
        securityContext: {{readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: {{drop: [ALL]}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: shop}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: {sample}
    imagePullPolicy: IfNotPresent
    args: [serve, "8081"]
"#
    );
    if lb {
        y.push_str(
            r#"---
apiVersion: v1
kind: Service
metadata: {name: web-lb, namespace: shop}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"#,
        );
    }
    y
}

/// The address the cloud controller gave LoadBalancer Service `ns/svc`, waited for (60 s).
pub async fn load_balancer_ip(c: &Cluster, ns: &str, svc: &str) -> String {
    eventually(Duration::from_secs(60), || async {
        let ip = c
            .kubectl(&[
                "-n",
                ns,
                "get",
                "svc",
                svc,
                "-o",
                "jsonpath={.status.loadBalancer.ingress[0].ip}",
            ])
            .await
            .ok()?;
        (!ip.is_empty()).then_some(ip)
    })
    .await
    .unwrap_or_else(|| panic!("{}: {ns}/{svc} got no LoadBalancer address", c.name()))
}

pub async fn pod_names(c: &Cluster, selector: &str) -> BTreeSet<String> {
    c.kubectl(&[
        "-n",
        "shop",
        "get",
        "pods",
        "-l",
        selector,
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ])
    .await
    .unwrap()
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

/// `strait-sample get ADDR` in west's client pod: the body, or the error.
pub async fn get_from_client(c: &Cluster, addr: &str) -> Result<String, String> {
    c.kubectl(&[
        "-n",
        "shop",
        "exec",
        "client",
        "--",
        "/usr/local/bin/strait-sample",
        "get",
        addr,
    ])
    .await
    .map_err(|e| e.to_string())
}

/// [`get_from_client`] until it answers, for up to 30 s: kube-proxy programs a Service's
/// rules a moment after its endpoints are ready, as on any cluster.
pub async fn get_eventually(c: &Cluster, addr: &str) -> Result<String, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = get_from_client(c, addr).await;
        if r.is_ok() || tokio::time::Instant::now() >= deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn ready(c: &Cluster) {
    c.wait_rollout("shop", "web", Duration::from_secs(120))
        .await
        .unwrap();
    c.kubectl(&[
        "-n",
        "shop",
        "wait",
        "--for=condition=Ready",
        "pod/client",
        "--timeout=120s",
    ])
    .await
    .unwrap();
}

/// What a node run left, to look for after the clusters are gone.
#[derive(Debug, Default)]
pub struct Traces {
    pub netns: Vec<String>,
    veths: Vec<String>,
    pub pids: Vec<u32>,
    cgroups: Vec<String>,
    dirs: Vec<std::path::PathBuf>,
    routes: Vec<String>,
}

impl Traces {
    pub fn record(&mut self, c: &Cluster) {
        self.dirs.push(c.dir().to_path_buf());
        for n in c.nodes() {
            self.netns.push(n.netns().to_owned());
            let slot = &n.netns()["strait-s".len()..n.netns().find("-node").unwrap()];
            let k = &n.netns()[n.netns().find("-node").unwrap() + "-node".len()..];
            self.veths.push(format!("sv{slot}xn{k}"));
            self.routes.push(format!("{} dev", n.addr()));
            self.cgroups.push(n.cgroup().to_owned());
            self.pids
                .extend(cgroup::pids(n.cgroup()).into_iter().map(|p| p as u32));
            self.pids.extend(
                cgroup::pids(&format!("{}-daemons", n.cgroup()))
                    .into_iter()
                    .map(|p| p as u32),
            );
        }
        self.pids.extend(processes_naming(c.dir()));
    }

    pub fn left(&self) -> Vec<String> {
        let mut left = Vec::new();
        let netns = net::list_netns();
        let links = net::list_links();
        let routes = net::test_routes();
        left.extend(
            self.netns
                .iter()
                .filter(|n| netns.contains(n))
                .map(|n| format!("netns {n}")),
        );
        left.extend(
            self.veths
                .iter()
                .filter(|v| links.contains(v))
                .map(|v| format!("veth {v}")),
        );
        left.extend(
            self.pids
                .iter()
                .filter(|p| alive(**p))
                .map(|p| format!("process {p}")),
        );
        left.extend(
            self.cgroups
                .iter()
                .filter(|c| cgroup::exists(c))
                .map(|c| format!("cgroup {c}")),
        );
        left.extend(
            self.dirs
                .iter()
                .filter(|d| d.exists())
                .map(|d| format!("folder {}", d.display())),
        );
        left.extend(
            self.routes
                .iter()
                .filter(|r| routes.iter().any(|x| x.starts_with(r.as_str())))
                .map(|r| format!("route {r}")),
        );
        // With no namespace left (ours or anyone's), the bind mount `ip netns` made goes too.
        if netns.is_empty() && net::netns_dir_mounted() {
            left.push("mount /run/netns".to_owned());
        }
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        for d in &self.dirs {
            let d = d.display().to_string();
            left.extend(
                mounts
                    .lines()
                    .filter(|l| l.contains(&d))
                    .map(|l| format!("mount {l}")),
            );
        }
        left
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

/// Processes whose command line names the cluster's data folder (its daemons).
fn processes_naming(dir: &std::path::Path) -> Vec<u32> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(false)
        })
        .collect()
}

/// RSS in MB of every process of a cluster (its control plane by data folder, its nodes by
/// cgroup), by command name: printed for the record, never asserted.
pub fn memory_by_process(c: &Cluster) -> Vec<(String, u64)> {
    let mut pids: Vec<u32> = processes_naming(c.dir());
    for n in c.nodes() {
        pids.extend(cgroup::pids(n.cgroup()).into_iter().map(|p| p as u32));
        pids.extend(
            cgroup::pids(&format!("{}-daemons", n.cgroup()))
                .into_iter()
                .map(|p| p as u32),
        );
    }
    pids.sort_unstable();
    pids.dedup();
    let mut by_name: std::collections::BTreeMap<String, u64> = Default::default();
    for pid in pids {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let name = status
            .lines()
            .find_map(|l| l.strip_prefix("Name:"))
            .unwrap_or("?")
            .trim()
            .to_owned();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        *by_name.entry(name).or_default() += kb / 1024;
    }
    by_name.into_iter().collect()
}
