//! The service mirror across two real clusters: west runs the controller (in-process), east
//! exports Services. The east gateway is stood in by a TLS 1.3 server on east's host address
//! (198.18.x.1, a local address of this machine once a pod exists) that answers 200 on the
//! probe path with a certificate for the gateway identity.
//!
//! Run: `cargo test -p strait-e2e --test mirror -- --nocapture --test-threads=1` (as root).

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use strait_core::labels;
use strait_k8s_api::{Link, ServiceExport};
use strait_localcluster::{Cluster, PodSpec};

mod mirror_support;
use mirror_support::*;

// ---------------------------------------------------------------- helpers

/// A TCP relay to the remote API server that the test can cut: a network partition between
/// the controller and east, while the test still reaches east directly.
struct Relay {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

impl Relay {
    async fn start(upstream: SocketAddr) -> Res<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (up2, conns2) = (up.clone(), conns.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut down, _)) = listener.accept().await else {
                    continue;
                };
                if !up2.load(Ordering::SeqCst) {
                    continue;
                }
                let h = tokio::spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                if let Ok(mut c) = conns2.lock() {
                    c.retain(|h| !h.is_finished());
                    c.push(h);
                }
            }
        });
        Ok(Self {
            addr,
            up,
            conns,
            task,
        })
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        if let Ok(mut c) = self.conns.lock() {
            for h in c.drain(..) {
                h.abort();
            }
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// A kubeconfig for `cluster` whose server is `server` (the relay), as the credentials Secret.
fn kubeconfig_via(cluster: &Cluster, server: SocketAddr) -> Res<String> {
    let text = std::fs::read_to_string(cluster.kubeconfig_path())?;
    let url = cluster.server_url();
    Ok(text.replace(&url, &format!("https://{server}")))
}

fn upstream_of(cluster: &Cluster) -> Res<SocketAddr> {
    let url = cluster.server_url();
    let hostport = url.trim_start_matches("https://").trim_end_matches('/');
    Ok(hostport.parse()?)
}

struct Controller {
    task: tokio::task::JoinHandle<Result<(), strait_mirror::Error>>,
    metrics: Arc<strait_mirror::Metrics>,
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn start_controller(client: Client, anchors: &str) -> Controller {
    let mut config = strait_mirror::Config::new(LINK_NS, anchors.as_bytes().to_vec());
    config.admin_addr = "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!());
    config.holder_identity = "e2e".into();
    config.lease_duration = Duration::from_secs(3);
    // A remote without the ServiceExport API is asked again every second, not every minute.
    config.exports_recheck = Duration::from_secs(1);
    let metrics = Arc::new(strait_mirror::Metrics::new());
    let task = tokio::spawn(strait_mirror::run(client, config, metrics.clone()));
    Controller { task, metrics }
}

/// The sum of every sample of `metric` whose line contains all of `needles`.
fn metric_sum(text: &str, metric: &str, needles: &[&str]) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(metric) && needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

// ---------------------------------------------------------------- the lifecycle

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mirror_lifecycle() -> Res {
    init("info,kube=warn,strait_mirror=debug");
    let (west, east) = clusters(&["shop"], &["shop", "billing"]).await?;
    let (w, e) = (west.client(), east.client());
    // A pod in east gives the root namespace east's host address, where the gateway listens.
    let web_pod = east
        .pod(PodSpec::new("shop", "web").label("app", "web"))
        .await?;
    let gw_ip = IpAddr::V4(east.host_addr());
    let pki = pki()?;
    let gw = gateway(gw_ip, &pki.good).await?;
    let relay = Relay::start(upstream_of(&east)?).await?;

    // East: exported web (with a pod), exported orders in a namespace west lacks, an exported
    // api whose mirror name is taken in west by someone else's Service, one not exported.
    let esvc = |ns: &str| Api::<Service>::namespaced(e.clone(), ns);
    let pp = PostParams::default();
    esvc("shop")
        .create(
            &pp,
            &service(
                "shop",
                "web",
                80,
                &[EXPORTED, ("app", "web"), ("secret.example.com/team", "x")],
                Some("web"),
            )?,
        )
        .await?;
    esvc("billing")
        .create(&pp, &service("billing", "orders", 81, &[EXPORTED], None)?)
        .await?;
    esvc("shop")
        .create(&pp, &service("shop", "api", 82, &[EXPORTED], None)?)
        .await?;
    esvc("shop")
        .create(&pp, &service("shop", "private", 83, &[], None)?)
        .await?;
    let foreign = Api::<Service>::namespaced(w.clone(), "shop")
        .create(
            &pp,
            &service("shop", "api-east", 9, &[("owner", "someone-else")], None)?,
        )
        .await?;
    // And pay, whose mirror's EndpointSlice name is taken by someone else's slice (no Service):
    // invisible to a controller that watches only its own labels, so it must ask first.
    esvc("shop")
        .create(&pp, &service("shop", "pay", 88, &[EXPORTED], None)?)
        .await?;
    let foreign_slice: EndpointSlice = serde_json::from_value(serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "pay-east", "namespace": "shop",
            "labels": {"kubernetes.io/service-name": "pay-east", "owner": "someone-else"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["198.18.0.9"]}],
        "ports": [{"name": "http", "port": 9, "protocol": "TCP"}],
    }))?;
    let foreign_slice = Api::<EndpointSlice>::namespaced(w.clone(), "shop")
        .create(&pp, &foreign_slice)
        .await?;

    put_secret(&w, "east-credentials", &kubeconfig_via(&east, relay.addr)?).await?;
    let links: Api<Link> = Api::namespaced(w.clone(), LINK_NS);
    links
        .create(
            &pp,
            &link("east", "east-credentials", gw_ip, gw.addr.port(), GW_ID)?,
        )
        .await?;
    let mut ctl = start_controller(w.clone(), &pki.anchor_pem);

    // Export → mirror with the right ports, labels and annotations; exclusions honoured.
    let m = wait_for("web-east", T, || get_svc(&w, "shop", "web-east")).await?;
    let l = m.metadata.labels.clone().unwrap_or_default();
    let a = m.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        l.get(labels::MIRRORED_SERVICE).map(String::as_str),
        Some("true")
    );
    assert_eq!(
        l.get(labels::CLUSTER_NAME).map(String::as_str),
        Some("east")
    );
    assert_eq!(l.get("app").map(String::as_str), Some("web"));
    assert!(
        !l.contains_key(labels::EXPORTED),
        "mirror.strait.dev/* is not copied"
    );
    assert!(
        !l.contains_key("secret.example.com/team"),
        "excluded label prefix"
    );
    assert_eq!(a.get("keep-me").map(String::as_str), Some("yes"));
    assert!(!a.contains_key("drop-me"), "excluded annotation");
    assert!(
        !a.contains_key("service.kubernetes.io/topology-mode"),
        "topology hints dropped"
    );
    assert_eq!(
        a.get(labels::REMOTE_SVC_FQ_NAME).map(String::as_str),
        Some("web.shop.svc.cluster.local")
    );
    assert_eq!(
        a.get(labels::REMOTE_GATEWAY_IDENTITY).map(String::as_str),
        Some(GW_ID)
    );
    assert!(a.contains_key(labels::REMOTE_RESOURCE_VERSION));
    let spec = m.spec.clone().unwrap_or_default();
    assert!(spec.selector.is_none());
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(
        spec.ports
            .unwrap_or_default()
            .iter()
            .map(|p| p.port)
            .collect::<Vec<_>>(),
        vec![80]
    );
    let es = wait_for("web-east slice ready", T, || async {
        get_slice(&w, "shop", "web-east")
            .await
            .filter(|s| slice_ready(s) == Some(true))
    })
    .await?;
    assert_eq!(es.endpoints[0].addresses, vec![gw_ip.to_string()]);
    assert_eq!(es.ports.as_ref().and_then(|p| p[0].port), Some(4143));
    assert!(
        get_svc(&w, "shop", "private-east").await.is_none(),
        "not exported, not mirrored"
    );

    // Missing namespace and names taken by someone else: in status, not mirrored.
    let st = wait_for("status with MissingNamespace and Error", T, || async {
        status(&w, "east").await.filter(|s| {
            s.services.missing_namespace == 1
                && s.services.error == 2
                && s.services.mirrored == 1
                && s.gateway_alive.is_some()
        })
    })
    .await?;
    assert!(
        st.not_mirrored
            .iter()
            .any(|n| n.name == "orders" && n.reason.as_str() == "MissingNamespace")
    );
    for name in ["api", "pay"] {
        assert!(
            st.not_mirrored.iter().any(|n| n.name == name
                && n.reason.as_str() == "Error"
                && n.message.starts_with("conflict:")),
            "{name} reported as a conflict: {:?}",
            st.not_mirrored
        );
    }
    // Neither half of pay's mirror was written: no Service to put behind someone's slice.
    assert!(get_svc(&w, "shop", "pay-east").await.is_none());
    // A conflict is counted once, however many passes see it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let conflicts: u64 = ctl
        .metrics
        .encode()
        .lines()
        .filter(|l| l.contains("reconcile_errors") && l.contains("reason=\"conflict\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(conflicts, 2, "{}", ctl.metrics.encode());
    assert_eq!(st.gateway_alive, Some(true));
    assert!(st.gateway_latency_ms.is_some());
    west.ensure_namespace("billing").await?;
    wait_for("orders-east after its namespace appears", T, || {
        get_svc(&w, "billing", "orders-east")
    })
    .await?;

    // Port change propagates.
    esvc("shop").patch("web", &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"ports": [{"name": "http", "port": 8080, "targetPort": 8080}]}}))).await?;
    wait_for("web-east port 8080", T, || async {
        get_svc(&w, "shop", "web-east").await.filter(|s| {
            s.spec
                .as_ref()
                .and_then(|s| s.ports.as_ref())
                .is_some_and(|p| p.len() == 1 && p[0].port == 8080)
        })
    })
    .await?;

    // Remote readiness: no ready endpoint in east → mirror endpoints not ready, and back.
    web_pod.set_ready(false).await?;
    wait_for("web-east not ready (remote pod)", T, || async {
        get_slice(&w, "shop", "web-east")
            .await
            .filter(|s| slice_ready(s) == Some(false))
    })
    .await?;
    web_pod.set_ready(true).await?;
    wait_for("web-east ready again", T, || async {
        get_slice(&w, "shop", "web-east")
            .await
            .filter(|s| slice_ready(s) == Some(true))
    })
    .await?;

    // Gateway down → not ready within period × threshold + period (+ margin); back when it returns.
    gw.up.store(false, Ordering::SeqCst);
    let down_at = Instant::now();
    wait_for("endpoints not ready with the gateway down", T, || async {
        get_slice(&w, "shop", "web-east")
            .await
            .filter(|s| slice_ready(s) == Some(false))
    })
    .await?;
    println!(
        "gateway down → endpoints not ready after {:?} (period 1s, threshold 2)",
        down_at.elapsed()
    );
    wait_for("status gatewayAlive=false", T, || async {
        status(&w, "east")
            .await
            .filter(|s| s.gateway_alive == Some(false))
    })
    .await?;
    gw.up.store(true, Ordering::SeqCst);
    wait_for("endpoints ready with the gateway back", T, || async {
        get_slice(&w, "shop", "web-east")
            .await
            .filter(|s| slice_ready(s) == Some(true))
    })
    .await?;

    // A gateway presenting a certificate for another identity is not alive.
    let impostor = gateway(gw_ip, &pki.wrong).await?;
    links
        .patch(
            "east",
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"spec": {"probeSpec": {"port": impostor.addr.port()}}}),
            ),
        )
        .await?;
    wait_for("wrong identity → not alive", T, || async {
        status(&w, "east")
            .await
            .filter(|s| s.gateway_alive == Some(false))
    })
    .await?;
    wait_for("wrong identity → endpoints not ready", T, || async {
        get_slice(&w, "shop", "web-east")
            .await
            .filter(|s| slice_ready(s) == Some(false))
    })
    .await?;
    links
        .patch(
            "east",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"probeSpec": {"port": gw.addr.port()}}})),
        )
        .await?;
    wait_for("right identity → ready", T, || async {
        get_slice(&w, "shop", "web-east")
            .await
            .filter(|s| slice_ready(s) == Some(true))
    })
    .await?;
    drop(impostor);

    // Unexport → mirror (and its slice) gone.
    set_labels(
        &e,
        "shop",
        "web",
        serde_json::json!({labels::EXPORTED: null}),
    )
    .await?;
    wait_for("web-east removed", T, || async {
        get_svc(&w, "shop", "web-east")
            .await
            .is_none()
            .then_some(())
    })
    .await?;
    wait_for("web-east slice removed", T, || async {
        get_slice(&w, "shop", "web-east")
            .await
            .is_none()
            .then_some(())
    })
    .await?;
    set_labels(
        &e,
        "shop",
        "web",
        serde_json::json!({labels::EXPORTED: "true"}),
    )
    .await?;
    wait_for("web-east back", T, || get_svc(&w, "shop", "web-east")).await?;

    // Remote API unreachable: export one, delete another meanwhile; mirrors kept, then converge.
    relay.cut();
    wait_for("status remoteApi unreachable", T, || async {
        status(&w, "east")
            .await
            .filter(|s| s.remote_api.as_ref().is_some_and(|r| !r.reachable))
    })
    .await?;
    esvc("shop")
        .create(&pp, &service("shop", "cart", 84, &[EXPORTED], None)?)
        .await?;
    esvc("billing")
        .delete("orders", &DeleteParams::default())
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        get_svc(&w, "billing", "orders-east").await.is_some(),
        "mirrors are kept while the remote API is down"
    );
    relay.restore();
    wait_for(
        "cart-east after the remote API returns",
        Duration::from_secs(60),
        || get_svc(&w, "shop", "cart-east"),
    )
    .await?;
    wait_for(
        "orders-east removed after the remote API returns",
        Duration::from_secs(60),
        || async {
            get_svc(&w, "billing", "orders-east")
                .await
                .is_none()
                .then_some(())
        },
    )
    .await?;
    wait_for("status remoteApi reachable", T, || async {
        status(&w, "east")
            .await
            .filter(|s| s.remote_api.as_ref().is_some_and(|r| r.reachable))
    })
    .await?;
    let restarts = ctl.metrics.encode();
    assert!(
        restarts.contains("strait_mirror_remote_watch_restarts_total"),
        "{restarts}"
    );

    // Credentials rotate: the Secret now points at another route to east; the old one dies.
    let relay2 = Relay::start(upstream_of(&east)?).await?;
    put_secret(&w, "east-credentials", &kubeconfig_via(&east, relay2.addr)?).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    relay.cut();
    esvc("shop")
        .create(&pp, &service("shop", "rotated", 87, &[EXPORTED], None)?)
        .await?;
    wait_for("rotated-east through the new credentials", T, || {
        get_svc(&w, "shop", "rotated-east")
    })
    .await?;
    esvc("shop")
        .delete("rotated", &DeleteParams::default())
        .await?;
    wait_for("rotated-east removed", T, || async {
        get_svc(&w, "shop", "rotated-east")
            .await
            .is_none()
            .then_some(())
    })
    .await?;
    put_secret(
        &w,
        "east-credentials",
        &std::fs::read_to_string(east.kubeconfig_path())?,
    )
    .await?;
    drop(relay2);

    // The real thing: east's API server stops and starts again.
    let mut east = east;
    east.stop_api_server();
    wait_for("status unreachable (API server stopped)", T, || async {
        status(&w, "east")
            .await
            .filter(|s| s.remote_api.as_ref().is_some_and(|r| !r.reachable))
    })
    .await?;
    east.start_api_server().await?;
    let e = east.client();
    let esvc = |ns: &str| Api::<Service>::namespaced(e.clone(), ns);
    esvc("shop")
        .create(
            &pp,
            &service("shop", "after-restart", 85, &[EXPORTED], None)?,
        )
        .await?;
    wait_for("after-restart-east", Duration::from_secs(60), || {
        get_svc(&w, "shop", "after-restart-east")
    })
    .await?;

    // Controller restarted mid-run, with changes while it was away: converge, no orphan, no duplicate.
    drop(ctl);
    tokio::time::sleep(Duration::from_millis(500)).await;
    esvc("shop")
        .delete("cart", &DeleteParams::default())
        .await?;
    esvc("shop")
        .create(&pp, &service("shop", "late", 86, &[EXPORTED], None)?)
        .await?;
    ctl = start_controller(w.clone(), &pki.anchor_pem);
    let want: BTreeSet<String> = [
        "billing/orders-east",
        "shop/after-restart-east",
        "shop/late-east",
        "shop/web-east",
    ]
    .into_iter()
    .filter(|k| *k != "billing/orders-east")
    .map(String::from)
    .collect();
    wait_for(
        "exactly the expected mirrors after a controller restart",
        T,
        || async {
            let (svcs, slices) = our_mirrors(&w).await.ok()?;
            (svcs == want && slices == want).then_some(())
        },
    )
    .await?;

    // Someone else's Service with a mirror-like name was never touched.
    let f = get_svc(&w, "shop", "api-east")
        .await
        .ok_or("foreign api-east vanished")?;
    assert_eq!(
        f.metadata.resource_version, foreign.metadata.resource_version,
        "foreign Service untouched"
    );
    let fs = get_slice(&w, "shop", "pay-east")
        .await
        .ok_or("foreign pay-east slice vanished")?;
    assert_eq!(
        fs.metadata.resource_version, foreign_slice.metadata.resource_version,
        "foreign EndpointSlice untouched"
    );
    assert_eq!(fs.endpoints, foreign_slice.endpoints);
    assert_eq!(fs.metadata.labels, foreign_slice.metadata.labels);

    // Deleting the Link removes its mirrors (finalizer) and nothing else.
    links.delete("east", &DeleteParams::default()).await?;
    wait_for("Link gone", T, || async {
        links
            .get_opt("east")
            .await
            .ok()
            .flatten()
            .is_none()
            .then_some(())
    })
    .await?;
    let (svcs, slices) = our_mirrors(&w).await?;
    assert!(
        svcs.is_empty() && slices.is_empty(),
        "mirrors left: {svcs:?} {slices:?}"
    );
    let f = get_svc(&w, "shop", "api-east")
        .await
        .ok_or("foreign api-east vanished")?;
    assert_eq!(
        f.metadata.resource_version,
        foreign.metadata.resource_version
    );
    let fs = get_slice(&w, "shop", "pay-east")
        .await
        .ok_or("foreign pay-east slice vanished")?;
    assert_eq!(
        fs.metadata.resource_version,
        foreign_slice.metadata.resource_version
    );
    println!("{}", ctl.metrics.encode());
    drop(ctl);
    drop(web_pod);
    Ok(())
}

