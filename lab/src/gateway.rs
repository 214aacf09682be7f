//! The gateway as a pod of the exporting cluster, with a certificate from its control plane's
//! issuer; it can be killed and restarted at the same address.

use crate::admin::exchange;
use crate::control_plane::ControlPlane;
use crate::{Error, Lab, MULTICLUSTER_NS, identity, io, pem, wait_until};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use strait_core::identity::Identity;
use strait_localcluster::{Cluster, Pod, PodSpec};
use strait_tls::TrustAnchors;

impl Lab {
    /// Starts the gateway in `cluster` as a pod (service account `strait-gateway` in
    /// `strait-multicluster`), with a certificate from `cp`'s issuer, resolving through `cp`.
    /// Returns once `/ready` answers over TLS.
    pub async fn gateway(&self, cluster: &Cluster, cp: &ControlPlane) -> Result<GatewayPod, Error> {
        let me = identity(
            strait_core::identity::GATEWAY_SERVICE_ACCOUNT,
            MULTICLUSTER_NS,
        )?;
        let pod = cluster
            .pod(
                PodSpec::new(MULTICLUSTER_NS, "strait-gateway-0")
                    .label("app", "strait-gateway")
                    .service_account(strait_core::identity::GATEWAY_SERVICE_ACCOUNT)
                    .port("mc-gateway", strait_core::ports::GATEWAY)
                    .port("mc-probe", strait_core::ports::ADMIN),
            )
            .await?;
        let dir = self.dir.path().join(format!("{}-gateway", cp.cluster));
        std::fs::create_dir_all(&dir).map_err(io("creating the gateway folder"))?;
        let req = strait_tls::generate_csr(&me)?;
        let leaf = cp.issuer.issue(
            &req.csr,
            &me,
            strait_tls::DEFAULT_LEAF_LIFETIME,
            SystemTime::now(),
        )?;
        let chain = TrustAnchors::from_certs(leaf.chain())?.to_pem();
        std::fs::write(dir.join("tls.crt"), chain).map_err(io("writing the gateway cert"))?;
        std::fs::write(
            dir.join("tls.key"),
            pem("PRIVATE KEY", req.key.secret_der()),
        )
        .map_err(io("writing the gateway key"))?;
        let gw = GatewayPod {
            pod,
            identity: me,
            dir,
            binary: self.bins.gateway.clone(),
            anchors: self.anchors()?,
            anchors_file: self.dir.path().join("ca.crt"),
            destination: cp.destination,
            destination_name: cp.destination_name.clone(),
            cluster_domain: cluster.cluster_domain().to_owned(),
            pid: std::sync::Mutex::new(0),
        };
        gw.start().await?;
        Ok(gw)
    }
}

/// The gateway running as a pod; [`GatewayPod::restart`] kills its process and starts a new
/// one at the same address.
#[derive(Debug)]
pub struct GatewayPod {
    pub pod: Pod,
    pub identity: Identity,
    dir: PathBuf,
    binary: PathBuf,
    anchors: TrustAnchors,
    anchors_file: PathBuf,
    destination: SocketAddr,
    destination_name: Identity,
    cluster_domain: String,
    pid: std::sync::Mutex<u32>,
}

impl GatewayPod {
    /// The pod's address: what the Link names.
    pub fn ip(&self) -> Ipv4Addr {
        self.pod.ip()
    }

    /// The running gateway process.
    pub fn pid(&self) -> u32 {
        *self.pid.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn start(&self) -> Result<(), Error> {
        let mut cmd = self.pod.command(&self.binary);
        cmd.arg(format!("--cert={}", self.dir.join("tls.crt").display()))
            .arg(format!("--key={}", self.dir.join("tls.key").display()))
            .arg(format!("--trust-anchors={}", self.anchors_file.display()))
            .arg(format!("--destination=http://{}", self.destination))
            .arg(format!("--destination-identity={}", self.destination_name))
            .arg(format!("--cluster-domain={}", self.cluster_domain))
            .arg("--drain-timeout=2s")
            .env(
                "STRAIT_LOG",
                std::env::var("STRAIT_LAB_GATEWAY_LOG").unwrap_or_else(|_| "info".into()),
            );
        let n = {
            let mut pid = self.pid.lock().unwrap_or_else(|e| e.into_inner());
            let n = if *pid == 0 { 0 } else { 1 };
            *pid = self.pod.spawn(&format!("gateway-{n}"), cmd)?;
            n
        };
        wait_until(&format!("gateway process {n}"), &self.pod, || async {
            matches!(self.admin_get("/ready").await, Ok((200, _)))
        })
        .await
    }

    /// Kills the gateway process outright (SIGKILL, no drain) and starts it again at the same
    /// address; returns once the new process is ready.
    pub async fn restart(&self) -> Result<(), Error> {
        let pid = self.pid();
        let pid = nix::unistd::Pid::from_raw(
            i32::try_from(pid).map_err(|_| Error::Invalid(format!("pid {pid}")))?,
        );
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL)
            .map_err(|e| Error::Invalid(format!("killing the gateway {pid}: {e}")))?;
        // Bounded: the admin port stops answering once the process is gone.
        for _ in 0..100 {
            if self.admin_get("/live").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.start().await
    }

    /// The gateway's Prometheus text, over TLS to its admin port (verifying its identity).
    pub async fn metrics(&self) -> Result<String, Error> {
        Ok(self.admin_get("/metrics").await?.1)
    }

    /// GET `path` on the admin port over TLS: (status, body).
    pub async fn admin_get(&self, path: &str) -> Result<(u16, String), Error> {
        let (_tx, rx) = strait_tls::credentials_channel(None);
        let cfg = strait_tls::client_config(&self.anchors, rx, &[b"http/1.1"])?;
        let addr = SocketAddr::new(self.pod.ip().into(), strait_core::ports::ADMIN);
        let tls = tokio::time::timeout(Duration::from_secs(5), async {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(io(format!("connecting to {addr}")))?;
            Ok::<_, Error>(strait_tls::connect(cfg, &self.identity, tcp).await?)
        })
        .await
        .map_err(|_| Error::Invalid(format!("{addr}: TLS timed out")))??;
        exchange(tls, addr, path).await
    }
}
