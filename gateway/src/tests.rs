//! In-memory tests of the whole per-connection path: TLS, refusals and forwarding over
//! duplex pipes, with a fixed resolver and a dialer that hands out pipes.
#![allow(clippy::unwrap_used)]

use crate::authz::{self, Policy};
use crate::listener::{Gateway, GatewayConfig};
use crate::metrics::Metrics;
use futures::future::BoxFuture;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use strait_core::identity::Identity;
use strait_core::transport_header::{ALPN, PREFACE, SessionProtocol, TransportHeader};
use strait_proxy::addr::EndpointAddr;
use strait_proxy::connect::{Connector, Dial};
use strait_proxy::discover::{EndpointMeta, EndpointSet, Fallback, Resolution, Resolver};
use strait_proxy::io::BoxIo;
use strait_tls::rustls::ClientConfig;
use strait_tls::testing::TestPki;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_util::sync::CancellationToken;

const GW: &str = "strait-gateway.strait-multicluster.serviceaccount.identity.strait.cluster.local";
const CLIENT: &str = "web.shop.serviceaccount.identity.strait.cluster.local";
const TARGET_ID: &str = "api.shop.serviceaccount.identity.strait.cluster.local";

fn id(s: &str) -> Identity {
    s.parse().unwrap()
}

/// Resolves every target to the same endpoints (an empty set reads as "no endpoints").
fn fixed(endpoints: Vec<Endpoint>) -> Resolver {
    let set = EndpointSet {
        endpoints: endpoints.into_iter().collect(),
        ..EndpointSet::default()
    };
    Resolver::fixed(Resolution::Endpoints(Arc::new(set)))
}

type Endpoint = (EndpointAddr, EndpointMeta);

/// Each dial returns a pipe whose other end is sent to the test.
struct PipeDial(tokio::sync::mpsc::UnboundedSender<(SocketAddr, DuplexStream)>);
impl Dial for PipeDial {
    fn dial(&self, addr: SocketAddr) -> BoxFuture<'static, std::io::Result<BoxIo>> {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let sent = self.0.send((addr, b));
        Box::pin(async move {
            sent.map_err(|_| std::io::Error::other("test ended"))?;
            Ok(Box::new(a) as BoxIo)
        })
    }
}

struct Fixture {
    pki: TestPki,
    gateway: Gateway,
    registry: Registry,
    dialed: tokio::sync::mpsc::UnboundedReceiver<(SocketAddr, DuplexStream)>,
}

fn endpoint(meshed: bool) -> Endpoint {
    (
        EndpointAddr("198.18.0.10:8080".parse().unwrap()),
        EndpointMeta {
            identity: meshed.then(|| TARGET_ID.parse().unwrap()),
            h2: false,
            opaque_transport: meshed.then_some(4143),
            authority_override: None,
        },
    )
}

fn config(forbid_plaintext: bool) -> GatewayConfig {
    GatewayConfig {
        identity: GW.parse().unwrap(),
        cluster_domain: "cluster.local".into(),
        forbid_plaintext,
        handshake_timeout: Duration::from_secs(5),
        header_timeout: Duration::from_millis(300),
        resolve_timeout: Duration::from_secs(1),
    }
}

fn fixture(policy: Policy, endpoints: Vec<Endpoint>, forbid_plaintext: bool) -> Fixture {
    fixture_with(policy, fixed(endpoints), forbid_plaintext)
}

fn fixture_with(policy: Policy, resolver: Resolver, forbid_plaintext: bool) -> Fixture {
    let pki = TestPki::new();
    let rx = pki.receiver(&id(GW));
    let crate::app::TlsConfigs { server, .. } =
        crate::tls_configs(&pki.anchors, rx.clone()).unwrap();
    let connector = Connector::new(&pki.anchors, rx, Duration::from_secs(5)).unwrap();
    let (tx, dialed) = tokio::sync::mpsc::unbounded_channel();
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let gateway = Gateway::new(
        config(forbid_plaintext),
        server,
        authz::fixed(policy),
        resolver,
        connector.with_dial(Arc::new(PipeDial(tx))),
        metrics,
    );
    Fixture {
        pki,
        gateway,
        registry,
        dialed,
    }
}

