//! What the mirror tests share: two clusters with the Link CRD, a PKI and a stand-in gateway,
//! Services and Links as the tests write them, the pair linked as most tests need it
//! ([`linked_pair`]), and reads of what the controller made.
// Each test file uses its own part of these.
#![allow(dead_code)]

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt};
use std::collections::BTreeSet;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use strait_core::labels;
use strait_k8s_api::{Link, LinkStatus};
use strait_localcluster::{Cluster, ClusterConfig, Pod, PodSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub type Res<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

pub const LINK_NS: &str = "strait-multicluster";
pub const GW_ID: &str =
    "strait-gateway.strait-multicluster.serviceaccount.identity.strait.cluster.local";
pub const WRONG_ID: &str =
    "impostor.strait-multicluster.serviceaccount.identity.strait.cluster.local";
pub const EXPORTED: (&str, &str) = (labels::EXPORTED, "true");

/// Polls `f` every 200 ms until it returns `Some`, for at most `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> Res<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if start.elapsed() > limit {
            return Err(format!("timed out after {limit:?} waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub struct Pki {
    pub anchor_pem: String,
    pub good: (Vec<rustls::pki_types::CertificateDer<'static>>, Vec<u8>),
    pub wrong: (Vec<rustls::pki_types::CertificateDer<'static>>, Vec<u8>),
}

pub fn pki() -> Res<Pki> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "test trust anchor");
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |name: &str| -> Res<_> {
        let key = KeyPair::generate()?;
        let cert = CertificateParams::new(vec![name.to_string()])?.signed_by(&key, &issuer)?;
        Ok((vec![cert.der().clone()], key.serialize_der()))
    };
    Ok(Pki {
        anchor_pem: ca_cert.pem(),
        good: leaf(GW_ID)?,
        wrong: leaf(WRONG_ID)?,
    })
}

/// A stand-in gateway admin port: TLS 1.3, answers 200 to any request while `up`.
pub struct Gateway {
    pub addr: SocketAddr,
    pub up: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn gateway(
    ip: IpAddr,
    cert: &(Vec<rustls::pki_types::CertificateDer<'static>>, Vec<u8>),
) -> Res<Gateway> {
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.1.clone().into());
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_no_client_auth()
    .with_single_cert(cert.0.clone(), key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind((ip, 0)).await?;
    let addr = listener.local_addr()?;
    let up = Arc::new(AtomicBool::new(true));
    let up2 = up.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            if !up2.load(Ordering::SeqCst) {
                drop(tcp);
                continue;
            }
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(Ok(mut tls)) =
                    tokio::time::timeout(Duration::from_secs(5), acceptor.accept(tcp)).await
                else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < 65536 {
                    match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await {
                        Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    Ok(Gateway { addr, up, task })
}

pub async fn install_crd(client: &Client) -> Res {
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "links.multicluster.strait.dev",
        &PatchParams::apply("test").force(),
        &Patch::Apply(Link::crd()),
    )
    .await?;
    let links: Api<Link> = Api::namespaced(client.clone(), "default");
    wait_for("the Link CRD to be served", Duration::from_secs(30), || {
        let links = links.clone();
        async move { links.list(&ListParams::default()).await.ok().map(|_| ()) }
    })
    .await
}

pub fn service(
    ns: &str,
    name: &str,
    port: i32,
    extra: &[(&str, &str)],
    selector: Option<&str>,
) -> Res<Service> {
    let mut labels: serde_json::Map<String, serde_json::Value> = serde_json::Map::new();
    for (k, v) in extra {
        labels.insert((*k).into(), (*v).into());
    }
    let mut spec =
        serde_json::json!({"ports": [{"name": "http", "port": port, "targetPort": port}]});
    if let Some(app) = selector {
        spec["selector"] = serde_json::json!({"app": app});
    }
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": labels,
            "annotations": {"keep-me": "yes", "drop-me": "no", "service.kubernetes.io/topology-mode": "Auto"}},
        "spec": spec,
    }))?)
}

pub fn link(name: &str, secret: &str, gw_ip: IpAddr, probe_port: u16, identity: &str) -> Res<Link> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "multicluster.strait.dev/v1alpha1", "kind": "Link",
        "metadata": {"name": name, "namespace": LINK_NS},
        "spec": {
            "targetClusterName": "east",
            "targetClusterDomain": "cluster.local",
            "clusterCredentialsSecret": secret,
            "gatewayAddress": gw_ip.to_string(),
            "gatewayPort": 4143,
            "gatewayIdentity": identity,
            "probeSpec": {"path": "/ready", "port": probe_port, "period": "1s", "timeout": "1s", "failureThreshold": 2},
            "selector": {"matchLabels": {labels::EXPORTED: "true"}},
            "excludedLabels": ["secret.example.com/*"],
            "excludedAnnotations": ["drop-me"],
        }
    }))?)
}

pub async fn put_secret(client: &Client, name: &str, kubeconfig: &str) -> Res {
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": LINK_NS},
        "stringData": {"kubeconfig": kubeconfig},
    }))?;
    Api::<Secret>::namespaced(client.clone(), LINK_NS)
        .patch(
            name,
            &PatchParams::apply("test").force(),
            &Patch::Apply(&secret),
        )
        .await?;
    Ok(())
}

pub async fn get_svc(client: &Client, ns: &str, name: &str) -> Option<Service> {
    Api::<Service>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .ok()
        .flatten()
}

pub async fn get_slice(client: &Client, ns: &str, name: &str) -> Option<EndpointSlice> {
    Api::<EndpointSlice>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .ok()
        .flatten()
}

