//! The foundation: two real clusters, pods in network namespaces, and cleanup that holds
//! even when a test panics.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first unexpected error

use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, PostParams};
use std::time::Duration;
use strait_localcluster::{Cluster, ClusterConfig, PodSpec, net};

const TOOL: &str = env!("CARGO_BIN_EXE_strait-sample");

fn service(ns: &str, name: &str, app: &str, port: u16) -> Service {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {"app": app}, "ports": [{"name": "http", "port": 80, "targetPort": port}]},
    }))
    .unwrap()
}

/// Polls `f` until it returns `Some`, for at most `limit`.
async fn eventually<T, F, Fut>(limit: Duration, mut f: F) -> Option<T>
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
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn ready_addresses(client: kube::Client, ns: &str, svc: &str) -> Vec<String> {
    let slices = Api::<EndpointSlice>::namespaced(client, ns)
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={svc}")))
        .await
        .unwrap();
    let mut addrs: Vec<String> = slices
        .items
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
        .flat_map(|e| e.addresses.iter().cloned())
        .collect();
    addrs.sort();
    addrs
}

/// One cluster's part of the two-cluster test: a namespace, a Service and two pods, one of
/// which serves HTTP while the other reaches it by pod address and by the EndpointSlice.
async fn serve_and_reach(cluster: &Cluster) -> Made {
    let client = cluster.client();
    let ns = format!("app-{}", cluster.name());
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .unwrap();
    Api::<Service>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &service(&ns, "web", "web", 8080))
        .await
        .unwrap();
    let web = cluster
        .pod(
            PodSpec::new(&ns, "web-0")
                .label("app", "web")
                .port("http", 8080),
        )
        .await
        .unwrap();
    let mut cmd = web.command(TOOL);
    cmd.args(["serve", "8080"]);
    web.spawn("server", cmd).unwrap();
    let client_pod = cluster.pod(PodSpec::new(&ns, "client")).await.unwrap();

    // By pod address, from the other pod's network namespace (retry until the server listens).
    let by_ip = format!("{}:8080", web.ip());
    let body = eventually(Duration::from_secs(20), || async {
        let out = client_pod
            .exec(TOOL, &["get", &by_ip], Duration::from_secs(10))
            .await
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    })
    .await
    .unwrap_or_else(|| panic!("{} never answered from {}", by_ip, client_pod.name()));
    assert_eq!(body, "hello from web-0");

    // By the address the harness's EndpointSlice lists for the Service.
    let addrs = eventually(Duration::from_secs(20), || async {
        let a = ready_addresses(client.clone(), &ns, "web").await;
        (!a.is_empty()).then_some(a)
    })
    .await
    .expect("the Service's EndpointSlice never listed a ready address");
    assert_eq!(
        addrs,
        vec![web.ip().to_string()],
        "only the web pod is selected"
    );
    let slice_addr = format!("{}:8080", addrs[0]);
    let out = client_pod
        .exec(TOOL, &["get", &slice_addr], Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from web-0");

    // A pod that is not ready leaves the slice's ready set.
    web.set_ready(false).await.unwrap();
    let emptied = eventually(Duration::from_secs(20), || async {
        ready_addresses(client.clone(), &ns, "web")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    assert!(emptied.is_some(), "a not-ready pod stayed in the ready set");

    let mut made = Made::default();
    for pod in [&web, &client_pod] {
        made.record_pod(pod);
    }
    made
}

fn alive(pid: u32) -> bool {
    // A zombie has been killed but not reaped; only a running process counts.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_pods_and_isolation() {
    let (west, east) = tokio::try_join!(
        Cluster::start(ClusterConfig::new("west")),
        Cluster::start(ClusterConfig::new("east")),
    )
    .expect("two clusters start");
    assert_ne!(west.pod_cidr(), east.pod_cidr());
    assert_ne!(west.service_cidr(), east.service_cidr());

    let (mut made, made_east) = tokio::join!(serve_and_reach(&west), serve_and_reach(&east));
    made.merge(made_east);

    // Cluster east's API holds none of west's objects.
    let east_ns = Api::<Namespace>::all(east.client())
        .list(&ListParams::default())
        .await
        .unwrap();
    let names: Vec<_> = east_ns
        .items
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    assert!(names.contains(&"app-east".to_owned()), "{names:?}");
    assert!(!names.contains(&"app-west".to_owned()), "{names:?}");
    let err = Api::<Service>::namespaced(east.client(), "app-west")
        .get("web")
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 404));

    // /version tells the truth about what we built.
    let v = east.client().apiserver_version().await.unwrap();
    assert_eq!(
        v.git_version,
        strait_localcluster::assets::KUBERNETES_VERSION
    );
}