impl Fixture {
    /// Starts the gateway on one end of a pipe; returns the other end and the result.
    fn accept(
        &self,
    ) -> (
        DuplexStream,
        tokio::task::JoinHandle<Result<(), crate::Refusal>>,
    ) {
        let (c, s) = tokio::io::duplex(64 * 1024);
        let gw = self.gateway.clone();
        let task = tokio::spawn(async move {
            gw.serve_connection(
                s,
                "127.0.0.1:5555".parse().unwrap(),
                CancellationToken::new(),
            )
            .await
        });
        (c, task)
    }

    fn metrics(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry).unwrap();
        s
    }

    /// Connects as `client`, sends `bytes` after the handshake, and returns the refusal label.
    async fn refused(&self, cfg: Arc<ClientConfig>, bytes: &[u8]) -> &'static str {
        let (c, task) = self.accept();
        let gw = id(GW);
        let bytes = bytes.to_vec();
        let client = tokio::spawn(async move {
            if let Ok(mut tls) = strait_tls::connect(cfg, &gw, c).await {
                let _ = tls.write_all(&bytes).await;
                let mut sink = Vec::new();
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut sink)).await;
            }
        });
        let r = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        client.abort();
        let label = r.unwrap_err().metric_label();
        assert!(
            self.metrics()
                .contains(&format!("gateway_refused_total{{reason=\"{label}\"}} 1")),
            "{}",
            self.metrics()
        );
        label
    }
}

fn header(name: &str, port: u16, protocol: Option<SessionProtocol>) -> Vec<u8> {
    TransportHeader {
        port,
        name: Some(name.into()),
        protocol,
    }
    .encode()
}

const WEB: &str = "web.shop.svc.cluster.local";

#[tokio::test]
async fn refuses_a_client_without_a_certificate() {
    let f = fixture(Policy::AllowAll, vec![endpoint(false)], false);
    let cfg = f.pki.client(None, &[ALPN]);
    assert_eq!(f.refused(cfg, b"").await, "no_client_certificate");
}

#[tokio::test]
async fn refuses_another_trust_anchor() {
    let f = fixture(Policy::AllowAll, vec![endpoint(false)], false);
    let other = TestPki::new();
    // Trusts our anchor for the server, but presents a certificate from another anchor.
    let cfg =
        strait_tls::client_config(&f.pki.anchors, other.receiver(&id(CLIENT)), &[ALPN]).unwrap();
    assert_eq!(f.refused(cfg, b"").await, "unknown_trust_anchor");
}

#[tokio::test]
async fn refuses_a_tls12_client_for_its_protocol_version() {
    let f = fixture(Policy::AllowAll, vec![endpoint(false)], false);
    let mut old = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_root_certificates(f.pki.anchors.root_store())
    .with_no_client_auth();
    old.alpn_protocols = vec![ALPN.to_vec()];
    assert_eq!(f.refused(Arc::new(old), b"").await, "tls_protocol_version");
}

#[tokio::test]
async fn refuses_a_plaintext_client_as_not_tls() {
    let f = fixture(Policy::AllowAll, vec![endpoint(false)], false);
    let (mut c, task) = f.accept();
    c.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.unwrap_err().metric_label(), "not_tls");
    assert!(
        f.metrics()
            .contains("gateway_refused_total{reason=\"not_tls\"} 1"),
        "{}",
        f.metrics()
    );
}

#[tokio::test]
async fn refuses_a_client_without_alpn() {
    let f = fixture(Policy::AllowAll, vec![endpoint(false)], false);
    let cfg = f.pki.client(Some(&id(CLIENT)), &[]);
    assert_eq!(f.refused(cfg, &header(WEB, 80, None)).await, "no_alpn");
}