pub fn slice_ready(es: &EndpointSlice) -> Option<bool> {
    es.endpoints
        .first()
        .and_then(|e| e.conditions.as_ref())
        .and_then(|c| c.ready)
}

pub async fn status(client: &Client, name: &str) -> Option<LinkStatus> {
    Api::<Link>::namespaced(client.clone(), LINK_NS)
        .get_opt(name)
        .await
        .ok()
        .flatten()?
        .status
}

/// Names of every mirror (Service and slice) labelled as ours for east, cluster-wide.
pub async fn our_mirrors(client: &Client) -> Res<(BTreeSet<String>, BTreeSet<String>)> {
    let lp = ListParams::default().labels(&format!(
        "{}=true,{}=east",
        labels::MIRRORED_SERVICE,
        labels::CLUSTER_NAME
    ));
    let svcs = Api::<Service>::all(client.clone()).list(&lp).await?;
    let slices = Api::<EndpointSlice>::all(client.clone()).list(&lp).await?;
    let key = |m: &kube::api::ObjectMeta| {
        format!(
            "{}/{}",
            m.namespace.clone().unwrap_or_default(),
            m.name.clone().unwrap_or_default()
        )
    };
    Ok((
        svcs.items.iter().map(|s| key(&s.metadata)).collect(),
        slices.items.iter().map(|s| key(&s.metadata)).collect(),
    ))
}

pub async fn set_labels(client: &Client, ns: &str, name: &str, labels: serde_json::Value) -> Res {
    Api::<Service>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": labels}})),
        )
        .await?;
    Ok(())
}

pub const T: Duration = Duration::from_secs(30);
/// Logs to the test's output (once per process) and the ring crypto provider for rustls.
pub fn init(filter: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// West (with the Link CRD and the Links' namespace) and east, started side by side, with
/// the namespaces asked for in each.
pub async fn clusters(west_ns: &[&str], east_ns: &[&str]) -> Res<(Cluster, Cluster)> {
    let (west, east) = tokio::try_join!(
        Cluster::start(ClusterConfig::new("west")),
        Cluster::start(ClusterConfig::new("east"))
    )?;
    install_crd(&west.client()).await?;
    for ns in std::iter::once(&LINK_NS).chain(west_ns) {
        west.ensure_namespace(ns).await?;
    }
    for ns in east_ns {
        east.ensure_namespace(ns).await?;
    }
    Ok((west, east))
}

/// Writes west's credentials Secret for east (named as `link` names it, holding east's own
/// kubeconfig) and creates `link`; returns west's Links.
pub async fn put_link(west: &Cluster, east: &Cluster, link: &Link) -> Res<Api<Link>> {
    let w = west.client();
    put_secret(
        &w,
        &link.spec.cluster_credentials_secret,
        &std::fs::read_to_string(east.kubeconfig_path())?,
    )
    .await?;
    let links: Api<Link> = Api::namespaced(w, LINK_NS);
    links.create(&PostParams::default(), link).await?;
    Ok(links)
}

/// What links west to east in a [`LinkedPair`].
pub struct Linked {
    pub pki: Pki,
    /// The stand-in gateway on east's host address, with the gateway identity's certificate;
    /// it answers the probe until `gw.up` is cleared.
    pub gw: Gateway,
    /// West's Links (in [`LINK_NS`]), `east` among them.
    pub links: Api<Link>,
}

/// West and east linked as most mirror tests link them, from [`linked_pair`]: the clusters,
/// what links them, and the pods started in east. A tuple, so that one `let` binds it all
/// and the pods and the gateway are dropped before the clusters, as a test's own locals
/// would be.
pub type LinkedPair<const N: usize> = (Cluster, Cluster, Linked, [Pod; N]);

/// The two clusters with the namespaces asked for (see [`clusters`]), `pods` started in east
/// in order, a PKI, the stand-in gateway on east's host address, and in west the credentials
/// Secret `east-credentials` and the Link `east` to that gateway (probed on the stand-in's
/// port), as [`link`] writes it. No controller runs yet.
pub async fn linked_pair<const N: usize>(
    west_ns: &[&str],
    east_ns: &[&str],
    pods: [PodSpec; N],
) -> Res<LinkedPair<N>> {
    linked_pair_with(west_ns, east_ns, pods, |_| Ok(())).await
}

/// [`linked_pair`], with the Link changed by `edit` before it is created.
pub async fn linked_pair_with<const N: usize>(
    west_ns: &[&str],
    east_ns: &[&str],
    pods: [PodSpec; N],
    edit: impl FnOnce(&mut Link) -> Res,
) -> Res<LinkedPair<N>> {
    if N == 0 {
        // Only a pod gives the root namespace east's host address, where the gateway listens.
        return Err("a linked pair needs a pod in east for its gateway".into());
    }
    let (west, east) = clusters(west_ns, east_ns).await?;
    let mut started = Vec::with_capacity(N);
    for spec in pods {
        started.push(east.pod(spec).await?);
    }
    let pods: [Pod; N] = started
        .try_into()
        .map_err(|_| "the pods started are not the pods asked for")?;
    let gw_ip = IpAddr::V4(east.host_addr());
    let pki = pki()?;
    let gw = gateway(gw_ip, &pki.good).await?;
    let mut l = link("east", "east-credentials", gw_ip, gw.addr.port(), GW_ID)?;
    edit(&mut l)?;
    let links = put_link(&west, &east, &l).await?;
    Ok((west, east, Linked { pki, gw, links }, pods))
}
