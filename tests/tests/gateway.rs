//! The gateway end to end on a real local cluster: a web pod in `east` behind a Service, the
//! east destination service in-process, and the gateway (the library's `run`, the same code
//! the binary runs, with files on disk and the TLS admin server) bound to 127.0.0.1. Clients
//! are hand-made with strait_tls (mTLS + ALPN + transport header), as a linked cluster's
//! proxy would be. The gateway reaches the pod over the pod network.
//!
//! Cases, in order: HTTP/1, HTTP/2 and opaque TCP reach the pod; the gateway's metrics name
//! the client's identity; each refusal reason is counted; a restarted gateway serves the
//! same client again; shutdown drains within its bound. Then policy: a Server on the
//! gateway's port and an AuthorizationPolicy admitting only `frontend` (MeshTLSAuthentication)
//! let `frontend` cross and refuse `intruder`, counted in both the gateway's refusals and the
//! inbound policy metrics.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::PostParams;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use strait_control_plane::destination::{DestinationConfig, Discovery, Metrics};
use strait_control_plane::policy;
use strait_core::identity::Identity;
use strait_core::transport_header::{ALPN, PREFACE, SessionProtocol, TransportHeader};
use strait_k8s_api::policy::{AuthorizationPolicy, MeshTLSAuthentication, Server};
use strait_localcluster::{Cluster, ClusterConfig, PodSpec};
use strait_tls::rustls::ClientConfig;
use strait_tls::testing::TestPki;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Tls = strait_tls::tokio_rustls::client::TlsStream<TcpStream>;

const WAIT: Duration = Duration::from_secs(30);
const TOOL: &str = env!("CARGO_BIN_EXE_strait-sample");
const NS: &str = "shop";
const GW: &str = "strait-gateway.strait-multicluster.serviceaccount.identity.strait.cluster.local";
/// A workload of the linked cluster `west`.
const CLIENT: &str = "frontend.shop.serviceaccount.identity.strait.cluster.local";
const WEB: &str = "web.shop.svc.cluster.local";
/// A workload of `west` that the gateway policy does not admit.
const INTRUDER: &str = "intruder.shop.serviceaccount.identity.strait.cluster.local";

#[path = "policy_support/mod.rs"]
mod policy_support;
use policy_support::create;

fn id(s: &str) -> Identity {
    s.parse().unwrap()
}

fn header(name: &str, port: u16, protocol: Option<SessionProtocol>) -> Vec<u8> {
    TransportHeader {
        port,
        name: Some(name.into()),
        protocol,
    }
    .encode()
}

/// mTLS to the gateway, then `bytes` (normally a transport header).
async fn open(gw: SocketAddr, cfg: Arc<ClientConfig>, bytes: &[u8]) -> Result<Tls, Error> {
    let tcp = tokio::time::timeout(WAIT, TcpStream::connect(gw)).await??;
    let mut tls = strait_tls::connect(cfg, &GW.parse()?, tcp).await?;
    tls.write_all(bytes).await?;
    Ok(tls)
}

/// One HTTP request through the gateway with the session protocol `p` (HTTP/2 as a gRPC
/// call, whose trailers must say `grpc-status: 0`); returns the body (the gRPC message).
async fn http_get(
    gw: SocketAddr,
    cfg: Arc<ClientConfig>,
    p: SessionProtocol,
) -> Result<String, Error> {
    let tls = open(gw, cfg, &header(WEB, 81, Some(p))).await?;
    let io = TokioIo::new(tls);
    let rsp = match p {
        SessionProtocol::Http1 => {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            let req = http::Request::get("/hello")
                .header("host", "web-east.shop.svc.cluster.local:81")
                .body(Empty::<Bytes>::new())?;
            send.send_request(req).await?
        }
        SessionProtocol::Http2 => {
            let (mut send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            let req = http::Request::post("http://web-east.shop.svc.cluster.local:81/pkg.Svc/Call")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(Empty::<Bytes>::new())?;
            send.send_request(req).await?
        }
    };
    let status = rsp.status();
    let collected = rsp.into_body().collect().await?;
    let grpc_status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .cloned();
    let body = collected.to_bytes();
    if !status.is_success() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body)).into());
    }
    if matches!(p, SessionProtocol::Http2) {
        // A gRPC call: the answer is one message, and its status comes in the trailers.
        if grpc_status.as_ref().map(|v| v.as_bytes()) != Some(b"0") {
            return Err(format!("grpc-status {grpc_status:?}").into());
        }
        return strait_e2e::tool::grpc_unframe(body).ok_or_else(|| "malformed gRPC answer".into());
    }
    Ok(String::from_utf8_lossy(&body).to_string())
}