#[tokio::test]
async fn refuses_malformed_and_oversized_headers() {
    let f = fixture(Policy::AllowAll, vec![endpoint(false)], false);
    let cfg = f.pki.client(Some(&id(CLIENT)), &[ALPN]);
    assert_eq!(
        f.refused(cfg.clone(), b"GET / HTTP/1.1\r\n\r\n").await,
        "header_malformed"
    );
    let mut big = PREFACE.to_vec();
    big.extend_from_slice(&(1u32 << 20).to_be_bytes());
    assert_eq!(f.refused(cfg.clone(), &big).await, "header_too_long");
    // A valid frame whose message is not protobuf.
    let mut junk = PREFACE.to_vec();
    junk.extend_from_slice(&3u32.to_be_bytes());
    junk.extend_from_slice(&[0xff, 0xff, 0xff]);
    let f = fixture(Policy::AllowAll, vec![endpoint(false)], false);
    let cfg = f.pki.client(Some(&id(CLIENT)), &[ALPN]);
    assert_eq!(f.refused(cfg, &junk).await, "header_malformed");
}

#[tokio::test]
async fn refuses_ports_outside_the_range() {
    for port in [0i64, 70000, -1] {
        let f = fixture(Policy::AllowAll, vec![endpoint(false)], false);
        let cfg = f.pki.client(Some(&id(CLIENT)), &[ALPN]);
        // field 1 (port), varint; int32 negatives are 10-byte varints.
        let mut msg = vec![0x08];
        let mut v = port as u64;
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                msg.push(b);
                break;
            }
            msg.push(b | 0x80);
        }
        let mut bytes = PREFACE.to_vec();
        bytes.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&msg);
        assert_eq!(f.refused(cfg, &bytes).await, "invalid_port", "{port}");
    }
}

#[tokio::test]
async fn refuses_names_outside_the_cluster_domain() {
    let f = fixture(Policy::AllowAll, vec![endpoint(false)], false);
    let cfg = f.pki.client(Some(&id(CLIENT)), &[ALPN]);
    let h = header("web.shop.svc.other.example", 80, None);
    assert_eq!(f.refused(cfg, &h).await, "name_outside_domain");
}

#[tokio::test]
async fn refuses_a_loop() {
    let f = fixture(Policy::AllowAll, vec![endpoint(false)], false);
    let cfg = f.pki.client(Some(&id(GW)), &[ALPN]);
    assert_eq!(f.refused(cfg, &header(WEB, 80, None)).await, "loop");
}

#[tokio::test]
async fn refuses_identities_outside_the_allow_list() {
    let policy = Policy::parse("*.payments.serviceaccount.identity.strait.cluster.local").unwrap();
    let f = fixture(policy, vec![endpoint(false)], false);
    let cfg = f.pki.client(Some(&id(CLIENT)), &[ALPN]);
    assert_eq!(f.refused(cfg, &header(WEB, 80, None)).await, "unauthorized");
}

#[tokio::test]
async fn refuses_a_silent_client() {
    let f = fixture(Policy::AllowAll, vec![endpoint(false)], false);
    let cfg = f.pki.client(Some(&id(CLIENT)), &[ALPN]);
    assert_eq!(f.refused(cfg, b"").await, "header_timeout");
}

#[tokio::test]
async fn refuses_plaintext_targets_when_forbidden_and_unknown_targets() {
    let f = fixture(Policy::AllowAll, vec![endpoint(false)], true);
    let cfg = f.pki.client(Some(&id(CLIENT)), &[ALPN]);
    assert_eq!(
        f.refused(cfg, &header(WEB, 80, None)).await,
        "plaintext_forbidden"
    );
    let f = fixture(Policy::AllowAll, vec![], false);
    let cfg = f.pki.client(Some(&id(CLIENT)), &[ALPN]);
    assert_eq!(f.refused(cfg, &header(WEB, 80, None)).await, "no_endpoints");
    for (answer, label) in [
        (Fallback::NotDiscoverable, "unknown_target"),
        (Fallback::Unreachable, "resolve_failed"),
    ] {
        let f = fixture_with(
            Policy::AllowAll,
            Resolver::fixed(Resolution::Fallback(answer)),
            false,
        );
        let cfg = f.pki.client(Some(&id(CLIENT)), &[ALPN]);
        assert_eq!(f.refused(cfg, &header(WEB, 80, None)).await, label);
    }
}

