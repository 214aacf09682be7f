//! What the tests that install Strait with its charts share: the identities a user passes to
//! helm, helm itself, waits for the rollouts, the sample workloads and the CLI.

#![allow(dead_code, clippy::unwrap_used)]

use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use strait_localcluster::Cluster;
use strait_localcluster::node::images;
use strait_tls::testing::TestPki;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const STRAIT: &str = env!("CARGO_BIN_EXE_e2e-strait");
pub const ROLLOUT: Duration = Duration::from_secs(180);
pub const SUFFIX: &str = "serviceaccount.identity.strait.cluster.local";

pub fn id(sa: &str, ns: &str) -> String {
    format!("{sa}.{ns}.{SUFFIX}")
}

pub fn charts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts")
}

/// The shared anchor, an issuer per cluster, as the files a user passes to helm.
pub struct Identities {
    pub dir: tempfile::TempDir,
    pub west: TestPki,
}

impl Identities {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let west = TestPki::new();
        let east_issuer = west
            .anchor
            .generate_issuer(
                "identity.strait.cluster.local",
                strait_tls::DEFAULT_ISSUER_LIFETIME,
                SystemTime::now(),
            )
            .unwrap();
        std::fs::write(dir.path().join("ca.crt"), west.anchors.to_pem()).unwrap();
        for (name, issuer) in [("west", &west.issuer), ("east", &east_issuer)] {
            std::fs::write(dir.path().join(format!("{name}.crt")), issuer.cert_pem()).unwrap();
            std::fs::write(dir.path().join(format!("{name}.key")), issuer.key_pem()).unwrap();
        }
        Self { dir, west }
    }

    pub fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// The real helm against `c`, with its state in `home`.
pub async fn helm(c: &Cluster, home: &Path, args: &[&str]) -> Result<String, String> {
    let bin = strait_localcluster::assets::ensure_node()
        .map_err(|e| e.to_string())?
        .helm;
    let out = tokio::process::Command::new(bin)
        .args(args)
        .arg("--kubeconfig")
        .arg(c.kubeconfig_path())
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Installs both charts with `issuer`'s files; `mc_sets` are extra `--set`s of the
/// multicluster chart.
pub async fn helm_install(
    c: &Cluster,
    home: &Path,
    ids: &Identities,
    issuer: &str,
    mc_sets: &[&str],
) {
    let cp = charts().join("strait-control-plane");
    let mc = charts().join("strait-multicluster");
    let anchors = format!("identityTrustAnchorsPEM={}", ids.file("ca.crt"));
    let crt = format!(
        "identity.issuer.tls.crtPEM={}",
        ids.file(&format!("{issuer}.crt"))
    );
    let key = format!(
        "identity.issuer.tls.keyPEM={}",
        ids.file(&format!("{issuer}.key"))
    );
    let cp = cp.to_str().unwrap();
    let mc = mc.to_str().unwrap();
    helm(
        c,
        home,
        &[
            "install",
            "strait-control-plane",
            cp,
            "--set-file",
            &anchors,
            "--set-file",
            &crt,
            "--set-file",
            &key,
        ],
    )
    .await
    .unwrap_or_else(|e| panic!("helm install strait-control-plane in {}: {e}", c.name()));
    let mut args = vec!["install", "strait-multicluster", mc, "--set-file", &anchors];
    for s in mc_sets {
        args.extend(["--set", s]);
    }
    helm(c, home, &args)
        .await
        .unwrap_or_else(|e| panic!("helm install strait-multicluster in {}: {e}", c.name()));
}

pub async fn rollout(c: &Cluster, ns: &str, name: &str) {
    if let Err(e) = c.wait_rollout(ns, name, ROLLOUT).await {
        let pods = c
            .kubectl(&["get", "pods", "-A", "-o", "wide"])
            .await
            .unwrap_or_default();
        let events = c
            .kubectl(&["get", "events", "-A", "--sort-by=.lastTimestamp"])
            .await
            .unwrap_or_default();
        panic!(
            "{}: deployment {ns}/{name} not rolled out: {e}\n{pods}\n{events}\n{}",
            c.name(),
            c.log_tails(20)
        );
    }
}

pub async fn control_plane_ready(c: &Cluster) {
    rollout(c, "strait", "strait-control-plane").await;
    rollout(c, "strait-multicluster", "strait-gateway").await;
    rollout(c, "strait-multicluster", "strait-mirror").await;
}

pub async fn json(c: &Cluster, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&c.kubectl(&a).await.unwrap()).unwrap()
}