// ---------------------------------------------------------------- scale

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mirror_at_scale() -> Res {
    init("warn");
    let (west, east) = clusters(&["scale"], &["scale"]).await?;
    let (w, e) = (west.client(), east.client());
    let pki = pki()?;
    let gw = gateway("127.0.0.1".parse()?, &pki.good).await?;
    let _ = gw.addr;
    put_secret(
        &w,
        "east-credentials",
        &std::fs::read_to_string(east.kubeconfig_path())?,
    )
    .await?;
    // The gateway address only lands in EndpointSlices; the probe goes to loopback via the
    // address below, which must be a valid endpoint IP, so use a benchmark-range address with
    // no listener: the gateway is reported down, which does not matter for counting mirrors.
    let links: Api<Link> = Api::namespaced(w.clone(), LINK_NS);
    links
        .create(
            &PostParams::default(),
            &link(
                "east",
                "east-credentials",
                IpAddr::V4(east.host_addr()),
                1,
                GW_ID,
            )?,
        )
        .await?;
    let ctl = start_controller(w.clone(), &pki.anchor_pem);

    let create = |from: usize, to: usize| {
        let e = e.clone();
        async move {
            let api = Api::<Service>::namespaced(e, "scale");
            let results: Vec<_> = futures::stream::iter(from..to)
                .map(|i| {
                    let api = api.clone();
                    async move {
                        api.create(
                            &PostParams::default(),
                            &service("scale", &format!("s{i}"), 80, &[EXPORTED], None)?,
                        )
                        .await
                        .map(|_| ())
                        .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e.into() })
                    }
                })
                .buffer_unordered(32)
                .collect()
                .await;
            results.into_iter().collect::<Res<Vec<()>>>()
        }
    };
    let link_size = || async {
        let l = links.get("east").await.ok()?;
        Some(serde_json::to_vec(&l).ok()?.len())
    };
    create(0, 10).await?;
    wait_for("10 mirrored", T, || async {
        status(&w, "east")
            .await
            .filter(|s| s.services.mirrored == 10)
            .map(|_| ())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let size10 = link_size().await.ok_or("Link")?;
    let writes10 = ctl.metrics.writes();

    let start = Instant::now();
    create(10, 1000).await?;
    let created = start.elapsed();
    wait_for("1000 mirrored", Duration::from_secs(300), || async {
        status(&w, "east")
            .await
            .filter(|s| s.services.mirrored == 1000)
            .map(|_| ())
    })
    .await?;
    let converged = start.elapsed();
    let (svcs, slices) = our_mirrors(&w).await?;
    assert_eq!((svcs.len(), slices.len()), (1000, 1000));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let size1000 = link_size().await.ok_or("Link")?;
    let writes = ctl.metrics.writes() - writes10;
    println!(
        "1,000 exported services: created in east in {created:?}, all mirrored in west after {converged:?}; \
         {writes} local writes for 990 new mirrors ({:.2} per mirror); Link object {size10} B with 10 mirrored, {size1000} B with 1,000",
        writes as f64 / 990.0
    );
    assert!(
        size1000 <= size10 + 300,
        "Link grew from {size10} to {size1000} bytes"
    );
    let _ = Namespace::default();
    Ok(())
}

// ---------------------------------------------------------------- gateway hostnames

/// A DNS responder on loopback: answers A queries for `name` with the current address, TTL 1.
async fn dns_responder(
    name: &'static str,
    addr: Arc<Mutex<std::net::Ipv4Addr>>,
) -> Res<(SocketAddr, tokio::task::JoinHandle<()>)> {
    use hickory_resolver::proto::op::{Message, OpCode};
    use hickory_resolver::proto::rr::{Name, RData, Record, RecordType, rdata::A};
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let local = sock.local_addr()?;
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 1500];
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut rsp = Message::response(q.metadata.id, OpCode::Query);
            rsp.metadata.recursion_desired = q.metadata.recursion_desired;
            rsp.metadata.recursion_available = true;
            rsp.metadata.authoritative = true;
            for query in &q.queries {
                rsp.add_query(query.clone());
                if query.query_type() == RecordType::A
                    && query.name().to_ascii().trim_end_matches('.') == name
                {
                    let ip = addr
                        .lock()
                        .map(|a| *a)
                        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
                    if let Ok(n) = Name::from_ascii(format!("{name}.")) {
                        rsp.add_answer(Record::from_rdata(n, 1, RData::A(A(ip))));
                    }
                }
            }
            if let Ok(bytes) = rsp.to_vec() {
                let _ = sock.send_to(&bytes, peer).await;
            }
        }
    });
    Ok((local, task))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mirror_gateway_hostname() -> Res {
    init("info,kube=warn");
    let (west, east) = clusters(&["shop"], &["shop"]).await?;
    let (w, e) = (west.client(), east.client());
    let pki = pki()?;
    // Addresses in the benchmark range with no listener: nothing leaves the machine.
    let first: std::net::Ipv4Addr = "198.18.200.10".parse()?;
    let second: std::net::Ipv4Addr = "198.18.200.11".parse()?;
    let current = Arc::new(Mutex::new(first));
    let (dns, _dns_task) = dns_responder("gw.east.test", current.clone()).await?;
    put_secret(
        &w,
        "east-credentials",
        &std::fs::read_to_string(east.kubeconfig_path())?,
    )
    .await?;
    let mut l = link("east", "east-credentials", IpAddr::V4(first), 1, GW_ID)?;
    l.spec.gateway_address = "gw.east.test".into();
    Api::<Link>::namespaced(w.clone(), LINK_NS)
        .create(&PostParams::default(), &l)
        .await?;
    Api::<Service>::namespaced(e.clone(), "shop")
        .create(
            &PostParams::default(),
            &service("shop", "web", 80, &[EXPORTED], None)?,
        )
        .await?;

    let mut config = strait_mirror::Config::new(LINK_NS, pki.anchor_pem.as_bytes().to_vec());
    config.admin_addr = "127.0.0.1:0".parse()?;
    config.holder_identity = "e2e-dns".into();
    config.nameserver = Some(dns);
    let metrics = Arc::new(strait_mirror::Metrics::new());
    let _ctl = Controller {
        task: tokio::spawn(strait_mirror::run(w.clone(), config, metrics.clone())),
        metrics,
    };

    // Schema validation: a malformed Link is refused by the API server.
    let links: Api<Link> = Api::namespaced(w.clone(), LINK_NS);
    let mut bad = serde_json::to_value(link("bad-schema", "x", IpAddr::V4(first), 1, GW_ID)?)?;
    bad["spec"]["probeSpec"]["period"] = "three seconds".into();
    let refused = Api::<kube::api::DynamicObject>::namespaced_with(
        w.clone(),
        LINK_NS,
        &kube::api::ApiResource::erase::<Link>(&()),
    )
    .create(&PostParams::default(), &serde_json::from_value(bad)?)
    .await;
    assert!(
        matches!(refused, Err(kube::Error::Api(ref s)) if s.code == 422),
        "{refused:?}"
    );
    // Controller-side validation: reported in status, nothing crashes.
    let mut bad = link("bad-addr", "x", IpAddr::V4(first), 1, GW_ID)?;
    bad.spec.target_cluster_name = "nowhere".into();
    bad.spec.gateway_address = "not a host!".into();
    links.create(&PostParams::default(), &bad).await?;
    wait_for("bad gatewayAddress reported in status", T, || async {
        links
            .get_opt("bad-addr")
            .await
            .ok()
            .flatten()?
            .status?
            .link_error
            .filter(|e| e.contains("gatewayAddress"))
    })
    .await?;

    let addrs = |want: std::net::Ipv4Addr| {
        let w = w.clone();
        move || {
            let w = w.clone();
            async move {
                get_slice(&w, "shop", "web-east").await.filter(|s| {
                    s.endpoints
                        .iter()
                        .flat_map(|e| e.addresses.iter())
                        .eq([want.to_string()].iter())
                })
            }
        }
    };
    wait_for("slice at the resolved address", T, addrs(first)).await?;
    if let Ok(mut c) = current.lock() {
        *c = second;
    }
    wait_for(
        "slice follows the new address after the TTL",
        T,
        addrs(second),
    )
    .await?;
    wait_for("status shows the new address", T, || async {
        status(&w, "east")
            .await
            .filter(|s| s.gateway_addresses == vec![second.to_string()])
    })
    .await?;
    Ok(())
}

