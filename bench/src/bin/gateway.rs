//! Gateway throughput and new mTLS connections per second, beside direct connections in the
//! same run, all on loopback.
//!
//! ```text
//! cargo run --release -p strait-bench --bin gateway [-- <MiB per throughput run, default 256>]
//! ```
//!
//! Paths measured, each against the same in-process sink (reads to EOF, answers `done`):
//! - `direct tcp`: client ─TCP─► sink
//! - `direct mtls`: client ─mTLS─► TLS-terminating sink (the cost of encryption alone)
//! - `gateway`: client ─mTLS + ALPN + transport header─► gateway ─TCP─► sink (the gateway's
//!   real listener, authz and forwarding; its resolver answers from memory, so destination
//!   lookups are not in the numbers)
//!
//! Throughput: 1 and 8 concurrent streams sharing the total. Connections: sequential
//! open → 1 byte → `done` → close, for a fixed count. Bounded: at most 4 GiB, 2,000
//! connections, 120 s per measurement.

use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use strait_core::identity::Identity;
use strait_core::transport_header::{ALPN, TransportHeader};
use strait_gateway::{Gateway, GatewayConfig};
use strait_proxy::addr::EndpointAddr;
use strait_proxy::connect::Connector;
use strait_proxy::discover::{EndpointMeta, EndpointSet, Resolution, Resolver};
use strait_tls::rustls::{ClientConfig, ServerConfig};
use strait_tls::{ClientAuth, Credentials, Issuer, TrustAnchors};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const GW: &str = "strait-gateway.strait-multicluster.serviceaccount.identity.strait.cluster.local";
const CLIENT: &str = "frontend.shop.serviceaccount.identity.strait.cluster.local";
const SINK_ID: &str = "sink.bench.serviceaccount.identity.strait.cluster.local";
const BOUND: Duration = Duration::from_secs(120);
const CONNECTIONS: usize = 500;

/// Every target resolves to the one unmeshed sink.
fn fixed_resolver(addr: SocketAddr) -> Resolver {
    let meta = EndpointMeta {
        identity: None,
        h2: false,
        opaque_transport: None,
        authority_override: None,
    };
    let set = EndpointSet {
        endpoints: [(EndpointAddr(addr), meta)].into_iter().collect(),
        ..EndpointSet::default()
    };
    Resolver::fixed(Resolution::Endpoints(Arc::new(set)))
}

fn creds(issuer: &Issuer, id: &str) -> anyhow::Result<Credentials> {
    let id: Identity = id.parse()?;
    let req = strait_tls::generate_csr(&id)?;
    let leaf = issuer.issue(
        &req.csr,
        &id,
        strait_tls::DEFAULT_LEAF_LIFETIME,
        SystemTime::now(),
    )?;
    Ok(Credentials::new(id, leaf.chain(), req.key)?)
}

/// Reads to EOF, then answers `done`.
async fn sink<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    while s.read(&mut buf).await? > 0 {}
    s.write_all(b"done").await?;
    s.shutdown().await
}

async fn serve_sink(listener: TcpListener, tls: Option<Arc<ServerConfig>>) {
    loop {
        let Ok((s, _)) = listener.accept().await else {
            continue;
        };
        let _ = s.set_nodelay(true);
        let tls = tls.clone();
        tokio::spawn(async move {
            let _ = match tls {
                Some(cfg) => match strait_tls::accept(cfg, s).await {
                    Ok(t) => sink(t).await,
                    Err(_) => Ok(()),
                },
                None => sink(s).await,
            };
        });
    }
}

#[derive(Clone, Copy, Debug)]
enum Path {
    DirectTcp,
    DirectMtls,
    Gateway,
}

#[derive(Clone)]
struct Setup {
    sink: SocketAddr,
    tls_sink: SocketAddr,
    gateway: SocketAddr,
    client: Arc<ClientConfig>,
    client_plain_alpn: Arc<ClientConfig>,
    header: Vec<u8>,
}

impl Setup {
    /// Opens a stream on `path`, sends `bytes` bytes, half-closes and waits for `done`.
    async fn transfer(&self, path: Path, bytes: usize) -> anyhow::Result<()> {
        let chunk = vec![0x5au8; 64 * 1024];
        match path {
            Path::DirectTcp => {
                let s = TcpStream::connect(self.sink).await?;
                s.set_nodelay(true)?;
                send(s, &chunk, bytes, &[]).await
            }
            Path::DirectMtls => {
                let s = TcpStream::connect(self.tls_sink).await?;
                s.set_nodelay(true)?;
                let t = strait_tls::connect(self.client_plain_alpn.clone(), &SINK_ID.parse()?, s)
                    .await?;
                send(t, &chunk, bytes, &[]).await
            }
            Path::Gateway => {
                let s = TcpStream::connect(self.gateway).await?;
                s.set_nodelay(true)?;
                let t = strait_tls::connect(self.client.clone(), &GW.parse()?, s).await?;
                send(t, &chunk, bytes, &self.header).await
            }
        }
    }
}

