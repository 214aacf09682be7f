//! The control-plane components a cluster with real nodes adds to etcd and kube-apiserver:
//! kube-controller-manager (Deployments, ReplicaSets, EndpointSlices, ServiceAccounts and
//! garbage collection are Kubernetes' own) and kube-scheduler. Each authenticates with a
//! client certificate of its bootstrap RBAC identity; both serve only on 127.0.0.1.

use crate::assets::NodeAssets;
use crate::error::Error;
use crate::net::Slot;
use crate::net::free_port;
use crate::pki::ClusterPki;
use crate::process::Process;
use std::path::Path;
use std::process::Command;

/// The kube-apiserver flags a cluster with nodes needs beyond the process-pod tier's:
/// reach kubelets by their InternalIP (never by name through the machine's resolver), with a
/// client certificate, and let the Node authorizer and NodeRestriction confine kubelets.
pub(crate) fn apiserver_flags(pki: &ClusterPki) -> Result<Vec<String>, Error> {
    let kubelet_client = pki.client(
        "apiserver-kubelet-client",
        "kube-apiserver-kubelet-client",
        Some("system:masters"),
    )?;
    Ok(vec![
        "--kubelet-preferred-address-types=InternalIP".into(),
        format!(
            "--kubelet-client-certificate={}",
            kubelet_client.cert.display()
        ),
        format!("--kubelet-client-key={}", kubelet_client.key.display()),
        "--enable-admission-plugins=NodeRestriction".into(),
        // Webhooks (the proxy injector) and aggregated APIs are called at their endpoints'
        // pod addresses, which the root namespace routes to the nodes; Service addresses
        // exist only inside the nodes, where kube-proxy programs them.
        "--enable-aggregator-routing=true".into(),
    ])
}

/// Starts kube-controller-manager and kube-scheduler against `server`.
pub(crate) fn start(
    cluster: &str,
    server: &str,
    pki: &ClusterPki,
    dir: &Path,
    assets: &NodeAssets,
    slot: &Slot,
) -> Result<Vec<Process>, Error> {
    let kubeconfig = |file: &str, cn: &str| -> Result<String, Error> {
        let c = pki.client(file, cn, None)?;
        let path = dir.join(format!("{file}.kubeconfig"));
        std::fs::write(
            &path,
            super::config::kubeconfig(cn, server, &pki.ca_cert, &c.cert, &c.key),
        )
        .map_err(crate::error::io(format!("writing {}", path.display())))?;
        Ok(path.display().to_string())
    };
    let kcm_config = kubeconfig("kube-controller-manager", "system:kube-controller-manager")?;
    let mut kcm = Command::new(&assets.kube_controller_manager);
    kcm.args([
        format!("--kubeconfig={kcm_config}"),
        format!(
            "--service-account-private-key-file={}",
            pki.service_account_key.display()
        ),
        format!("--root-ca-file={}", pki.ca_cert.display()),
        "--use-service-account-credentials=true".into(),
        "--allocate-node-cidrs=false".into(),
        format!("--cluster-name={cluster}"),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={}", free_port()?),
        "--leader-elect=false".into(),
        // Short enough that a test sees a lost node's pods moved within its run.
        "--node-monitor-grace-period=20s".into(),
        "--v=1".into(),
    ]);
    let kcm = Process::spawn(
        "kube-controller-manager",
        kcm,
        dir.join("logs/kube-controller-manager.log"),
    )?;
    slot.record_pid(kcm.pid());

    let sched_config = kubeconfig("kube-scheduler", "system:kube-scheduler")?;
    let mut sched = Command::new(&assets.kube_scheduler);
    sched.args([
        format!("--kubeconfig={sched_config}"),
        format!("--authentication-kubeconfig={sched_config}"),
        format!("--authorization-kubeconfig={sched_config}"),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={}", free_port()?),
        "--leader-elect=false".into(),
        "--v=1".into(),
    ]);
    let sched = Process::spawn("kube-scheduler", sched, dir.join("logs/kube-scheduler.log"))?;
    slot.record_pid(sched.pid());
    Ok(vec![kcm, sched])
}
