//! The proxy test's mesh: an in-process destination service and identity certificates from
//! an in-test issuer, proxies added to pods with their iptables rules, and the clients and
//! measurements the cases use.

#![allow(dead_code)]

use base64::Engine;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::PostParams;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use strait_core::identity::Identity;
use strait_localcluster::{Cluster, Pod};
use strait_proxy::connect::Connector;
use strait_tls::Issuer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
pub type Error = Box<dyn std::error::Error + Send + Sync>;

pub const NS: &str = "shop";
pub const WAIT: Duration = Duration::from_secs(30);
pub const PROXY: &str = env!("CARGO_BIN_EXE_e2e-proxy");
pub const TOOL: &str = env!("CARGO_BIN_EXE_strait-sample");

pub fn id(sa: &str) -> Identity {
    format!("{sa}.{NS}.serviceaccount.identity.strait.cluster.local")
        .parse()
        .unwrap()
}

pub fn pem(label: &str, der: &[u8]) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

pub const ID_SA: &str = strait_control_plane::own_cert::IDENTITY_SERVICE_ACCOUNT;
pub const DST_SA: &str = strait_control_plane::own_cert::DESTINATION_SERVICE_ACCOUNT;

/// A control-plane identity: `<sa>.strait.serviceaccount.identity.strait.cluster.local`.
pub fn id_of(sa: &str) -> Identity {
    Identity::new(sa, "strait", "strait", "cluster.local").unwrap()
}

/// A control-plane service's own certificate from `issuer`, and its server config (mTLS when
/// `require_client`). The sender keeps the credentials channel open.
pub fn own_tls(
    anchor: &Issuer,
    issuer: &Issuer,
    identity: &Identity,
    require_client: bool,
) -> Result<
    (
        strait_tls::CredentialsSender,
        std::sync::Arc<strait_tls::rustls::ServerConfig>,
    ),
    Error,
> {
    use strait_control_plane::own_cert;
    let creds = own_cert::issue(issuer, identity, strait_tls::DEFAULT_LEAF_LIFETIME)?;
    let (tx, rx) = strait_tls::credentials_channel(Some(creds));
    let anchors = anchor.as_anchors()?;
    let cfg = if require_client {
        own_cert::destination_server_config(&anchors, rx)?
    } else {
        own_cert::identity_server_config(&anchors, rx)?
    };
    Ok((tx, cfg))
}

pub struct Mesh {
    pub anchor: Issuer,
    pub issuer: Issuer,
    pub dest: SocketAddr,
    pub dirs: tempfile::TempDir,
}

impl Mesh {
    /// Writes ca.crt, tls.crt, tls.key for `identity` into a directory the proxy's uid reads.
    pub fn creds(&self, name: &str, identity: &Identity) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.dirs.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let req = strait_tls::generate_csr(identity).unwrap();
        let leaf = self
            .issuer
            .issue(
                &req.csr,
                identity,
                strait_tls::DEFAULT_LEAF_LIFETIME,
                SystemTime::now(),
            )
            .unwrap();
        let chain: String = leaf.chain().iter().map(|c| pem("CERTIFICATE", c)).collect();
        std::fs::write(dir.join("ca.crt"), self.anchor.cert_pem()).unwrap();
        std::fs::write(dir.join("tls.crt"), chain).unwrap();
        std::fs::write(
            dir.join("tls.key"),
            pem("PRIVATE KEY", req.key.secret_der()),
        )
        .unwrap();
        for p in [self.dirs.path().to_owned(), dir.clone()] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        for f in ["ca.crt", "tls.crt", "tls.key"] {
            std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        dir
    }

    pub fn connector(&self, identity: &Identity) -> Connector {
        let dir = self.creds("test-client", identity);
        let cfg = strait_proxy::env::Config::from_lookup(|k| match k {
            "STRAIT_PROXY_IDENTITY_TRUST_ANCHORS" => Some(dir.join("ca.crt").display().to_string()),
            "STRAIT_PROXY_IDENTITY_CERT" => Some(dir.join("tls.crt").display().to_string()),
            "STRAIT_PROXY_IDENTITY_KEY" => Some(dir.join("tls.key").display().to_string()),
            _ => None,
        })
        .unwrap();
        let (anchors, creds) = strait_proxy::load_identity(&cfg).unwrap();
        let (_tx, rx) = strait_tls::credentials_channel(creds);
        std::mem::forget(_tx);
        Connector::new(&anchors, rx, Duration::from_secs(3)).unwrap()
    }
}