/// GET over TLS to the admin port, verifying the gateway's identity.
async fn admin_get(pki: &TestPki, addr: SocketAddr, path: &str) -> Result<(u16, String), Error> {
    let cfg = pki.client(None, &[b"http/1.1"]);
    let tcp = TcpStream::connect(addr).await?;
    let tls = strait_tls::connect(cfg, &GW.parse()?, tcp).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let rsp = send
        .send_request(
            http::Request::get(path)
                .header("host", "gateway")
                .body(Empty::<Bytes>::new())?,
        )
        .await?;
    let status = rsp.status().as_u16();
    let body = rsp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).to_string()))
}

/// Waits (bounded) until the metrics contain every one of `needles`.
async fn metrics_contain(
    pki: &TestPki,
    admin: SocketAddr,
    needles: &[String],
) -> Result<String, Error> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, text) = admin_get(pki, admin, "/metrics").await?;
        if needles.iter().all(|n| text.contains(n.as_str())) {
            return Ok(text);
        }
        if tokio::time::Instant::now() > deadline {
            let missing: Vec<_> = needles
                .iter()
                .filter(|n| !text.contains(n.as_str()))
                .collect();
            return Err(format!("metrics lack {missing:?}:\n{text}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Running {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), strait_gateway::StartError>>,
}

fn start_gateway(args: &strait_gateway::Args) -> Running {
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(strait_gateway::run(args.clone(), shutdown.clone()));
    Running { shutdown, task }
}

/// Waits until the gateway answers /ready.
async fn ready(pki: &TestPki, admin: SocketAddr) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok((200, _)) = admin_get(pki, admin, "/ready").await {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err("the gateway never became ready".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway() -> Result<(), Error> {
    strait_localcluster::require_root()?;
    let east = Cluster::start(ClusterConfig::new("east")).await?;
    east.ensure_namespace(NS).await?;
    let services = Api::<Service>::namespaced(east.client(), NS);
    services
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "web", "namespace": NS},
                "spec": {"selector": {"app": "web"}, "ports": [
                    {"name": "http", "port": 80, "targetPort": 8080},
                    {"name": "echo", "port": 81, "targetPort": 8081},
                    {"name": "tcp", "port": 82, "targetPort": 8082},
                ]},
            }))?,
        )
        .await?;
    let web = east
        .pod(
            PodSpec::new(NS, "web-1")
                .label("app", "web")
                .service_account("web")
                .port("http", 8080)
                .port("echo", 8081)
                .port("tcp", 8082),
        )
        .await?;
    let mut cmd = web.command(TOOL);
    cmd.args(["serve-echo-http", "8081"]);
    web.spawn("echo-http", cmd)?;
    let mut cmd = web.command(TOOL);
    cmd.args(["echo", "8082"]);
    web.spawn("echo-tcp", cmd)?;

    // The east destination service, in-process.
    let discovery = Discovery::spawn(east.client());
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry);
    let config = DestinationConfig {
        cluster_domain: east.cluster_domain().to_owned(),
        ..DestinationConfig::default()
    };
    let svc = discovery.service(config, metrics);
    let dst_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let dst_addr = dst_listener.local_addr()?;
    // Policy beside destination, as the control plane serves it.
    policy_support::install_crds(&east.client()).await?;
    let policies = Arc::new(policy::Policies::spawn(
        east.client(),
        &discovery,
        policy::PolicyConfig {
            cluster_domain: east.cluster_domain().to_owned(),
            ..Default::default()
        },
    ));
    let serving = policies.clone();
    tokio::spawn(async move {
        let _ = policy::serve_with_destination(
            dst_listener,
            svc,
            &serving,
            None,
            std::future::pending(),
        )
        .await;
    });
    tokio::time::timeout(WAIT, discovery.synced()).await?;
    tokio::time::timeout(WAIT, policies.index().synced()).await?;
    // The gateway's pod, as the policy service sees it (the gateway itself runs on the host).
    east.ensure_service_account(NS, "strait-gateway").await?;
    let pods: Api<Pod> = Api::namespaced(east.client(), NS);
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(serde_json::json!({
            "metadata": {"name": "strait-gateway-1", "namespace": NS,
                         "labels": {"app": "strait-gateway"}},
            "spec": {"serviceAccountName": "strait-gateway",
                     "containers": [{"name": "gateway", "image": "gateway"}]},
        }))?,
    )
    .await?;

    // The gateway, from files on disk, as the binary would run it.
    let pki = TestPki::new();
    let dir = tempfile::tempdir()?;
    let files = pki.write_leaf_files(&id(GW), dir.path(), "gw");
    let gw: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
    let args = <strait_gateway::Args as clap::Parser>::try_parse_from([
        "strait-gateway".to_owned(),
        format!("--listen-addr={gw}"),
        format!("--admin-addr={admin}"),
        format!("--cert={}", files.cert.display()),
        format!("--key={}", files.key.display()),
        format!("--trust-anchors={}", files.anchors.display()),
        format!("--destination=http://{dst_addr}"),
        format!("--cluster-domain={}", east.cluster_domain()),
        "--drain-timeout=2s".to_owned(),
        "--header-timeout=2s".to_owned(),
        format!("--policy-workload={NS}:strait-gateway-1"),
    ])?;
    let running = start_gateway(&args);
    ready(&pki, admin).await?;

    let result = async {
        let client = pki.client(Some(&id(CLIENT)), &[ALPN]);
        forwards_http_and_tcp(gw, client.clone()).await?;
        metrics_contain(
            &pki,
            admin,
            &[
                format!("gateway_connections_total{{client_id=\"{CLIENT}\",target=\"{WEB}:81\"}} 2"),
                format!("gateway_connections_total{{client_id=\"{CLIENT}\",target=\"{WEB}:82\"}} 1"),
                format!("gateway_requests_total{{client_id=\"{CLIENT}\",target=\"{WEB}:81\"}}"),
                format!("gateway_request_latency_seconds_count{{client_id=\"{CLIENT}\",target=\"{WEB}:81\"}}"),
                format!("gateway_bytes_total{{client_id=\"{CLIENT}\",target=\"{WEB}:82\",direction=\"ToClient\"}} 5"),
            ],
        )
        .await?;
        refusals(&pki, gw, admin).await?;
        gateway_policy(&east, &pki, gw, admin).await?;
        let running = restart_and_drain(&pki, &args, running, gw, admin).await?;
        running.shutdown.cancel();
        let _ = tokio::time::timeout(WAIT, running.task).await;
        Ok::<_, Error>(())
    }
    .await;
    if result.is_err() {
        eprintln!("{}", web.log_tails(30));
    }
    result
}

