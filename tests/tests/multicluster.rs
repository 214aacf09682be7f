//! The whole picture of the design, end to end, on two real clusters sharing one trust
//! anchor (each with its own issuer and in-process control plane):
//!
//! ```text
//!  west: client-1 (app + strait-proxy, iptables) ──► web-east (mirror, made by strait-mirror)
//!        ──mTLS──► east: strait-gateway pod :4143 ──mTLS──► web-1 (strait-proxy ─► app)
//! ```
//!
//! Proved, in order: the mirror `web-east` appears by itself; the client reaches east's web
//! pod through the gateway over HTTP/1, gRPC (HTTP/2) and raw TCP, with no hop bypassed (the
//! answers come from the east pod, the gateway's counters for the client's identity move, the
//! east proxy sees the gateway's identity as its client); a gateway killed and started again
//! at the same address is used again by the same client and proxy. Then remote discovery on
//! the flat network: a Service the Link selects for it is reached without the gateway, over
//! mTLS straight to the east pod's proxy (which sees the client's own identity), and a pod
//! without a proxy is reached in the clear.
//!
//! Run: `cargo test -p strait-e2e --test multicluster -- --nocapture` (as root).
#![allow(clippy::unwrap_used)]

use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::PostParams;
use std::time::Duration;
use strait_lab::{Binaries, Lab, metric_sum};
use strait_localcluster::{Cluster, ClusterConfig, PodSpec};

type Error = Box<dyn std::error::Error + Send + Sync>;

const NS: &str = "shop";
const WEB_FQ: &str = "web.shop.svc.cluster.local";

fn bins() -> Binaries {
    Binaries {
        proxy: env!("CARGO_BIN_EXE_e2e-proxy").into(),
        gateway: env!("CARGO_BIN_EXE_e2e-gateway").into(),
        tool: env!("CARGO_BIN_EXE_strait-sample").into(),
        tool_args: Vec::new(),
    }
}

use strait_e2e::tool::LoadReport as Load;

