//! The destination service against a real kube-apiserver: the in-process gRPC server watches a
//! local cluster, and a tonic client from `linkerd2-proxy-api` asks it what a proxy would ask.
//!
//! All cases share one cluster (starting one costs seconds and ~350 MB) and run in order.
//! Every wait is bounded; no assertion is about wall-clock time.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use linkerd2_proxy_api::destination as pb;
use linkerd2_proxy_api::destination::destination_client::DestinationClient;
use pb::update::Update as U;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use strait_control_plane::destination::{self, DestinationConfig, Discovery, Metrics};
use strait_core::labels;
use strait_localcluster::{Cluster, ClusterConfig, PodSpec};
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(30);
const NS: &str = "shop";

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Server {
    addr: SocketAddr,
    discovery: Discovery,
    metrics: Metrics,
    registry: prometheus_client::registry::Registry,
    _task: tokio::task::JoinHandle<()>,
}

async fn start_server(cluster: &Cluster) -> Result<Server, Error> {
    let discovery = Discovery::spawn(cluster.client());
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry);
    let config = DestinationConfig {
        cluster_domain: cluster.cluster_domain().to_owned(),
        ..DestinationConfig::default()
    };
    let svc = discovery.service(config, metrics.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = destination::serve(listener, svc, std::future::pending()).await {
            eprintln!("destination server failed: {e}");
        }
    });
    tokio::time::timeout(WAIT, discovery.synced()).await?;
    Ok(Server {
        addr,
        discovery,
        metrics,
        registry,
        _task: task,
    })
}

async fn client(addr: SocketAddr) -> Result<DestinationClient<Channel>, Error> {
    Ok(DestinationClient::connect(format!("http://{addr}")).await?)
}

fn get(path: &str) -> pb::GetDestination {
    pb::GetDestination {
        scheme: "k8s".into(),
        path: path.into(),
        context_token: String::new(),
    }
}

/// The endpoint set a proxy would hold, built from the updates it received.
#[derive(Debug, Default)]
struct Held {
    addrs: BTreeMap<SocketAddr, pb::WeightedAddr>,
    no_endpoints: Option<bool>,
    removed: Vec<SocketAddr>,
}

fn sock(a: &linkerd2_proxy_api::net::TcpAddress) -> SocketAddr {
    SocketAddr::try_from(*a).expect("server sends valid addresses")
}

impl Held {
    fn apply(&mut self, u: pb::Update) {
        match u.update {
            Some(U::Add(set)) => {
                self.no_endpoints = None;
                for wa in set.addrs {
                    let a = sock(wa.addr.as_ref().expect("addr"));
                    self.addrs.insert(a, wa);
                }
            }
            Some(U::Remove(set)) => {
                for a in set.addrs.iter().map(sock) {
                    self.addrs.remove(&a);
                    self.removed.push(a);
                }
            }
            Some(U::NoEndpoints(n)) => {
                self.removed.extend(self.addrs.keys().copied());
                self.addrs.clear();
                self.no_endpoints = Some(n.exists);
            }
            None => panic!("empty update"),
        }
    }
}

/// Reads updates until `done` holds, bounded by [`WAIT`].
async fn until(
    stream: &mut tonic::Streaming<pb::Update>,
    held: &mut Held,
    what: &str,
    done: impl Fn(&Held) -> bool,
) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done(held) {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Ok(Ok(Some(u))) => held.apply(u),
            Ok(Ok(None)) => return Err(format!("stream ended waiting for {what}").into()),
            Ok(Err(s)) => return Err(format!("stream failed waiting for {what}: {s}").into()),
            Err(_) => return Err(format!("timed out waiting for {what}; held {held:#?}").into()),
        }
    }
    Ok(())
}

fn identity_of(wa: &pb::WeightedAddr) -> Option<&str> {
    Some(
        wa.tls_identity
            .as_ref()?
            .server_name
            .as_ref()?
            .name
            .as_str(),
    )
}

fn is_h2(wa: &pb::WeightedAddr) -> bool {
    matches!(
        wa.protocol_hint.and_then(|h| h.protocol),
        Some(pb::protocol_hint::Protocol::H2(_))
    )
}