async fn forwards_http_and_tcp(gw: SocketAddr, client: Arc<ClientConfig>) -> Result<(), Error> {
    let forwarded = format!(
        "forwarded=by={GW};for={CLIENT};host=\"web-east.shop.svc.cluster.local:81\";proto=https"
    );
    let body = http_get(gw, client.clone(), SessionProtocol::Http1).await?;
    assert!(body.starts_with("pod=web-1 version=HTTP/1.1"), "{body}");
    assert!(body.contains(&format!("host={WEB}:81 ")), "{body}");
    assert!(body.ends_with(&forwarded), "{body}");

    let body = http_get(gw, client.clone(), SessionProtocol::Http2).await?;
    assert!(body.starts_with("pod=web-1 version=HTTP/2.0"), "{body}");
    assert!(body.contains(&format!("host={WEB}:81 ")), "{body}");
    assert!(body.ends_with(&forwarded), "{body}");

    let mut tls = open(gw, client, &header(WEB, 82, None)).await?;
    tls.write_all(b"hello").await?;
    let mut back = [0u8; 5];
    tokio::time::timeout(WAIT, tls.read_exact(&mut back)).await??;
    assert_eq!(&back, b"hello");
    tls.shutdown().await?;
    Ok(())
}

/// Each refusal, with a hand-made client; the reasons show in the metrics.
async fn refusals(pki: &TestPki, gw: SocketAddr, admin: SocketAddr) -> Result<(), Error> {
    let good = pki.client(Some(&id(CLIENT)), &[ALPN]);
    // Trusts our anchor for the server, but presents a certificate from another anchor.
    let other_anchor =
        strait_tls::client_config(&pki.anchors, TestPki::new().receiver(&id(CLIENT)), &[ALPN])?;
    let tls12 = {
        let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS12])?
        .with_root_certificates(pki.anchors.root_store())
        .with_no_client_auth();
        c.alpn_protocols = vec![ALPN.to_vec()];
        Arc::new(c)
    };
    let mut too_long = PREFACE.to_vec();
    too_long.extend_from_slice(&(1u32 << 20).to_be_bytes());
    let mut port_zero = PREFACE.to_vec();
    port_zero.extend_from_slice(&2u32.to_be_bytes());
    port_zero.extend_from_slice(&[0x08, 0x00]);
    let cases: Vec<(&str, Arc<ClientConfig>, Vec<u8>)> = vec![
        (
            "no_client_certificate",
            pki.client(None, &[ALPN]),
            header(WEB, 81, None),
        ),
        ("unknown_trust_anchor", other_anchor, header(WEB, 81, None)),
        ("tls_protocol_version", tls12, header(WEB, 81, None)),
        (
            "no_alpn",
            pki.client(Some(&id(CLIENT)), &[]),
            header(WEB, 81, None),
        ),
        (
            "header_malformed",
            good.clone(),
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        ),
        ("header_too_long", good.clone(), too_long),
        ("invalid_port", good.clone(), port_zero),
        (
            "name_outside_domain",
            good.clone(),
            header("web.shop.svc.elsewhere.example", 81, None),
        ),
        (
            "name_outside_domain",
            good.clone(),
            header("kubernetes.default", 443, None),
        ),
        (
            "loop",
            pki.client(Some(&id(GW)), &[ALPN]),
            header(WEB, 81, None),
        ),
        (
            "unknown_target",
            good.clone(),
            header("nope.shop.svc.cluster.local", 81, None),
        ),
    ];
    let mut needles = Vec::new();
    for (reason, cfg, bytes) in cases {
        // The gateway closes the connection: the client sees an alert, an error or EOF.
        if let Ok(mut tls) = open(gw, cfg, &bytes).await {
            let mut sink = Vec::new();
            let r = tokio::time::timeout(WAIT, tls.read_to_end(&mut sink)).await;
            assert!(
                r.is_ok(),
                "{reason}: the gateway did not close the connection"
            );
            assert!(sink.is_empty(), "{reason}: the gateway answered {sink:?}");
        }
        needles.push(format!("gateway_refused_total{{reason=\"{reason}\"}}"));
    }
    metrics_contain(pki, admin, &needles).await?;
    Ok(())
}