async fn load(
    lab: &Lab,
    pod: &strait_localcluster::Pod,
    addr: &str,
    n: usize,
    mode: &str,
) -> Result<Load, Error> {
    let (_, out, err) = lab
        .tool(pod, &["load", addr, &n.to_string(), "1", mode])
        .await?;
    serde_json::from_str(out.trim()).map_err(|e| format!("{mode} {addr}: {e}: {out} {err}").into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multicluster() -> Result<(), Error> {
    strait_localcluster::require_root()?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info,kube=warn")
        .with_test_writer()
        .try_init();
    let lab = Lab::new(bins())?;
    let (west, east) = tokio::try_join!(
        Cluster::start(ClusterConfig::new("west")),
        Cluster::start(ClusterConfig::new("east")),
    )?;
    let (west_cp, east_cp) = tokio::try_join!(lab.control_plane(&west), lab.control_plane(&east))?;

    // East: the exported web Service (HTTP/1, gRPC, raw TCP) and its meshed pod.
    east.ensure_namespace(NS).await?;
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": NS, "labels": {strait_core::labels::EXPORTED: "true"}},
        "spec": {"selector": {"app": "web"}, "ports": [
            {"name": "http", "port": 80, "targetPort": 8080},
            {"name": "grpc", "port": 9090, "targetPort": 9090, "appProtocol": "kubernetes.io/h2c"},
            {"name": "tcp", "port": 7000, "targetPort": 7000},
        ]},
    }))?;
    Api::<Service>::namespaced(east.client(), NS)
        .create(&PostParams::default(), &svc)
        .await?;
    let web = lab
        .meshed_pod(
            &east,
            &east_cp,
            PodSpec::new(NS, "web-1")
                .label("app", "web")
                .service_account("web")
                .port("http", 8080)
                .port("grpc", 9090)
                .port("tcp", 7000),
        )
        .await?;
    web.pod
        .spawn("http", lab.tool_command(&web.pod, &["serve", "8080"]))?;
    web.pod
        .spawn("grpc", lab.tool_command(&web.pod, &["serve", "9090"]))?;
    web.pod
        .spawn("tcp", lab.tool_command(&web.pod, &["serve-tcp", "7000"]))?;
    let gateway = lab.gateway(&east, &east_cp).await?;

    // West: the Link, then the mirror appears by itself.
    west.ensure_namespace(NS).await?;
    let link = lab.link(&west, &east, &gateway).await?;
    let mirror = link.wait_mirror(NS, "web").await?;
    println!(
        "mirror {} at {} → {:?}",
        mirror.name, mirror.cluster_ip, mirror.endpoints
    );
    assert_eq!(mirror.endpoints, vec![gateway.ip().to_string()]);
    let client = lab
        .meshed_pod(
            &west,
            &west_cp,
            PodSpec::new(NS, "client-1")
                .label("app", "client")
                .service_account("client"),
        )
        .await?;
    let client_id = client.identity.to_string();
    let gw_id = gateway.identity.to_string();
    let http_addr = format!("{}:80", mirror.cluster_ip);
    let grpc_addr = format!("{}:9090", mirror.cluster_ip);
    let tcp_addr = format!("{}:7000", mirror.cluster_ip);
    let from_web = "hello from web-1".to_owned();

    // HTTP/1, gRPC over HTTP/2, raw TCP: all answered by the east pod.
    for (addr, mode, n) in [
        (&http_addr, "h1", 20),
        (&http_addr, "h2", 10),
        (&grpc_addr, "grpc", 20),
    ] {
        let r = load(&lab, &client.pod, addr, n, mode).await?;
        println!("{mode} {addr}: {r:?}");
        assert_eq!(
            (r.ok, r.failed),
            (n, 0),
            "{:?}\n{}",
            r.errors,
            client.pod.log_tails(30)
        );
        assert_eq!(r.by_body.get(&from_web), Some(&n), "{r:?}");
    }
    let (ok, out, err) = lab
        .tool(&client.pod, &["tcp", &tcp_addr, "hello-strait"])
        .await?;
    assert!(ok, "{err}\n{}", client.pod.log_tails(30));
    assert_eq!(out, "web-1: hello-strait");

    // The gateway carried it all, for the client's identity, to each port of web.
    let gm = gateway.metrics().await?;
    let who = format!("client_id=\"{client_id}\"");
    for port in [80, 9090, 7000] {
        let target = format!("target=\"{WEB_FQ}:{port}\"");
        let conns = metric_sum(&gm, "gateway_connections_total", &[&who, &target]);
        let bytes = metric_sum(&gm, "gateway_bytes_total", &[&who, &target]);
        println!("gateway → {WEB_FQ}:{port}: {conns} connections, {bytes} bytes");
        assert!(conns >= 1.0 && bytes > 0.0, "port {port}:\n{gm}");
    }
    assert!(
        metric_sum(&gm, "gateway_requests_total", &[&who]) >= 50.0,
        "HTTP requests through the gateway:\n{gm}"
    );
    // The east proxy saw the gateway as its client, over mTLS.
    let wm = web.metrics().await?;
    let gw_client = format!("client_id=\"{gw_id}\"");
    assert!(
        metric_sum(
            &wm,
            "request_total{direction=\"inbound\"",
            &[&gw_client, "tls=\"true\""]
        ) >= 50.0,
        "east proxy did not see the gateway's identity:\n{wm}"
    );
    assert!(
        metric_sum(&wm, "tcp_open_total{direction=\"inbound\"", &[&gw_client]) >= 1.0,
        "east proxy did not see the gateway's TCP:\n{wm}"
    );
    // The client's proxy sent it to the gateway's identity.
    let cm = client.metrics().await?;
    assert!(
        cm.lines()
            .any(|l| l.starts_with("response_total{direction=\"outbound\"")
                && l.contains(&format!("server_id=\"{gw_id}\""))),
        "client proxy did not talk to the gateway's identity:\n{cm}"
    );

    // The gateway process dies and comes back at the same address: the same client proxy
    // uses it again (bounded: the prober marks it down and up, the proxy reconnects).
    let before = gateway.pid();
    gateway.restart().await?;
    assert_ne!(before, gateway.pid());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let r = load(&lab, &client.pod, &http_addr, 5, "h1").await?;
        if r.ok == 5 && r.by_body.get(&from_web) == Some(&5) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the restarted gateway was never used again: {r:?}\n{}\n{}",
            client.pod.log_tails(30),
            gateway.pod.log_tails(30)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let r = load(&lab, &client.pod, &grpc_addr, 10, "grpc").await?;
    assert_eq!(r.ok, 10, "{r:?}");
    let gm = gateway.metrics().await?;
    let after = metric_sum(&gm, "gateway_bytes_total", &[&who]);
    println!(
        "after the restart ({attempts} attempts): the new gateway moved {after} bytes for {client_id}"
    );
    assert!(after > 0.0, "{gm}");

    // Remote discovery: web-1 behind a second Service selected for it, and a pod without a
    // proxy behind a third. Their mirrors list the pods themselves.
    let rd_service = |name: &str, app: &str| -> Result<Service, Error> {
        Ok(serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": NS, "labels": {
                strait_core::labels::EXPORTED: strait_core::labels::EXPORTED_REMOTE_DISCOVERY}},
            "spec": {"selector": {"app": app},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
        }))?)
    };
    let plain = east
        .pod(
            PodSpec::new(NS, "plain-1")
                .label("app", "plain")
                .port("http", 8080),
        )
        .await?;
    plain.spawn("http", lab.tool_command(&plain, &["serve", "8080"]))?;
    let esvc = Api::<Service>::namespaced(east.client(), NS);
    esvc.create(&PostParams::default(), &rd_service("web-direct", "web")?)
        .await?;
    esvc.create(&PostParams::default(), &rd_service("plain", "plain")?)
        .await?;
    let direct = link.wait_mirror(NS, "web-direct").await?;
    assert_eq!(direct.endpoints, vec![web.pod.ip().to_string()]);
    let unmeshed = link.wait_mirror(NS, "plain").await?;
    assert_eq!(unmeshed.endpoints, vec![plain.ip().to_string()]);
    let through_gw = |gm: &str| metric_sum(gm, "gateway_bytes_total", &[&who]);
    let gw_before = through_gw(&gateway.metrics().await?);
    let wm_before = web.metrics().await?;
    let client_seen = format!("client_id=\"{client_id}\"");
    let direct_requests = |wm: &str| {
        metric_sum(
            wm,
            "request_total{direction=\"inbound\"",
            &[&client_seen, "tls=\"true\""],
        )
    };
    let direct_addr = format!("{}:80", direct.cluster_ip);
    for mode in ["h1", "h2"] {
        let r = load(&lab, &client.pod, &direct_addr, 10, mode).await?;
        println!("remote discovery {mode} {direct_addr}: {r:?}");
        assert_eq!(
            (r.ok, r.failed),
            (10, 0),
            "{:?}\n{}\n{}",
            r.errors,
            client.pod.log_tails(30),
            web.pod.log_tails(30)
        );
        assert_eq!(r.by_body.get(&from_web), Some(&10), "{r:?}");
    }
    let plain_addr = format!("{}:80", unmeshed.cluster_ip);
    let r = load(&lab, &client.pod, &plain_addr, 10, "h1").await?;
    println!("remote discovery, no proxy, {plain_addr}: {r:?}");
    assert_eq!((r.ok, r.failed), (10, 0), "{:?}", r.errors);
    assert_eq!(r.by_body.get("hello from plain-1"), Some(&10), "{r:?}");
    // Not through the gateway: east's proxy saw the west client itself, over mTLS, and
    // the client's proxy proved web-1's identity.
    assert_eq!(
        through_gw(&gateway.metrics().await?),
        gw_before,
        "remote discovery went through the gateway"
    );
    let wm = web.metrics().await?;
    assert!(
        direct_requests(&wm) - direct_requests(&wm_before) >= 20.0,
        "east proxy did not see the client's identity:\n{wm}"
    );
    let web_id = web.identity.to_string();
    let cm = client.metrics().await?;
    assert!(
        cm.lines()
            .any(|l| l.starts_with("response_total{direction=\"outbound\"")
                && l.contains(&format!("server_id=\"{web_id}\""))),
        "client proxy did not talk to web-1's identity:\n{cm}"
    );
    link.stop().await;
    Ok(())
}