async fn create_service(cluster: &Cluster, svc: serde_json::Value) -> Result<Service, Error> {
    let api = Api::<Service>::namespaced(cluster.client(), NS);
    Ok(api
        .create(&PostParams::default(), &serde_json::from_value(svc)?)
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination() -> Result<(), Error> {
    strait_localcluster::require_root()?;
    let cluster = Cluster::start(ClusterConfig::new("dst")).await?;
    cluster.ensure_namespace(NS).await?;
    let server = start_server(&cluster).await?;

    service_with_three_pods(&cluster, &server).await?;
    mirror_service(&cluster, &server).await?;
    unknown_names_fall_back(&server).await?;
    streams_leave_nothing_behind(&server).await?;
    Ok(())
}

/// A Service with three meshed pods: the stream sees all three with identities and the H2
/// hint, one removed when its pod leaves the slice, and NoEndpoints when all are gone. The
/// short names, the cluster IP and a pod IP resolve too.
async fn service_with_three_pods(cluster: &Cluster, server: &Server) -> Result<(), Error> {
    let svc = create_service(
        cluster,
        serde_json::json!({
            "metadata": {"name": "web", "namespace": NS},
            "spec": {"selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
        }),
    )
    .await?;
    let mut pods = Vec::new();
    for i in 1..=3 {
        pods.push(
            cluster
                .pod(
                    PodSpec::new(NS, format!("web-{i}"))
                        .label("app", "web")
                        .annotation(labels::PROXY_VERSION, "test")
                        .service_account("web"),
                )
                .await?,
        );
    }
    let want: Vec<SocketAddr> = pods
        .iter()
        .map(|p| SocketAddr::new(p.ip().into(), 8080))
        .collect();

    let mut c = client(server.addr).await?;
    let mut stream = c
        .get(get("web.shop.svc.cluster.local:80"))
        .await?
        .into_inner();
    let mut held = Held::default();
    until(&mut stream, &mut held, "three endpoints", |h| {
        h.addrs.len() == 3
    })
    .await?;
    for a in &want {
        let wa = &held.addrs[a];
        assert_eq!(
            identity_of(wa),
            Some("web.shop.serviceaccount.identity.strait.cluster.local")
        );
        assert!(is_h2(wa), "meshed endpoints carry the H2 hint: {wa:?}");
        assert!(wa.metric_labels.contains_key("pod"));
    }
    println!(
        "Get web.shop.svc.cluster.local:80 -> {:?}",
        held.addrs.keys()
    );

    // The other spellings of the same Service.
    let cluster_ip = svc
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .ok_or("service has no cluster IP")?;
    for path in [
        "web.shop:80".to_owned(),
        "web.shop.svc:80".to_owned(),
        format!("{cluster_ip}:80"),
    ] {
        let mut s = c.get(get(&path)).await?.into_inner();
        let mut h = Held::default();
        until(&mut s, &mut h, &path, |h| h.addrs.len() == 3).await?;
    }
    // A pod address resolves to that pod alone, with its identity.
    let pod_path = format!("{}:8080", pods[0].ip());
    let mut s = c.get(get(&pod_path)).await?.into_inner();
    let mut h = Held::default();
    until(&mut s, &mut h, &pod_path, |h| h.addrs.len() == 1).await?;
    assert!(identity_of(&h.addrs[&want[0]]).is_some());
    drop(s);
    // GetProfile for a pod address carries the endpoint, identity included.
    let mut profiles = c.get_profile(get(&pod_path)).await?.into_inner();
    let p = tokio::time::timeout(WAIT, profiles.message())
        .await??
        .ok_or("profile stream ended")?;
    let ep = p.endpoint.as_ref().ok_or("pod profile without endpoint")?;
    assert_eq!(
        identity_of(ep),
        Some("web.shop.serviceaccount.identity.strait.cluster.local")
    );
    drop(profiles);

    // One pod leaves the slice.
    let gone = pods.remove(0);
    gone.delete().await?;
    until(&mut stream, &mut held, "one removal", |h| {
        h.removed.contains(&want[0]) && h.addrs.len() == 2
    })
    .await?;
    println!("after deleting web-1 -> {:?}", held.addrs.keys());

    // Not ready counts as gone.
    pods[0].set_ready(false).await?;
    until(&mut stream, &mut held, "not-ready removal", |h| {
        h.removed.contains(&want[1]) && h.addrs.len() == 1
    })
    .await?;

    for p in pods.drain(..) {
        p.delete().await?;
    }
    until(&mut stream, &mut held, "NoEndpoints", |h| {
        h.no_endpoints == Some(true)
    })
    .await?;
    println!("after deleting all -> NoEndpoints {{ exists: true }}");

    // GetProfile names the Service.
    let mut profiles = c
        .get_profile(get("web.shop.svc.cluster.local:80"))
        .await?
        .into_inner();
    let p = tokio::time::timeout(WAIT, profiles.message())
        .await??
        .ok_or("profile stream ended")?;
    assert_eq!(p.fully_qualified_name, "web.shop.svc.cluster.local");
    assert!(p.retry_budget.is_some());
    Ok(())
}

/// A mirror Service: the gateway's address, the gateway identity and the authority
/// override; a not-ready gateway endpoint is removed at once.
async fn mirror_service(cluster: &Cluster, server: &Server) -> Result<(), Error> {
    const GW_ID: &str =
        "strait-gateway.strait-multicluster.serviceaccount.identity.strait.east.local";
    const GW_IP: &str = "198.18.60.1";
    create_service(
        cluster,
        serde_json::json!({
            "metadata": {
                "name": "web-east", "namespace": NS,
                "labels": {labels::MIRRORED_SERVICE: "true", labels::CLUSTER_NAME: "east"},
                "annotations": {
                    labels::REMOTE_GATEWAY_IDENTITY: GW_ID,
                    labels::REMOTE_SVC_FQ_NAME: "web.shop.svc.east.local",
                },
            },
            "spec": {"ports": [{"name": "http", "port": 80}]},
        }),
    )
    .await?;
    let slices = Api::<EndpointSlice>::namespaced(cluster.client(), NS);
    let slice = |ready: bool| {
        serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-east-gateway", "namespace": NS,
                         "labels": {"kubernetes.io/service-name": "web-east",
                                    "endpointslice.kubernetes.io/managed-by": "strait-e2e"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 4143, "protocol": "TCP"}],
            "endpoints": [{"addresses": [GW_IP], "conditions": {"ready": ready}}],
        })
    };
    let pp = PatchParams::apply("strait-e2e").force();
    slices
        .patch("web-east-gateway", &pp, &Patch::Apply(slice(true)))
        .await?;

    let mut c = client(server.addr).await?;
    let mut stream = c
        .get(get("web-east.shop.svc.cluster.local:80"))
        .await?
        .into_inner();
    let mut held = Held::default();
    until(&mut stream, &mut held, "gateway endpoint", |h| {
        h.addrs.len() == 1
    })
    .await?;
    let gw: SocketAddr = format!("{GW_IP}:4143").parse()?;
    let wa = held.addrs.get(&gw).ok_or("gateway address missing")?;
    assert_eq!(identity_of(wa), Some(GW_ID));
    assert_eq!(
        wa.authority_override
            .as_ref()
            .map(|o| o.authority_override.as_str()),
        Some("web.shop.svc.east.local:80")
    );
    println!("Get web-east (mirror) -> {wa:?}");

    slices
        .patch("web-east-gateway", &pp, &Patch::Apply(slice(false)))
        .await?;
    until(&mut stream, &mut held, "gateway removal", |h| {
        h.addrs.is_empty() && h.removed.contains(&gw)
    })
    .await?;
    println!(
        "gateway not ready -> removed (NoEndpoints {:?})",
        held.no_endpoints
    );
    Ok(())
}