// ---------------------------------------------------------------- ServiceExport (MCS API)

/// Installs the Multi-Cluster Services `ServiceExport` CRD (the MCS project's, not Strait's).
async fn install_service_export_crd(client: &Client) -> Res {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let yaml = include_str!("../crds/serviceexport.yaml");
    let crd: CustomResourceDefinition = serde_saphyr::from_str(yaml)?;
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &crd)
        .await?;
    let exports: Api<ServiceExport> = Api::all(client.clone());
    wait_for("the ServiceExport CRD to be served", T, || {
        let exports = exports.clone();
        async move { exports.list(&ListParams::default()).await.ok().map(|_| ()) }
    })
    .await
}

fn service_export(ns: &str, name: &str) -> Res<ServiceExport> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceExport",
        "metadata": {"name": name, "namespace": ns},
    }))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mirror_service_export() -> Res {
    init("info,kube=warn,strait_mirror=debug");
    let (west, east) = clusters(&["shop"], &["shop"]).await?;
    let (w, e) = (west.client(), east.client());
    let web_pod = east
        .pod(PodSpec::new("shop", "web").label("app", "web"))
        .await?;
    let gw_ip = IpAddr::V4(east.host_addr());
    let pki = pki()?;
    let gw = gateway(gw_ip, &pki.good).await?;
    put_secret(
        &w,
        "east-credentials",
        &std::fs::read_to_string(east.kubeconfig_path())?,
    )
    .await?;
    let links: Api<Link> = Api::namespaced(w.clone(), LINK_NS);
    let pp = PostParams::default();
    links
        .create(
            &pp,
            &link("east", "east-credentials", gw_ip, gw.addr.port(), GW_ID)?,
        )
        .await?;
    let esvc = Api::<Service>::namespaced(e.clone(), "shop");
    esvc.create(&pp, &service("shop", "web", 80, &[EXPORTED], Some("web"))?)
        .await?;
    esvc.create(&pp, &service("shop", "api", 81, &[], Some("web"))?)
        .await?;
    let ctl = start_controller(w.clone(), &pki.anchor_pem);

    // East has no ServiceExport API: label exports still work, and the 404 is no error.
    wait_for("web-east (labelled) without the MCS API", T, || {
        get_svc(&w, "shop", "web-east")
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let m = ctl.metrics.encode();
    assert_eq!(
        metric_sum(&m, "strait_mirror_remote_watch_restarts", &[]),
        0,
        "a missing ServiceExport CRD is not a watch failure: {m}"
    );
    assert!(get_svc(&w, "shop", "api-east").await.is_none());
    let st = status(&w, "east").await.ok_or("status")?;
    assert!(
        st.remote_api.as_ref().is_some_and(|r| r.reachable),
        "{st:?}"
    );

    // The CRD is installed later: found without a restart; an export mirrors `api`.
    install_service_export_crd(&e).await?;
    let exports = Api::<ServiceExport>::namespaced(e.clone(), "shop");
    exports.create(&pp, &service_export("shop", "api")?).await?;
    let m = wait_for("api-east (ServiceExport)", T, || {
        get_svc(&w, "shop", "api-east")
    })
    .await?;
    let a = m.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        a.get(labels::REMOTE_GATEWAY_IDENTITY).map(String::as_str),
        Some(GW_ID)
    );
    assert_eq!(
        a.get(labels::REMOTE_SVC_FQ_NAME).map(String::as_str),
        Some("api.shop.svc.cluster.local")
    );
    let l = m.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        l.get(labels::CLUSTER_NAME).map(String::as_str),
        Some("east")
    );
    // The same gateway endpoints as a labelled export, ready like it.
    let es = wait_for("api-east slice ready", T, || async {
        get_slice(&w, "shop", "api-east")
            .await
            .filter(|s| slice_ready(s) == Some(true))
    })
    .await?;
    assert_eq!(es.endpoints[0].addresses, vec![gw_ip.to_string()]);
    assert_eq!(es.ports.as_ref().and_then(|p| p[0].port), Some(4143));

    // An export before its Service; and a Service whose export comes well after it (its
    // events were already dropped, so the controller must look again).
    exports
        .create(&pp, &service_export("shop", "late")?)
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    esvc.create(&pp, &service("shop", "late", 82, &[], None)?)
        .await?;
    esvc.create(&pp, &service("shop", "early", 83, &[], None)?)
        .await?;
    wait_for("late-east (export first)", T, || {
        get_svc(&w, "shop", "late-east")
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(get_svc(&w, "shop", "early-east").await.is_none());
    exports
        .create(&pp, &service_export("shop", "early")?)
        .await?;
    wait_for("early-east (export after the Service)", T, || {
        get_svc(&w, "shop", "early-east")
    })
    .await?;
    // Both ways at once: still one mirror.
    exports.create(&pp, &service_export("shop", "web")?).await?;
    let st = wait_for("status: 4 mirrored", T, || async {
        status(&w, "east")
            .await
            .filter(|s| s.services.mirrored == 4)
    })
    .await?;
    assert!(st.not_mirrored.is_empty(), "{st:?}");

    // Unexport: the mirror goes; the labelled one stays when its export goes.
    exports.delete("api", &DeleteParams::default()).await?;
    wait_for("api-east removed", T, || async {
        get_svc(&w, "shop", "api-east")
            .await
            .is_none()
            .then_some(())
    })
    .await?;
    exports.delete("web", &DeleteParams::default()).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(get_svc(&w, "shop", "web-east").await.is_some());
    assert!(get_svc(&w, "shop", "late-east").await.is_some());

    // The CRD goes away: its exports with it, and so do their mirrors.
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    Api::<CustomResourceDefinition>::all(e.clone())
        .delete(
            "serviceexports.multicluster.x-k8s.io",
            &DeleteParams::default(),
        )
        .await?;
    wait_for(
        "export-only mirrors removed with the CRD",
        Duration::from_secs(60),
        || async {
            let (svcs, slices) = our_mirrors(&w).await.ok()?;
            let want = BTreeSet::from(["shop/web-east".to_string()]);
            (svcs == want && slices == want).then_some(())
        },
    )
    .await?;
    // No errors but the first probe's, sent before the gateway address was resolved.
    let m = ctl.metrics.encode();
    assert_eq!(
        metric_sum(&m, "strait_mirror_reconcile_errors", &[])
            - metric_sum(&m, "strait_mirror_reconcile_errors", &["reason=\"probe\""]),
        0,
        "{m}"
    );
    drop(ctl);
    drop(gw);
    drop(web_pod);
    Ok(())
}

// ---------------------------------------------------------------- remote discovery

/// The slices of mirror `ns/name` in west, by name.
async fn mirror_slices(
    client: &Client,
    ns: &str,
    name: &str,
) -> Option<std::collections::BTreeMap<String, EndpointSlice>> {
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={name}"));
    let list = Api::<EndpointSlice>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .ok()?;
    Some(
        list.items
            .into_iter()
            .map(|s| (s.metadata.name.clone().unwrap_or_default(), s))
            .collect(),
    )
}

/// (identity annotation, ready addresses, ports) of each slice, sorted.
fn slice_summary(
    slices: &std::collections::BTreeMap<String, EndpointSlice>,
) -> Vec<(Option<String>, Vec<String>, Vec<i32>)> {
    let mut out: Vec<_> = slices
        .values()
        .map(|s| {
            let id = s
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(labels::REMOTE_IDENTITY).cloned());
            let addrs = s
                .endpoints
                .iter()
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                .flat_map(|e| e.addresses.clone())
                .collect();
            let ports = s.ports.iter().flatten().filter_map(|p| p.port).collect();
            (id, addrs, ports)
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mirror_remote_discovery() -> Res {
    init("info,kube=warn,strait_mirror=debug");
    let (west, east) = clusters(&["shop"], &["shop"]).await?;
    let (w, e) = (west.client(), east.client());
    // Two pods behind one Service: one meshed (service account `web`), one without a proxy.
    let meshed = east
        .pod(
            PodSpec::new("shop", "web-meshed")
                .label("app", "web")
                .service_account("web")
                .annotation(labels::PROXY_VERSION, "test"),
        )
        .await?;
    let plain = east
        .pod(PodSpec::new("shop", "web-plain").label("app", "web"))
        .await?;
    let gw_ip = IpAddr::V4(east.host_addr());
    let pki = pki()?;
    let gw = gateway(gw_ip, &pki.good).await?;
    put_secret(
        &w,
        "east-credentials",
        &std::fs::read_to_string(east.kubeconfig_path())?,
    )
    .await?;
    let mut l = link("east", "east-credentials", gw_ip, gw.addr.port(), GW_ID)?;
    l.spec.remote_discovery_selector = Some(serde_json::from_value(serde_json::json!({
        "matchLabels": {labels::EXPORTED: labels::EXPORTED_REMOTE_DISCOVERY}
    }))?);
    let links: Api<Link> = Api::namespaced(w.clone(), LINK_NS);
    let pp = PostParams::default();
    links.create(&pp, &l).await?;
    // Exported through the gateway at first; `web` targets port 8080 of its pods.
    let mut web = service("shop", "web", 80, &[EXPORTED], Some("web"))?;
    if let Some(p) = web.spec.as_mut().and_then(|s| s.ports.as_mut()) {
        p[0].target_port =
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8080));
    }
    let esvc = Api::<Service>::namespaced(e.clone(), "shop");
    esvc.create(&pp, &web).await?;
    esvc.create(&pp, &service("shop", "api", 81, &[EXPORTED], None)?)
        .await?;
    let ctl = start_controller(w.clone(), &pki.anchor_pem);
    wait_for("web-east through the gateway", T, || async {
        get_slice(&w, "shop", "web-east")
            .await
            .filter(|s| slice_ready(s) == Some(true))
    })
    .await?;

    // Relabelled for remote discovery: the same mirror, now listing the pods themselves in
    // one slice per identity; the gateway slice goes.
    set_labels(
        &e,
        "shop",
        "web",
        serde_json::json!({labels::EXPORTED: labels::EXPORTED_REMOTE_DISCOVERY}),
    )
    .await?;
    let web_id = "web.shop.serviceaccount.identity.strait.cluster.local".to_string();
    let both = vec![
        (None, vec![plain.ip().to_string()], vec![8080]),
        (
            Some(web_id.clone()),
            vec![meshed.ip().to_string()],
            vec![8080],
        ),
    ];
    let slices = wait_for("web-east lists the remote pods", T, || async {
        mirror_slices(&w, "shop", "web-east")
            .await
            .filter(|s| slice_summary(s) == both)
    })
    .await?;
    assert!(
        !slices.contains_key("web-east"),
        "the gateway slice is gone: {:?}",
        slices.keys()
    );
    for (name, s) in &slices {
        assert!(name.starts_with("web-east-"), "{name}");
        let l = s.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            l.get(labels::MIRRORED_SERVICE).map(String::as_str),
            Some("true")
        );
        assert_eq!(
            l.get(labels::CLUSTER_NAME).map(String::as_str),
            Some("east")
        );
        let a = s.metadata.annotations.clone().unwrap_or_default();
        assert!(!a.contains_key(labels::REMOTE_GATEWAY_IDENTITY));
    }
    let m = get_svc(&w, "shop", "web-east").await.ok_or("web-east")?;
    let ml = m.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        ml.get(labels::REMOTE_DISCOVERY).map(String::as_str),
        Some("east")
    );
    let ma = m.metadata.annotations.clone().unwrap_or_default();
    assert!(!ma.contains_key(labels::REMOTE_GATEWAY_IDENTITY), "{ma:?}");
    assert_eq!(
        ma.get(labels::REMOTE_SVC_FQ_NAME).map(String::as_str),
        Some("web.shop.svc.cluster.local")
    );
    let spec = m.spec.clone().unwrap_or_default();
    assert_eq!(spec.ports.unwrap_or_default()[0].port, 80);

    // A pod that is not ready is not listed; its slice goes while it has no ready pod.
    meshed.set_ready(false).await?;
    let only_plain = vec![both[0].clone()];
    wait_for("the meshed pod's address removed", T, || async {
        mirror_slices(&w, "shop", "web-east")
            .await
            .filter(|s| slice_summary(s) == only_plain)
    })
    .await?;
    meshed.set_ready(true).await?;
    wait_for("the meshed pod listed again", T, || async {
        mirror_slices(&w, "shop", "web-east")
            .await
            .filter(|s| slice_summary(s) == both)
    })
    .await?;

    // The gateway's liveness is not theirs: down, the gateway mirror goes not ready and the
    // remote-discovery mirror keeps its endpoints.
    gw.up.store(false, Ordering::SeqCst);
    wait_for("api-east not ready with the gateway down", T, || async {
        get_slice(&w, "shop", "api-east")
            .await
            .filter(|s| slice_ready(s) == Some(false))
    })
    .await?;
    let s = mirror_slices(&w, "shop", "web-east")
        .await
        .ok_or("web-east slices")?;
    assert_eq!(slice_summary(&s), both);
    gw.up.store(true, Ordering::SeqCst);

    // A second remote-discovery Service in another namespace: its slices are watched too.
    east.ensure_namespace("billing").await?;
    west.ensure_namespace("billing").await?;
    let billing = east
        .pod(PodSpec::new("billing", "orders-0").label("app", "orders"))
        .await?;
    Api::<Service>::namespaced(e.clone(), "billing")
        .create(
            &pp,
            &service(
                "billing",
                "orders",
                82,
                &[(labels::EXPORTED, labels::EXPORTED_REMOTE_DISCOVERY)],
                Some("orders"),
            )?,
        )
        .await?;
    wait_for("orders-east lists its pod", T, || async {
        mirror_slices(&w, "billing", "orders-east")
            .await
            .filter(|s| slice_summary(s) == vec![(None, vec![billing.ip().to_string()], vec![82])])
    })
    .await?;
    let st = wait_for("status: 3 mirrored", T, || async {
        status(&w, "east")
            .await
            .filter(|s| s.services.mirrored == 3)
    })
    .await?;
    assert!(st.not_mirrored.is_empty(), "{st:?}");

    // Unexported: the mirror and every slice of it go; nothing else.
    set_labels(
        &e,
        "shop",
        "web",
        serde_json::json!({labels::EXPORTED: null}),
    )
    .await?;
    wait_for("web-east and its slices removed", T, || async {
        let (svcs, slices) = our_mirrors(&w).await.ok()?;
        let want = BTreeSet::from([
            "billing/orders-east".to_string(),
            "shop/api-east".to_string(),
        ]);
        (svcs == want && slices.iter().all(|s| !s.starts_with("shop/web-east"))).then_some(())
    })
    .await?;

    // A bad remoteDiscoverySelector is reported in the Link status.
    links
        .patch(
            "east",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"remoteDiscoverySelector": {
                "matchExpressions": [{"key": "a", "operator": "In"}]}}})),
        )
        .await?;
    wait_for("remoteDiscoverySelector error in status", T, || async {
        status(&w, "east")
            .await?
            .link_error
            .filter(|e| e.starts_with("remoteDiscoverySelector does not parse"))
    })
    .await?;

    // Federated Services are not made: a Link that asks is served, and told so in its status.
    links
        .patch(
            "east",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {
                "remoteDiscoverySelector": {"matchExpressions": null,
                    "matchLabels": {labels::EXPORTED: "remote-discovery"}},
                "federatedServiceSelector": {"matchLabels": {labels::FEDERATED: "member"}}}})),
        )
        .await?;
    let st = wait_for("the federated warning in status", T, || async {
        status(&w, "east")
            .await
            .filter(|s| s.link_error.is_none() && !s.warnings.is_empty())
    })
    .await?;
    assert_eq!(
        st.warnings,
        vec![strait_mirror::plan::FEDERATED_UNSUPPORTED.to_string()]
    );
    drop(ctl);
    drop(gw);
    drop((meshed, plain, billing));
    Ok(())
}
