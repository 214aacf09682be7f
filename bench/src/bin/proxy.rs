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
//! Everything runs on loopback in explicit mode (no iptables), the pair as
//! [`strait_bench::pair`] starts it; each proxy is this binary re-executed, so its RSS is its
//! own.
//! Bounded: at most 60 s per phase, 1,000 req/s, 1,000 idle connections.

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use strait_bench::pair;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RATE: u64 = 1000;
const IDLE_CONNS: usize = 1000;

fn main() -> anyhow::Result<()> {
    if let Some(proxy) = pair::run_as_proxy_if_asked() {
        return proxy;
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
    let pki = pair::Pki::write(tmp.path())?;
    let app = serve_app().await?;
    let pair::Pair {
        outbound,
        client,
        server,
        ..
    } = pair::Pair::start(&pki, app, None).await?;
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
    Ok(())
}