/// Names that are not cluster Services get the statuses Linkerd's proxy reads as "fall back
/// to the original destination": NotFound for a missing Service, InvalidArgument for a name
/// outside the cluster or an unknown IP.
async fn unknown_names_fall_back(server: &Server) -> Result<(), Error> {
    let mut c = client(server.addr).await?;
    for (path, code) in [
        ("nope.shop.svc.cluster.local:80", tonic::Code::NotFound),
        ("www.example.com:443", tonic::Code::InvalidArgument),
        ("web.shop.svc.other.domain:80", tonic::Code::InvalidArgument),
        ("198.18.61.1:80", tonic::Code::InvalidArgument),
    ] {
        let status = match c.get(get(path)).await {
            Ok(mut s) => match tokio::time::timeout(WAIT, s.get_mut().message()).await? {
                Err(status) => status,
                Ok(m) => return Err(format!("{path}: expected {code:?}, got {m:?}").into()),
            },
            Err(status) => status,
        };
        assert_eq!(status.code(), code, "{path}: {status}");
        println!("Get {path} -> {:?}", status.code());
    }
    // The connection survives: the same channel still answers.
    let mut s = c.get(get("web-east.shop:80")).await?.into_inner();
    tokio::time::timeout(WAIT, s.message())
        .await??
        .ok_or("stream ended")?;
    // GetProfile for a name outside the cluster is InvalidArgument too.
    let err = c
        .get_profile(get("www.example.com:443"))
        .await
        .err()
        .ok_or("profile for an external name")?;
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &server.registry)?;
    for line in [
        r#"destination_lookups_total{method="Get",result="NotFound"} 1"#,
        r#"destination_lookups_total{method="Get",result="Invalid"} 3"#,
        r#"destination_lookups_total{method="Get",result="Mirror"}"#,
        r#"destination_updates_sent_total{kind="NoEndpoints"}"#,
        r#"destination_open_streams{method="Get"}"#,
    ] {
        assert!(text.contains(line), "metrics lack {line}:\n{text}");
    }
    Ok(())
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Opens `n` Get streams over `conns` connections, reads each stream's first message, then
/// drops them all.
async fn open_and_close(addr: SocketAddr, n: usize, conns: usize) -> Result<(usize, u64), Error> {
    let mut clients = Vec::new();
    for _ in 0..conns {
        clients.push(client(addr).await?);
    }
    let opens = (0..n).map(|i| {
        let mut c = clients[i % conns].clone();
        async move {
            let mut s = c
                .get(get("web-east.shop.svc.cluster.local:80"))
                .await?
                .into_inner();
            tokio::time::timeout(WAIT, s.message())
                .await??
                .ok_or("stream ended")?;
            Ok::<_, Error>(s)
        }
    });
    let streams: Vec<_> = futures::stream::iter(opens)
        .buffer_unordered(200)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    assert_eq!(streams.len(), n);
    let during = (tasks(), rss_kib());
    drop(streams);
    drop(clients);
    Ok(during)
}