/// Everything a cluster and its pods made, so the cleanup check can look for each piece.
#[derive(Debug, Default)]
struct Made {
    netns: Vec<String>,
    veths: Vec<String>,
    pids: Vec<u32>,
    routes: Vec<String>,
    dirs: Vec<std::path::PathBuf>,
}

impl Made {
    fn record_pod(&mut self, pod: &strait_localcluster::Pod) {
        self.netns.push(pod.netns().to_owned());
        self.pids.extend(pids_of(pod.netns()));
        self.routes.push(format!("{} dev", pod.ip()));
        // strait-s<slot>-<n> is joined to the root namespace by veth sv<slot>x<n>.
        let (slot, n) = pod.netns()["strait-s".len()..].split_once('-').unwrap();
        self.veths.push(format!("sv{slot}x{n}"));
    }

    fn merge(&mut self, other: Made) {
        self.netns.extend(other.netns);
        self.veths.extend(other.veths);
        self.pids.extend(other.pids);
        self.routes.extend(other.routes);
        self.dirs.extend(other.dirs);
    }
}

fn gone(made: &Made) -> Result<(), String> {
    let netns = net::list_netns();
    let links = net::list_links();
    let routes = net::test_routes();
    for n in &made.netns {
        if netns.contains(n) {
            return Err(format!("namespace {n} is still there"));
        }
    }
    for v in &made.veths {
        if links.contains(v) {
            return Err(format!("veth {v} is still there"));
        }
    }
    for p in &made.pids {
        if alive(*p) {
            return Err(format!("process {p} still runs"));
        }
    }
    for r in &made.routes {
        if routes.iter().any(|x| x.starts_with(r.as_str())) {
            return Err(format!("route {r} is still there"));
        }
    }
    for d in &made.dirs {
        if d.exists() {
            return Err(format!("data folder {} is still there", d.display()));
        }
    }
    Ok(())
}

fn pids_of(netns: &str) -> Vec<u32> {
    let out = std::process::Command::new("ip")
        .args(["netns", "pids", netns])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn apiserver_and_etcd_pids(dir: &std::path::Path) -> Vec<u32> {
    // Our etcd and kube-apiserver are the processes whose command line names our data folder.
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

/// A test that panics inside a cluster's scope still leaves nothing behind: no process,
/// namespace, veth, route or data folder.
#[test]
fn cleanup_holds_when_a_test_panics() {
    let made = std::sync::Arc::new(std::sync::Mutex::new(Made::default()));
    let made_in = made.clone();
    let result = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let cluster = Cluster::start(ClusterConfig::new("panics")).await.unwrap();
            let pod = cluster
                .pod(PodSpec::new("doomed", "sleeper"))
                .await
                .unwrap();
            let mut cmd = pod.command("sleep");
            cmd.arg("600");
            let sleep = pod.spawn("sleep", cmd).unwrap();
            {
                let mut m = made_in.lock().unwrap();
                m.record_pod(&pod);
                // The netns may not list it yet: it joins the namespace after it starts.
                if !m.pids.contains(&sleep) {
                    m.pids.push(sleep);
                }
                m.pids.extend(apiserver_and_etcd_pids(cluster.dir()));
                m.dirs.push(cluster.dir().to_path_buf());
                assert!(net::list_links().contains(&m.veths[0]), "{m:?}");
                assert!(
                    m.pids.len() >= 3,
                    "sleep, etcd and kube-apiserver run: {m:?}"
                );
                assert!(
                    net::test_routes()
                        .iter()
                        .any(|r| r.starts_with(&m.routes[0]))
                );
            }
            panic!("deliberate panic inside the cluster's scope");
        });
    })
    .join();
    assert!(result.is_err(), "the scope was meant to panic");
    let made = made.lock().unwrap();
    assert!(!made.netns.is_empty(), "the scope recorded what it made");
    if let Err(e) = gone(&made) {
        panic!("cleanup after a panic left something behind: {e}; made: {made:?}");
    }
}
