//! Meshed pods: a pod with iptables interception and the sidecar proxy, certified by its
//! cluster's identity service with the pod's own token.

use crate::admin::http_get;
use crate::control_plane::ControlPlane;
use crate::{Error, Lab, PROXY_UID, identity, io, set_mode, wait_until};
use std::net::SocketAddr;
use std::time::Duration;
use strait_core::identity::Identity;
use strait_localcluster::{Cluster, Pod, PodSpec};

impl Lab {
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
