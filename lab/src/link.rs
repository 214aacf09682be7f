//! The Link from the importing cluster to the exporting one, and the mirror controller run
//! in this process; waiting for the mirrors it writes.

use crate::gateway::GatewayPod;
use crate::{Error, Lab, MULTICLUSTER_NS, WAIT, io};
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::CustomResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use strait_k8s_api::Link;
use strait_localcluster::Cluster;

impl Lab {
    /// Links `west` to `east` and runs west's mirror controller in this process: the Link
    /// CRD, a credentials Secret holding east's kubeconfig, a `Link` named after east whose
    /// gateway is `gateway`, selecting `mirror.strait.dev/exported=true` (through the
    /// gateway) and `=remote-discovery` (straight to the pods, the lab's network being flat).
    pub async fn link(
        &self,
        west: &Cluster,
        east: &Cluster,
        gateway: &GatewayPod,
    ) -> Result<MirrorLink, Error> {
        let w = west.client();
        install_link_crd(&w).await?;
        west.ensure_namespace(MULTICLUSTER_NS).await?;
        let secret_name = format!("cluster-credentials-{}", east.name());
        let kubeconfig = std::fs::read_to_string(east.kubeconfig_path())
            .map_err(io("reading east's kubeconfig"))?;
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": secret_name, "namespace": MULTICLUSTER_NS},
            "type": "mirror.strait.dev/remote-kubeconfig",
            "stringData": {"kubeconfig": kubeconfig},
        }))
        .map_err(|e| Error::Invalid(e.to_string()))?;
        let pp = PatchParams::apply("strait-lab").force();
        Api::<Secret>::namespaced(w.clone(), MULTICLUSTER_NS)
            .patch(&secret_name, &pp, &Patch::Apply(&secret))
            .await?;
        let link: Link = serde_json::from_value(serde_json::json!({
            "apiVersion": "multicluster.strait.dev/v1alpha1", "kind": "Link",
            "metadata": {"name": east.name(), "namespace": MULTICLUSTER_NS},
            "spec": {
                "targetClusterName": east.name(),
                "targetClusterDomain": east.cluster_domain(),
                "clusterCredentialsSecret": secret_name,
                "gatewayAddress": gateway.pod.ip().to_string(),
                "gatewayPort": strait_core::ports::GATEWAY,
                "gatewayIdentity": gateway.identity.to_string(),
                "probeSpec": {"path": "/ready", "port": strait_core::ports::ADMIN,
                    "period": "1s", "timeout": "1s", "failureThreshold": 2},
                "selector": {"matchLabels": {strait_core::labels::EXPORTED: strait_core::labels::EXPORTED_GATEWAY}},
                "remoteDiscoverySelector": {"matchLabels": {strait_core::labels::EXPORTED: strait_core::labels::EXPORTED_REMOTE_DISCOVERY}},
            }
        }))
        .map_err(|e| Error::Invalid(e.to_string()))?;
        Api::<Link>::namespaced(w.clone(), MULTICLUSTER_NS)
            .patch(east.name(), &pp, &Patch::Apply(&link))
            .await?;
        let mut config =
            strait_mirror::Config::new(MULTICLUSTER_NS, self.anchors_pem().into_bytes());
        config.admin_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config.holder_identity = format!("strait-lab-{}", west.name());
        config.lease_duration = Duration::from_secs(5);
        let metrics = Arc::new(strait_mirror::Metrics::new());
        let task = tokio::spawn(strait_mirror::run(w.clone(), config, metrics));
        Ok(MirrorLink {
            client: w,
            remote: east.name().to_owned(),
            task,
        })
    }
}

/// West's mirror controller with its Link; stops when dropped.
pub struct MirrorLink {
    client: kube::Client,
    remote: String,
    task: tokio::task::JoinHandle<Result<(), strait_mirror::Error>>,
}

impl std::fmt::Debug for MirrorLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorLink")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl Drop for MirrorLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A mirror Service as the importing cluster sees it.
#[derive(Clone, Debug)]
pub struct Mirror {
    pub name: String,
    pub cluster_ip: Ipv4Addr,
    /// The ready addresses in its EndpointSlices (the gateway's, or the remote pods').
    pub endpoints: Vec<String>,
}

impl MirrorLink {
    /// Stops the controller and waits until its task has ended (before the clusters go,
    /// so it does not log a remote that vanished).
    pub async fn stop(self) {
        self.task.abort();
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while !self.task.is_finished() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    /// Waits until the mirror of `service` in `ns` exists with a ready endpoint (the gateway,
    /// or for remote discovery the remote pods).
    pub async fn wait_mirror(&self, ns: &str, service: &str) -> Result<Mirror, Error> {
        let name = format!("{service}-{}", self.remote);
        let svcs = Api::<Service>::namespaced(self.client.clone(), ns);
        let slices = Api::<EndpointSlice>::namespaced(self.client.clone(), ns);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(m) = self.ready_mirror(&svcs, &slices, &name).await {
                return Ok(m);
            }
            if self.task.is_finished() {
                return Err(Error::Invalid("the mirror controller stopped".into()));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::NotReady {
                    what: format!("mirror {ns}/{name}"),
                    after: WAIT,
                    logs: String::new(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn ready_mirror(
        &self,
        svcs: &Api<Service>,
        slices: &Api<EndpointSlice>,
        name: &str,
    ) -> Option<Mirror> {
        let svc = svcs.get_opt(name).await.ok()??;
        let ip: Ipv4Addr = svc.spec?.cluster_ip?.parse().ok()?;
        let list = slices
            .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={name}")))
            .await
            .ok()?;
        let endpoints: Vec<String> = list
            .items
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
            .flat_map(|e| e.addresses.iter().cloned())
            .collect();
        (!endpoints.is_empty()).then(|| Mirror {
            name: name.to_owned(),
            cluster_ip: ip,
            endpoints,
        })
    }
}

async fn install_link_crd(client: &kube::Client) -> Result<(), Error> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "links.multicluster.strait.dev",
        &PatchParams::apply("strait-lab").force(),
        &Patch::Apply(Link::crd()),
    )
    .await?;
    let links: Api<Link> = Api::all(client.clone());
    for _ in 0..150 {
        if links.list(&ListParams::default().limit(1)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(Error::NotReady {
        what: "the Link CRD".into(),
        after: Duration::from_secs(30),
        logs: String::new(),
    })
}
