//! The latency a proxy pair adds, beside a direct connection in the same run, and the proxy's
//! memory: idle, and per 1,000 idle client connections.
//!
//! ```text
//!  load (1,000 req/s, open loop) ──► app                                    (direct)
//!  load ──► client proxy :outbound ──mTLS, HTTP/2──► server proxy :inbound ──► app
//! ```
//!
//! ```text
//! cargo run --release -p strait-bench --bin proxy [-- <seconds per phase, default 10>]
//! ```
//!
//! Everything runs on loopback in explicit mode (no iptables): the client proxy's target is
//! the server proxy's inbound address, which an in-process destination service maps to an
//! endpoint with the server's identity and the HTTP/2 hint, as for two meshed pods. Each
//! proxy is this binary re-executed as `strait-proxy` (its own process, so RSS is its own).
//! Bounded: at most 60 s per phase, 1,000 req/s, 1,000 idle connections.

use anyhow::{Context, bail};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use linkerd2_proxy_api::destination as pb;
use linkerd2_proxy_api::destination::destination_server::{Destination, DestinationServer};
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::process::{Child, Command};
use std::time::{Duration, Instant, SystemTime};
use strait_core::identity::Identity;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROLE: &str = "STRAIT_BENCH_ROLE";
const RATE: u64 = 1000;
const IDLE_CONNS: usize = 1000;

fn main() -> anyhow::Result<()> {
    if std::env::var(ROLE).as_deref() == Ok("proxy") {
        // Re-executed as a proxy: the same entry point as the strait-proxy binary.
        return match strait_proxy::cli::main() {
            c if c == std::process::ExitCode::SUCCESS => Ok(()),
            _ => bail!("proxy failed"),
        };
    }
    let secs: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()
        .context("the argument is seconds per phase")?
        .unwrap_or(10)
        .clamp(1, 60);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(bench(Duration::from_secs(secs)))
}

