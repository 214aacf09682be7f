//! Pods as processes in network namespaces.

use crate::cluster::Cluster;
use crate::error::{Error, io};
use crate::net::PodNetwork;
use crate::process::Process;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Pod as PodObject, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// The audience of the token a Strait proxy presents to the identity service.
pub const IDENTITY_AUDIENCE: &str = "identity.l5d.io";

/// What a pod looks like in the API: name, namespace, labels, service account, ports.
#[derive(Clone, Debug)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub service_account: String,
    /// Named container ports, so Services may target them by name.
    pub ports: Vec<(String, u16)>,
}

impl PodSpec {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            service_account: "default".to_owned(),
            ports: Vec::new(),
        }
    }

    pub fn label(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }

    pub fn annotation(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.annotations.insert(k.into(), v.into());
        self
    }

    pub fn service_account(mut self, sa: impl Into<String>) -> Self {
        self.service_account = sa.into();
        self
    }

    pub fn port(mut self, name: impl Into<String>, port: u16) -> Self {
        self.ports.push((name.into(), port));
        self
    }
}

/// A running pod: a network namespace with an address, the Pod object in the API, its
/// service-account tokens on disk, and the processes started in it. Dropping it kills the
/// processes and removes the namespace; [`Pod::delete`] also removes the API object.
pub struct Pod {
    spec: PodSpec,
    uid: String,
    client: kube::Client,
    dir: PathBuf,
    processes: Mutex<Vec<Process>>,
    network: PodNetwork,
}

impl Cluster {
    /// Starts a pod: namespace and ServiceAccount (created if missing), a network namespace
    /// with the next address of this cluster's pod range, the Pod object (Running, Ready), and
    /// its tokens. The harness writes EndpointSlices for every Service that selects it.
    pub async fn pod(&self, spec: PodSpec) -> Result<Pod, Error> {
        self.ensure_namespace(&spec.namespace).await?;
        self.ensure_service_account(&spec.namespace, &spec.service_account)
            .await?;
        let n = self.next_pod_index();
        let addr = self
            .slot
            .pod_addr(n)
            .ok_or_else(|| Error::AddressesExhausted {
                cluster: self.name().to_owned(),
            })?;
        let network = PodNetwork::create(&self.slot, n, addr)?;
        let dir = self
            .dir()
            .join("pods")
            .join(format!("{}-{}", spec.namespace, spec.name));
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;

        let pods = Api::<PodObject>::namespaced(self.client(), &spec.namespace);
        let ports: Vec<_> = spec
            .ports
            .iter()
            .map(|(name, port)| serde_json::json!({"name": name, "containerPort": port}))
            .collect();
        let object: PodObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": spec.name,
                "namespace": spec.namespace,
                "labels": spec.labels,
                "annotations": spec.annotations,
            },
            "spec": {
                "serviceAccountName": spec.service_account,
                "nodeName": format!("localcluster-{}", self.name()),
                "containers": [{"name": "main", "image": "localcluster.strait.dev/process", "ports": ports}],
            }
        }))
        .map_err(|e| Error::Kube(kube::Error::SerdeError(e)))?;
        let created = pods.create(&PostParams::default(), &object).await?;
        let uid = created.metadata.uid.unwrap_or_default();
        let pod = Pod {
            spec,
            uid,
            client: self.client(),
            dir,
            processes: Mutex::new(Vec::new()),
            network,
        };
        pod.write_status(true).await?;
        pod.write_tokens(self.ca_pem()).await?;
        Ok(pod)
    }
}

impl Pod {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn namespace(&self) -> &str {
        &self.spec.namespace
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.network.addr()
    }

    /// The network namespace's name, for `ip netns exec`.
    pub fn netns(&self) -> &str {
        self.network.netns()
    }

    /// The folder with this pod's files and process logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A projected service-account volume: `token` (audience: the API server), `ca.crt` and
    /// `namespace`, as `/var/run/secrets/kubernetes.io/serviceaccount` holds them.
    pub fn service_account_dir(&self) -> PathBuf {
        self.dir.join("serviceaccount")
    }

    /// A token for audience `identity.l5d.io`, which a proxy presents to the identity service.
    pub fn identity_token_path(&self) -> PathBuf {
        self.dir.join("identity").join("token")
    }

