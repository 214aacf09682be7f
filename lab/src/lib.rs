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
//! [`Lab::link`] in the importing one. Everything stops when dropped. The program workload
//! pods run is `strait-sample` (HTTP/1, HTTP/2, gRPC and TCP servers and clients; the tests
//! crate's `tool` module), passed in as [`Binaries::tool`].

mod admin;
mod control_plane;
mod gateway;
mod link;
mod meshed;

pub use admin::{http_get, metric_lines, metric_sum};
pub use control_plane::ControlPlane;
pub use gateway::GatewayPod;
pub use link::{Mirror, MirrorLink};
pub use meshed::MeshedPod;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use strait_core::identity::Identity;
use strait_localcluster::Pod;
use strait_tls::{Issuer, TrustAnchors};

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
    /// The sample program (`strait-sample`), run with `tool_args` before each command.
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
    fn identities() {
        assert_eq!(
            identity("strait-gateway", MULTICLUSTER_NS)
                .unwrap()
                .to_string(),
            "strait-gateway.strait-multicluster.serviceaccount.identity.strait.cluster.local"
        );
    }
}