/// A Server on the gateway's port and an AuthorizationPolicy that admits only `frontend`.
async fn gateway_policy(
    east: &Cluster,
    pki: &TestPki,
    gw: SocketAddr,
    admin: SocketAddr,
) -> Result<(), Error> {
    create::<Server>(
        &east.client(),
        serde_json::json!({
            "apiVersion": "policy.strait.dev/v1beta3", "kind": "Server",
            "metadata": {"name": "gateway", "namespace": NS},
            "spec": {"podSelector": {"matchLabels": {"app": "strait-gateway"}}, "port": gw.port(),
                     "proxyProtocol": "opaque"},
        }),
    )
    .await?;
    create::<MeshTLSAuthentication>(
        &east.client(),
        serde_json::json!({
            "apiVersion": "policy.strait.dev/v1alpha1", "kind": "MeshTLSAuthentication",
            "metadata": {"name": "frontend-only", "namespace": NS},
            "spec": {"identities": [CLIENT]},
        }),
    )
    .await?;
    create::<AuthorizationPolicy>(&east.client(), serde_json::json!({
        "apiVersion": "policy.strait.dev/v1alpha1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "gateway-frontend", "namespace": NS},
        "spec": {"targetRef": {"group": "policy.strait.dev", "kind": "Server", "name": "gateway"},
                 "requiredAuthenticationRefs": [{"group": "policy.strait.dev",
                     "kind": "MeshTLSAuthentication", "name": "frontend-only"}]},
    }))
    .await?;
    let intruder = pki.client(Some(&id(INTRUDER)), &[ALPN]);
    // The policy reaches the gateway's open watch: the intruder is refused (connection
    // closed before any byte is forwarded) …
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let refused = match open(gw, intruder.clone(), &header(WEB, 82, None)).await {
            Err(_) => true,
            Ok(mut tls) => {
                let _ = tls.write_all(b"hello").await;
                let mut sink = Vec::new();
                let r =
                    tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut sink)).await;
                !matches!(r, Ok(Ok(_)) if sink == b"hello") && sink.is_empty()
            }
        };
        if refused {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the intruder still crosses the gateway"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // … while frontend still crosses.
    forwards_http_and_tcp(gw, pki.client(Some(&id(CLIENT)), &[ALPN])).await?;
    metrics_contain(
        pki,
        admin,
        &[
            "gateway_refused_total{reason=\"unauthorized\"}".to_owned(),
            "inbound_tcp_authz_deny_total{target_port=".to_owned(),
            "srv_name=\"gateway\"}".to_owned(),
            format!("authz_name=\"gateway-frontend\",tls=\"true\",client_id=\"{CLIENT}\"}}"),
        ],
    )
    .await?;
    Ok(())
}

/// Stops the gateway with a connection open (the drain bound ends it), starts it again on the
/// same addresses, and the same client configuration is served again.
async fn restart_and_drain(
    pki: &TestPki,
    args: &strait_gateway::Args,
    running: Running,
    gw: SocketAddr,
    admin: SocketAddr,
) -> Result<Running, Error> {
    let client = pki.client(Some(&id(CLIENT)), &[ALPN]);
    let mut open_conn = open(gw, client.clone(), &header(WEB, 82, None)).await?;
    open_conn.write_all(b"x").await?;
    let mut one = [0u8; 1];
    tokio::time::timeout(WAIT, open_conn.read_exact(&mut one)).await??;

    running.shutdown.cancel();
    // Drain bound is 2s; the run returns once it passes, closing the open connection.
    tokio::time::timeout(WAIT, running.task).await???;
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(WAIT, open_conn.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the drained connection was closed");
    assert!(
        TcpStream::connect(gw).await.is_err(),
        "a stopped gateway no longer listens"
    );

    let running = start_gateway(args);
    ready(pki, admin).await?;
    let body = http_get(gw, client, SessionProtocol::Http1).await?;
    assert!(body.starts_with("pod=web-1"), "{body}");
    Ok(running)
}