/// The names of the init and app containers of `pod`.
pub fn containers(pod: &Value) -> Vec<String> {
    ["initContainers", "containers"]
        .iter()
        .flat_map(|k| pod["spec"][k].as_array().cloned().unwrap_or_default())
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

pub fn has_proxy(pod: &Value) -> bool {
    containers(pod).iter().any(|c| c == "strait-proxy")
}

/// The pods of `ns` matching `selector` that are not being deleted, as JSON.
pub async fn pods(c: &Cluster, ns: &str, selector: &str) -> Vec<Value> {
    let mut pods = json(c, &["-n", ns, "get", "pods", "-l", selector]).await["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    pods.retain(|p| p["metadata"]["deletionTimestamp"].is_null());
    pods
}

/// A plain HTTP/1.0 GET of `path` on `addr` (a pod's admin port), from the root namespace.
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await??;
    tcp.write_all(format!("GET {path} HTTP/1.0\r\nhost: admin\r\n\r\n").as_bytes())
        .await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out)).await??;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The sample workloads: a web Deployment and a client, each with its own ServiceAccount.
pub fn shop(ns: &str, annotate: bool) -> String {
    let sample = images::reference("sample");
    let annotation = if annotate {
        "\n  annotations: {strait.dev/inject: enabled}"
    } else {
        ""
    };
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: {ns}{annotation}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: web, namespace: {ns}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: client, namespace: {ns}}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {ns}}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
{web}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: client, namespace: {ns}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: client}}}}
  template:
    metadata: {{labels: {{app: client}}}}
    spec:
      serviceAccountName: client
      terminationGracePeriodSeconds: 1
      containers:
      - name: client
        image: {sample}
        imagePullPolicy: IfNotPresent
        args: [serve, "8081"]
        securityContext: {{runAsNonRoot: true, runAsUser: 1000, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: {{drop: [ALL]}}}}
"#,
        web = web_deployment("web", ns),
    )
}

pub fn web_deployment(name: &str, ns: &str) -> String {
    let sample = images::reference("sample");
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      serviceAccountName: web
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: {sample}
        imagePullPolicy: IfNotPresent
        args: [serve, "8080"]
        env: [{{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}]
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe: {{httpGet: {{path: /, port: http}}, periodSeconds: 1}}
        securityContext: {{runAsNonRoot: true, runAsUser: 1000, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: {{drop: [ALL]}}}}"#
    )
}

/// `strait ARGS` with `input` on stdin; its stdout, or its stderr as the error.
pub fn strait(args: &[&str], input: &str) -> Result<String, String> {
    use std::io::Write;
    let mut child = std::process::Command::new(STRAIT)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

pub fn pod_ip(pod: &Value) -> String {
    pod["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// `strait ARGS --kubeconfig <c's>` without blocking the runtime; stdout, or stderr (with
/// stdout, for commands like `check` that print their report before failing) as the error.
pub async fn strait_at(c: &Cluster, args: &[&str]) -> Result<String, String> {
    let out = tokio::process::Command::new(STRAIT)
        .args(args)
        .arg("--kubeconfig")
        .arg(c.kubeconfig_path())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{}{stdout}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// West and east, one real node each, with the identities both charts get and helm's homes.
pub struct Pair {
    pub ids: Identities,
    pub west: Cluster,
    pub east: Cluster,
    pub west_home: PathBuf,
    pub east_home: PathBuf,
    _home: tempfile::TempDir,
}

impl Pair {
    pub async fn start() -> Self {
        let home = tempfile::tempdir().unwrap();
        let (west, east) = tokio::try_join!(
            Cluster::start(strait_localcluster::ClusterConfig::new("west").with_nodes(1)),
            Cluster::start(strait_localcluster::ClusterConfig::new("east").with_nodes(1)),
        )
        .expect("two clusters with real nodes start");
        Self {
            ids: Identities::new(),
            west,
            east,
            west_home: home.path().join("west"),
            east_home: home.path().join("east"),
            _home: home,
        }
    }

    /// Both charts in both clusters (west's multicluster chart with `west_mc_sets`), every
    /// Deployment rolled out.
    pub async fn install(&self, west_mc_sets: &[&str]) {
        self.install_with(west_mc_sets, &[]).await;
    }

    /// Both charts in both clusters, each multicluster chart with its own `--set`s.
    pub async fn install_with(&self, west_mc_sets: &[&str], east_mc_sets: &[&str]) {
        tokio::join!(
            helm_install(&self.west, &self.west_home, &self.ids, "west", west_mc_sets),
            helm_install(&self.east, &self.east_home, &self.ids, "east", east_mc_sets),
        );
        tokio::join!(
            control_plane_ready(&self.west),
            control_plane_ready(&self.east)
        );
    }
}