    /// A command that runs `program` inside this pod's network namespace, with `POD_NAME`,
    /// `POD_NAMESPACE` and `POD_IP` set.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", self.netns()])
            .arg(program)
            .env("POD_NAME", &self.spec.name)
            .env("POD_NAMESPACE", &self.spec.namespace)
            .env("POD_IP", self.ip().to_string());
        cmd
    }

    /// Starts a long-running process in this pod (built with [`Pod::command`]). Its output
    /// goes to `<dir>/<name>.log`; it is killed when the pod goes.
    pub fn spawn(&self, name: &str, cmd: std::process::Command) -> Result<u32, Error> {
        let p = Process::spawn(
            format!("{}/{name}", self.spec.name),
            cmd,
            self.dir.join(format!("{name}.log")),
        )?;
        let pid = p.pid();
        self.processes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(p);
        Ok(pid)
    }

    /// Runs `program args…` to completion inside the pod (at most `timeout`).
    pub async fn exec(
        &self,
        program: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<std::process::Output, Error> {
        let mut cmd = tokio::process::Command::from(self.command(program));
        cmd.args(args).kill_on_drop(true);
        match tokio::time::timeout(timeout, cmd.output()).await {
            Ok(out) => out.map_err(io(format!("running {program} in pod {}", self.spec.name))),
            Err(_) => Err(Error::Io {
                what: format!("running {program} in pod {}", self.spec.name),
                source: std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"),
            }),
        }
    }

    /// Sets the Pod's Ready condition, which the harness's EndpointSlices follow.
    pub async fn set_ready(&self, ready: bool) -> Result<(), Error> {
        self.write_status(ready).await
    }

    /// Deletes the Pod object (its endpoints go) and tears the pod down.
    pub async fn delete(self) -> Result<(), Error> {
        let pods = Api::<PodObject>::namespaced(self.client.clone(), &self.spec.namespace);
        pods.delete(&self.spec.name, &DeleteParams::default().grace_period(0))
            .await?;
        Ok(())
    }

    /// The pod's processes' log tails.
    pub fn log_tails(&self, lines: usize) -> String {
        let procs = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        procs
            .iter()
            .map(|p| {
                format!(
                    "----- {} ({}) -----\n{}\n",
                    p.name(),
                    p.log_path().display(),
                    p.log_tail(lines)
                )
            })
            .collect()
    }

    async fn write_status(&self, ready: bool) -> Result<(), Error> {
        let pods = Api::<PodObject>::namespaced(self.client.clone(), &self.spec.namespace);
        let ip = self.ip().to_string();
        let status = if ready { "True" } else { "False" };
        let patch = serde_json::json!({
            "status": {
                "phase": "Running",
                "hostIP": "127.0.0.1",
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "conditions": [
                    {"type": "Ready", "status": status},
                    {"type": "ContainersReady", "status": status},
                ],
            }
        });
        pods.patch_status(
            &self.spec.name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        Ok(())
    }

    async fn write_tokens(&self, ca_pem: &str) -> Result<(), Error> {
        let sa_dir = self.service_account_dir();
        let id_dir = self.dir.join("identity");
        for d in [&sa_dir, &id_dir] {
            std::fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
        }
        let api_token = self.request_token(None).await?;
        let identity_token = self.request_token(Some(IDENTITY_AUDIENCE)).await?;
        let write = |p: PathBuf, s: &str| {
            std::fs::write(&p, s).map_err(io(format!("writing {}", p.display())))
        };
        write(sa_dir.join("token"), &api_token)?;
        write(sa_dir.join("ca.crt"), ca_pem)?;
        write(sa_dir.join("namespace"), &self.spec.namespace)?;
        write(self.identity_token_path(), &identity_token)?;
        Ok(())
    }

    /// A TokenRequest bound to this Pod, as the kubelet makes for a projected volume.
    async fn request_token(&self, audience: Option<&str>) -> Result<String, Error> {
        let sas = Api::<ServiceAccount>::namespaced(self.client.clone(), &self.spec.namespace);
        let req: TokenRequest = serde_json::from_value(serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": audience.map(|a| vec![a]).unwrap_or_default(),
                "expirationSeconds": 86400,
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.spec.name, "uid": self.uid},
            }
        }))
        .map_err(|e| Error::Kube(kube::Error::SerdeError(e)))?;
        let resp = sas
            .create_token_request(&self.spec.service_account, &PostParams::default(), &req)
            .await?;
        Ok(resp.status.map(|s| s.token).unwrap_or_default())
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails(40));
        }
        // Processes first, then the namespace (PodNetwork's own drop).
        self.processes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl std::fmt::Debug for Pod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pod")
            .field("namespace", &self.spec.namespace)
            .field("name", &self.spec.name)
            .field("ip", &self.ip())
            .field("netns", &self.netns())
            .finish_non_exhaustive()
    }
}