/// Reads byte by byte until `end` (never past it); returns what was read.
async fn read_until<R: tokio::io::AsyncRead + Unpin>(io: &mut R, end: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while !out.ends_with(end) {
        io.read_exact(&mut byte).await.unwrap();
        out.push(byte[0]);
    }
    out
}

/// One read (bounded), as text.
async fn read_some<R: tokio::io::AsyncRead + Unpin>(io: &mut R) -> String {
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), io.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).to_string()
}

/// Connects as CLIENT and sends a header; returns the client stream.
async fn connect(
    f: &Fixture,
    h: Vec<u8>,
) -> (
    strait_tls::tokio_rustls::client::TlsStream<DuplexStream>,
    tokio::task::JoinHandle<Result<(), crate::Refusal>>,
) {
    let (c, task) = f.accept();
    let cfg = f.pki.client(Some(&id(CLIENT)), &[ALPN]);
    let mut tls = strait_tls::connect(cfg, &GW.parse().unwrap(), c)
        .await
        .unwrap();
    tls.write_all(&h).await.unwrap();
    (tls, task)
}

#[tokio::test]
async fn opaque_bytes_reach_an_unmeshed_target_and_come_back() {
    let mut f = fixture(Policy::AllowAll, vec![endpoint(false)], false);
    let (mut tls, task) = connect(&f, header(WEB, 8080, None)).await;
    tls.write_all(b"ping").await.unwrap();
    let (addr, mut target) = f.dialed.recv().await.unwrap();
    assert_eq!(addr, endpoint(false).0.0, "plain TCP to the pod port");
    let mut buf = [0u8; 4];
    target.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    target.write_all(b"pong").await.unwrap();
    drop(target);
    let mut back = Vec::new();
    tls.read_to_end(&mut back).await.unwrap_or_default();
    assert_eq!(back, b"pong");
    drop(tls);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let m = f.metrics();
    assert!(
        m.contains(&format!(
            "gateway_connections_total{{client_id=\"{CLIENT}\",target=\"{WEB}:8080\"}} 1"
        )),
        "{m}"
    );
    assert!(m.contains("direction=\"ToTarget\"} 4"), "{m}");
}