fn pem(label: &str, der: &[u8]) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b
        .as_bytes()
        .chunks(64)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn write_creds(
    dir: &Path,
    anchor: &strait_tls::Issuer,
    issuer: &strait_tls::Issuer,
    id: &Identity,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let req = strait_tls::generate_csr(id)?;
    let leaf = issuer.issue(
        &req.csr,
        id,
        strait_tls::DEFAULT_LEAF_LIFETIME,
        SystemTime::now(),
    )?;
    let chain: String = leaf.chain().iter().map(|c| pem("CERTIFICATE", c)).collect();
    std::fs::write(dir.join("ca.crt"), anchor.cert_pem())?;
    std::fs::write(dir.join("tls.crt"), chain)?;
    std::fs::write(
        dir.join("tls.key"),
        pem("PRIVATE KEY", req.key.secret_der()),
    )?;
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct Proxy {
    child: Child,
    admin: SocketAddr,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    fn rss_kb(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

async fn spawn_proxy(dir: &Path, env: &[(&str, String)]) -> anyhow::Result<Proxy> {
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.env(ROLE, "proxy")
        .env("STRAIT_PROXY_IDENTITY_TRUST_ANCHORS", dir.join("ca.crt"))
        .env("STRAIT_PROXY_IDENTITY_CERT", dir.join("tls.crt"))
        .env("STRAIT_PROXY_IDENTITY_KEY", dir.join("tls.key"))
        .env("STRAIT_PROXY_ADMIN_LISTEN_ADDR", admin.to_string())
        .env("STRAIT_PROXY_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let proxy = Proxy {
        child: cmd.spawn()?,
        admin,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut s) = tokio::net::TcpStream::connect(admin).await {
            s.write_all(b"GET /ready HTTP/1.0\r\n\r\n").await?;
            let mut out = String::new();
            s.read_to_string(&mut out).await?;
            if out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200") {
                return Ok(proxy);
            }
        }
        if Instant::now() > deadline {
            bail!("proxy on admin {admin} never became ready");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A destination service that maps every target to one meshed endpoint.
struct OneEndpoint {
    addr: SocketAddr,
    identity: String,
}

type Stream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl Destination for OneEndpoint {
    type GetStream = Stream<pb::Update>;
    type GetProfileStream = Stream<pb::DestinationProfile>;

    async fn get(
        &self,
        _: tonic::Request<pb::GetDestination>,
    ) -> Result<tonic::Response<Self::GetStream>, tonic::Status> {
        let wa = pb::WeightedAddr {
            addr: Some(self.addr.into()),
            weight: 10000,
            tls_identity: Some(pb::TlsIdentity {
                strategy: Some(pb::tls_identity::Strategy::DnsLikeIdentity(
                    pb::tls_identity::DnsLikeIdentity {
                        name: self.identity.clone(),
                    },
                )),
                server_name: None,
            }),
            protocol_hint: Some(pb::ProtocolHint {
                protocol: Some(pb::protocol_hint::Protocol::H2(pb::protocol_hint::H2 {})),
                opaque_transport: None,
            }),
            ..Default::default()
        };
        let first = pb::Update {
            update: Some(pb::update::Update::Add(pb::WeightedAddrSet {
                addrs: vec![wa],
                metric_labels: Default::default(),
            })),
        };
        let s = futures::stream::iter([Ok(first)]).chain(futures::stream::pending());
        Ok(tonic::Response::new(Box::pin(s)))
    }

    async fn get_profile(
        &self,
        _: tonic::Request<pb::GetDestination>,
    ) -> Result<tonic::Response<Self::GetProfileStream>, tonic::Status> {
        Err(tonic::Status::not_found("no profiles"))
    }
}

use futures::StreamExt;

async fn serve_app() -> anyhow::Result<SocketAddr> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        Bytes::from_static(b"hello"),
                    )))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

struct Latencies {
    us: Vec<u64>,
    errors: usize,
}

impl Latencies {
    fn pct(&self, p: f64) -> f64 {
        if self.us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.us.len() as f64 - 1.0) * p).round() as usize;
        self.us[i.min(self.us.len() - 1)] as f64 / 1000.0
    }
}

/// Open-loop load: one request every 1/RATE s for `dur`, latencies in µs.
async fn run_load(target: SocketAddr, dur: Duration) -> Latencies {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(http);
    let uri: hyper::Uri = match format!("http://{target}/").parse() {
        Ok(u) => u,
        Err(_) => {
            return Latencies {
                us: Vec::new(),
                errors: 1,
            };
        }
    };
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let n = (dur.as_millis() as u64 * RATE / 1000) as usize;
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        tick.tick().await;
        let (client, uri) = (client.clone(), uri.clone());
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            let req = hyper::Request::get(uri).body(Empty::new()).ok()?;
            let rsp = tokio::time::timeout(Duration::from_secs(5), client.request(req))
                .await
                .ok()?
                .ok()?;
            if !rsp.status().is_success() {
                return None;
            }
            rsp.into_body().collect().await.ok()?;
            Some(start.elapsed().as_micros() as u64)
        }));
    }
    let mut us = Vec::with_capacity(n);
    let mut errors = 0;
    for t in tasks {
        match t.await {
            Ok(Some(v)) => us.push(v),
            _ => errors += 1,
        }
    }
    us.sort_unstable();
    Latencies { us, errors }
}