/// Waits (bounded) until `cond` holds.
async fn settle(what: &str, cond: impl Fn() -> bool) -> Result<(), Error> {
    for _ in 0..300 {
        if cond() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("{what} did not settle").into())
}

/// 1,000 concurrent streams opened and closed leave the task count, topics, open-stream
/// gauge and memory where they started.
async fn streams_leave_nothing_behind(server: &Server) -> Result<(), Error> {
    const N: usize = 1000;
    let open = || {
        server
            .metrics
            .open_streams
            .get_or_create(&destination::metrics::MethodLabels {
                method: destination::metrics::Method::Get,
            })
            .get()
    };
    let index = server.discovery.index().clone();
    settle("earlier streams", || open() == 0 && index.topics() == 0).await?;
    let (tasks0, rss0) = (tasks(), rss_kib());

    let (tasks1, rss1) = open_and_close(server.addr, N, 10).await?;
    settle("tasks after round 1", || {
        tasks() <= tasks0 && open() == 0 && index.topics() == 0
    })
    .await?;
    let (tasks2, rss2) = (tasks(), rss_kib());

    let (tasks3, rss3) = open_and_close(server.addr, N, 10).await?;
    settle("tasks after round 2", || {
        tasks() <= tasks0 && open() == 0 && index.topics() == 0
    })
    .await?;
    let (tasks4, rss4) = (tasks(), rss_kib());

    println!(
        "{N} streams: tasks start {tasks0}, open {tasks1}, closed {tasks2}, open again {tasks3}, closed {tasks4}"
    );
    println!(
        "{N} streams: VmRSS KiB start {rss0}, open {rss1}, closed {rss2}, open again {rss3}, closed {rss4} (round-2 growth {} KiB)",
        rss4 as i64 - rss2 as i64
    );
    assert!(tasks4 <= tasks0, "tasks leaked: {tasks0} -> {tasks4}");
    // The allocator keeps what the first round took; a leak would grow it every round.
    assert!(
        rss4 <= rss2 + 16 * 1024,
        "memory grew {} KiB over a second round of {N} streams",
        rss4 as i64 - rss2 as i64
    );
    Ok(())
}