#[tokio::test]
async fn meshed_targets_get_mtls_and_a_header_with_the_pod_port() {
    let mut f = fixture(Policy::AllowAll, vec![endpoint(true)], false);
    let (mut tls, _task) = connect(&f, header(WEB, 8080, Some(SessionProtocol::Http1))).await;
    let (addr, target) = f.dialed.recv().await.unwrap();
    assert_eq!(addr, "198.18.0.10:4143".parse::<SocketAddr>().unwrap());
    // The target's proxy: mTLS as TARGET_ID, sees the gateway's identity and a header.
    let server = strait_tls::server_config(
        &f.pki.anchors,
        f.pki.receiver(&id(TARGET_ID)),
        strait_tls::ClientAuth::Required,
        &[ALPN],
    )
    .unwrap();
    let mut inbound = strait_tls::accept(server, target).await.unwrap();
    assert_eq!(
        strait_tls::peer_identity(inbound.get_ref().1)
            .unwrap()
            .to_string(),
        GW
    );
    let h = strait_proxy::header::read(&mut inbound, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(h.port, 8080);
    assert_eq!(h.name, None);
    assert_eq!(h.protocol, Some(SessionProtocol::Http1));

    // An HTTP/1 request goes through with Forwarded and the target's Host.
    tls.write_all(b"GET /x HTTP/1.1\r\nhost: web-east.shop.svc.cluster.local:80\r\n\r\n")
        .await
        .unwrap();
    let head = read_until(&mut inbound, b"\r\n\r\n").await;
    let head = String::from_utf8(head).unwrap().to_lowercase();
    assert!(head.starts_with("get /x http/1.1\r\n"), "{head}");
    assert!(
        head.contains("host: web.shop.svc.cluster.local:8080\r\n"),
        "{head}"
    );
    assert!(
        head.contains(&format!(
            "forwarded: by={GW};for={CLIENT};host=\"web-east.shop.svc.cluster.local:80\";proto=https"
        )),
        "{head}"
    );
    inbound
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        .await
        .unwrap();
    let rsp = read_some(&mut tls).await;
    assert!(rsp.starts_with("HTTP/1.1 200 OK"), "{rsp}");
    assert!(rsp.ends_with("ok"), "{rsp}");
    assert!(
        f.metrics().contains("gateway_requests_total"),
        "{}",
        f.metrics()
    );
}

#[tokio::test]
async fn a_reloaded_allow_list_applies_to_the_next_connection() {
    // The policy channel is what the file watcher feeds; switch it by hand here.
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(Policy::AllowAll));
    let f = fixture(Policy::AllowAll, vec![endpoint(false)], false);
    let gw_creds = f.pki.receiver(&id(GW));
    let gw = Gateway::new(
        config(false),
        crate::tls_configs(&f.pki.anchors, gw_creds.clone())
            .unwrap()
            .server,
        rx,
        fixed(vec![]),
        Connector::new(&f.pki.anchors, gw_creds, Duration::from_secs(1)).unwrap(),
        Metrics::default(),
    );
    let try_once = |gw: Gateway, cfg| async move {
        let (c, s) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(async move {
            gw.serve_connection(s, "127.0.0.1:1".parse().unwrap(), CancellationToken::new())
                .await
        });
        let mut tls = strait_tls::connect(cfg, &GW.parse().unwrap(), c)
            .await
            .unwrap();
        let _ = tls.write_all(&header(WEB, 80, None)).await;
        task.await.unwrap().unwrap_err().metric_label()
    };
    let cfg = f.pki.client(Some(&id(CLIENT)), &[ALPN]);
    assert_eq!(try_once(gw.clone(), cfg.clone()).await, "no_endpoints");
    tx.send_replace(Arc::new(Policy::parse("").unwrap()));
    assert_eq!(try_once(gw.clone(), cfg).await, "unauthorized");
}

#[tokio::test]
async fn a_failed_request_gets_a_status_and_a_fixed_kind_not_the_error_text() {
    let mut f = fixture(Policy::AllowAll, vec![endpoint(false)], false);
    let (mut tls, _task) = connect(&f, header(WEB, 8080, Some(SessionProtocol::Http1))).await;
    let (_, mut target) = f.dialed.recv().await.unwrap();
    tls.write_all(b"GET /a HTTP/1.1\r\nhost: web-east.shop.svc.cluster.local:80\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut target, b"\r\n\r\n").await;
    target
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        .await
        .unwrap();
    read_until(&mut tls, b"ok").await;
    // The target goes away and cannot be reached again: the next request fails.
    drop(target);
    f.dialed.close();
    tokio::time::sleep(Duration::from_millis(100)).await;
    tls.write_all(b"GET /b HTTP/1.1\r\nhost: web-east.shop.svc.cluster.local:80\r\n\r\n")
        .await
        .unwrap();
    let rsp = read_some(&mut tls).await;
    assert!(rsp.starts_with("HTTP/1.1 502 "), "{rsp}");
    let (head, body) = rsp.split_once("\r\n\r\n").unwrap();
    let kind = body.trim_end();
    assert!(
        ["connect_refused", "endpoint_failed"].contains(&kind),
        "a fixed kind, not the error's text: {rsp}"
    );
    assert!(
        head.to_lowercase()
            .contains(&format!("l5d-proxy-error: {kind}")),
        "{rsp}"
    );
}