async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    chunk: &[u8],
    mut bytes: usize,
    first: &[u8],
) -> anyhow::Result<()> {
    if !first.is_empty() {
        s.write_all(first).await?;
    }
    while bytes > 0 {
        let n = bytes.min(chunk.len());
        s.write_all(&chunk[..n]).await?;
        bytes -= n;
    }
    s.shutdown().await?;
    let mut ack = Vec::new();
    s.read_to_end(&mut ack).await?;
    if ack != b"done" {
        bail!("the sink answered {ack:?}");
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mib: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()
        .context("the argument is MiB per throughput run")?
        .unwrap_or(256)
        .clamp(1, 4096);
    let total = mib * 1024 * 1024;

    let now = SystemTime::now();
    let anchor =
        Issuer::generate_anchor("cluster.local", strait_tls::DEFAULT_ANCHOR_LIFETIME, now)?;
    let issuer = anchor.generate_issuer(
        "identity.strait.cluster.local",
        strait_tls::DEFAULT_ISSUER_LIFETIME,
        now,
    )?;
    let anchors: TrustAnchors = anchor.as_anchors()?;
    let (_c, client_rx) = strait_tls::credentials_channel(Some(creds(&issuer, CLIENT)?));
    let client = strait_tls::client_config(&anchors, client_rx.clone(), &[ALPN])?;
    let client_plain_alpn = strait_tls::client_config(&anchors, client_rx, &[])?;

    let sink_l = TcpListener::bind("127.0.0.1:0").await?;
    let sink_addr = sink_l.local_addr()?;
    tokio::spawn(serve_sink(sink_l, None));
    let (_s, sink_rx) = strait_tls::credentials_channel(Some(creds(&issuer, SINK_ID)?));
    let tls_sink_cfg = strait_tls::server_config(&anchors, sink_rx, ClientAuth::Required, &[])?;
    let tls_sink_l = TcpListener::bind("127.0.0.1:0").await?;
    let tls_sink = tls_sink_l.local_addr()?;
    tokio::spawn(serve_sink(tls_sink_l, Some(tls_sink_cfg)));

    let (_g, gw_rx) = strait_tls::credentials_channel(Some(creds(&issuer, GW)?));
    let tls = strait_gateway::tls_configs(&anchors, gw_rx.clone())?;
    let gateway = Gateway::new(
        GatewayConfig {
            identity: GW.parse()?,
            cluster_domain: "cluster.local".into(),
            forbid_plaintext: false,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            resolve_timeout: Duration::from_secs(5),
        },
        tls.server,
        strait_gateway::authz::fixed(strait_gateway::authz::Policy::AllowAll),
        fixed_resolver(sink_addr),
        Connector::new(&anchors, gw_rx, Duration::from_secs(5))?,
        strait_gateway::Metrics::default(),
    );
    let gw_l = TcpListener::bind("127.0.0.1:0").await?;
    let gw_addr = gw_l.local_addr()?;
    let stop = CancellationToken::new();
    let gw_task = {
        let stop = stop.clone();
        tokio::spawn(async move { gateway.serve(gw_l, stop, Duration::from_secs(5)).await })
    };

    let setup = Setup {
        sink: sink_addr,
        tls_sink,
        gateway: gw_addr,
        client,
        client_plain_alpn,
        header: TransportHeader {
            port: sink_addr.port(),
            name: Some("sink.bench.svc.cluster.local".into()),
            protocol: None,
        }
        .encode(),
    };

    println!(
        "gateway bench: {mib} MiB per throughput run, {CONNECTIONS} connections per rate run, loopback"
    );
    println!(
        "{:<12} {:>14} {:>14} {:>16}",
        "path", "1 stream MiB/s", "8 streams MiB/s", "new conns/s"
    );
    for path in [Path::DirectTcp, Path::DirectMtls, Path::Gateway] {
        // Warm up once.
        setup.transfer(path, 1024 * 1024).await?;
        let one = throughput(&setup, path, total, 1).await?;
        let eight = throughput(&setup, path, total, 8).await?;
        let rate = connection_rate(&setup, path).await?;
        println!(
            "{:<12} {:>14.0} {:>14.0} {:>16.0}",
            format!("{path:?}"),
            one,
            eight,
            rate
        );
    }
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), gw_task).await;
    Ok(())
}

async fn throughput(
    setup: &Setup,
    path: Path,
    total: usize,
    streams: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let per = total / streams;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..streams {
        let s = setup.clone();
        tasks.spawn(async move { s.transfer(path, per).await });
    }
    tokio::time::timeout(BOUND, async {
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        Ok::<_, anyhow::Error>(())
    })
    .await
    .context("throughput run exceeded its bound")??;
    Ok((per * streams) as f64 / (1024.0 * 1024.0) / started.elapsed().as_secs_f64())
}

async fn connection_rate(setup: &Setup, path: Path) -> anyhow::Result<f64> {
    let started = Instant::now();
    tokio::time::timeout(BOUND, async {
        for _ in 0..CONNECTIONS {
            setup.transfer(path, 1).await?;
        }
        Ok::<_, anyhow::Error>(())
    })
    .await
    .context("connection run exceeded its bound")??;
    Ok(CONNECTIONS as f64 / started.elapsed().as_secs_f64())
}