async fn bench(dur: Duration) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let now = SystemTime::now();
    let anchor = strait_tls::Issuer::generate_anchor(
        "cluster.local",
        strait_tls::DEFAULT_ANCHOR_LIFETIME,
        now,
    )?;
    let issuer = anchor.generate_issuer(
        "identity.strait.cluster.local",
        strait_tls::DEFAULT_ISSUER_LIFETIME,
        now,
    )?;
    let server_id: Identity = "web.bench.serviceaccount.identity.strait.cluster.local".parse()?;
    let client_id: Identity =
        "client.bench.serviceaccount.identity.strait.cluster.local".parse()?;
    write_creds(&tmp.path().join("server"), &anchor, &issuer, &server_id)?;
    write_creds(&tmp.path().join("client"), &anchor, &issuer, &client_id)?;

    let app = serve_app().await?;
    let inbound = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let dst_l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let dst_addr = dst_l.local_addr()?;
    let svc = DestinationServer::new(OneEndpoint {
        addr: inbound,
        identity: server_id.to_string(),
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(dst_l)),
    );

    let loopback = |p: u16| SocketAddr::from(([127, 0, 0, 1], p)).to_string();
    let server = spawn_proxy(
        &tmp.path().join("server"),
        &[
            ("STRAIT_PROXY_INBOUND_LISTEN_ADDR", inbound.to_string()),
            ("STRAIT_PROXY_INBOUND_TARGET", app.to_string()),
            ("STRAIT_PROXY_OUTBOUND_LISTEN_ADDR", loopback(free_port()?)),
        ],
    )
    .await?;
    let outbound = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let client = spawn_proxy(
        &tmp.path().join("client"),
        &[
            ("STRAIT_PROXY_OUTBOUND_LISTEN_ADDR", outbound.to_string()),
            ("STRAIT_PROXY_OUTBOUND_TARGET", inbound.to_string()),
            ("STRAIT_PROXY_INBOUND_LISTEN_ADDR", loopback(free_port()?)),
            ("STRAIT_PROXY_DESTINATION_ADDR", dst_addr.to_string()),
        ],
    )
    .await?;
    let (idle_c, idle_s) = (client.rss_kb(), server.rss_kb());

    // Warm up both paths (connections, discovery).
    let _ = run_load(app, Duration::from_millis(500)).await;
    let _ = run_load(outbound, Duration::from_millis(500)).await;

    let direct = run_load(app, dur).await;
    let proxied = run_load(outbound, dur).await;
    println!(
        "{} s per phase at {RATE} req/s, HTTP/1.1 keep-alive, loopback",
        dur.as_secs()
    );
    println!(
        "{:<10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7}",
        "path", "p50 ms", "p90 ms", "p99 ms", "p99.9", "max ms", "errors"
    );
    for (name, l) in [("direct", &direct), ("proxy pair", &proxied)] {
        println!(
            "{:<10} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>7}",
            name,
            l.pct(0.5),
            l.pct(0.9),
            l.pct(0.99),
            l.pct(0.999),
            l.pct(1.0),
            l.errors
        );
    }
    println!(
        "added by the proxy pair: p50 {:.3} ms, p99 {:.3} ms",
        proxied.pct(0.5) - direct.pct(0.5),
        proxied.pct(0.99) - direct.pct(0.99)
    );

    // Memory with 1,000 idle keep-alive client connections on the client proxy's outbound.
    let busy_before = (client.rss_kb(), server.rss_kb());
    let mut conns = Vec::with_capacity(IDLE_CONNS);
    for _ in 0..IDLE_CONNS {
        let mut s = tokio::net::TcpStream::connect(outbound).await?;
        s.write_all(b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n")
            .await?;
        let mut buf = [0u8; 512];
        tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await??;
        conns.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (held_c, held_s) = (client.rss_kb(), server.rss_kb());
    println!("RSS idle (just started): client proxy {idle_c} kB, server proxy {idle_s} kB");
    println!(
        "RSS after the load: client proxy {} kB, server proxy {} kB",
        busy_before.0, busy_before.1
    );
    println!(
        "RSS with {IDLE_CONNS} idle connections: client proxy {held_c} kB (+{} kB), server proxy {held_s} kB (+{} kB)",
        held_c.saturating_sub(busy_before.0),
        held_s.saturating_sub(busy_before.1)
    );
    drop(conns);
    let _ = (&client.admin, &server.admin);
    Ok(())
}