/// Starts iptables interception and the proxy (as uid 2102) in `pod`; returns its pid.
pub async fn add_proxy(mesh: &Mesh, pod: &Pod, sa: &str) -> Result<u32, Error> {
    add_proxy_with(mesh, pod, sa, mesh.dest).await
}

pub async fn add_proxy_with(
    mesh: &Mesh,
    pod: &Pod,
    sa: &str,
    dest: SocketAddr,
) -> Result<u32, Error> {
    add_proxy_env(mesh, pod, sa, dest, &[]).await
}

pub async fn add_proxy_env(
    mesh: &Mesh,
    pod: &Pod,
    sa: &str,
    dest: SocketAddr,
    extra: &[(&str, String)],
) -> Result<u32, Error> {
    let dir = mesh.creds(pod.name(), &id(sa));
    for _ in 0..2 {
        // Twice: init is idempotent.
        let out = pod.exec(PROXY, &["init"], WAIT).await?;
        assert!(
            out.status.success(),
            "init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut cmd = pod.command("setpriv");
    cmd.args(["--reuid=2102", "--regid=2102", "--clear-groups", PROXY])
        .env("STRAIT_PROXY_IDENTITY_TRUST_ANCHORS", dir.join("ca.crt"))
        .env("STRAIT_PROXY_IDENTITY_CERT", dir.join("tls.crt"))
        .env("STRAIT_PROXY_IDENTITY_KEY", dir.join("tls.key"))
        .env("STRAIT_PROXY_DESTINATION_ADDR", dest.to_string())
        .env(
            "STRAIT_PROXY_DESTINATION_SVC_NAME",
            id_of(DST_SA).to_string(),
        )
        // Policy on, as the injector sets it: the control plane's policy service answers
        // beside destination.
        .env(
            "STRAIT_PROXY_POLICY_WORKLOAD",
            format!("{NS}:{}", pod.name()),
        )
        .env("STRAIT_PROXY_SHUTDOWN_GRACE_PERIOD", "2s")
        .env("STRAIT_PROXY_LOG", "info,strait_proxy=debug");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let pid = pod.spawn("proxy", cmd)?;
    let admin = SocketAddr::new(pod.ip().into(), 4191);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok((200, _)) = http_get(admin, "/ready").await {
            return Ok(pid);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "proxy in {} never ready:\n{}",
                pod.name(),
                pod.log_tails(30)
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One HTTP/1.0 GET from the test (root namespace): (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), Error> {
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await??;
    s.write_all(format!("GET {path} HTTP/1.0\r\nhost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await??;
    let (head, body) = out.split_once("\r\n\r\n").ok_or("no response")?;
    let status = head.split(' ').nth(1).ok_or("no status")?.parse()?;
    Ok((status, body.to_owned()))
}

pub async fn metrics(pod: &Pod) -> String {
    http_get(SocketAddr::new(pod.ip().into(), 4191), "/metrics")
        .await
        .map(|(_, b)| b)
        .unwrap_or_default()
}

/// What `strait-sample load` reports.
pub use strait_e2e::tool::LoadReport as Load;

pub async fn load(
    client: &Pod,
    addr: &str,
    n: usize,
    conc: usize,
    h2: bool,
) -> Result<Load, Error> {
    let (n_s, c_s) = (n.to_string(), conc.to_string());
    let mut args = vec!["load", addr, &n_s, &c_s];
    if h2 {
        args.push("h2");
    }
    let out = client.exec(TOOL, &args, Duration::from_secs(60)).await?;
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).map_err(|e| {
        format!(
            "load {addr}: {e}: {text} {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            client.log_tails(40)
        )
        .into()
    })
}

pub async fn service(
    cluster: &Cluster,
    name: &str,
    app: &str,
    port: u16,
    target: u16,
) -> Result<String, Error> {
    let api = Api::<Service>::namespaced(cluster.client(), NS);
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": NS},
        "spec": {"selector": {"app": app}, "ports": [{"name": "p", "port": port, "targetPort": target}]},
    }))?;
    let svc = api.create(&PostParams::default(), &svc).await?;
    let ip = svc.spec.and_then(|s| s.cluster_ip).ok_or("no cluster IP")?;
    Ok(format!("{ip}:{port}"))
}

pub fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}
