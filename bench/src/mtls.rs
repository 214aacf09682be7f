//! An mTLS load client for the benchmarks that need one no field tool provides with client
//! certificates and exact-identity verification: new mTLS connections per second at a
//! server-side proxy, and the memory a proxy holds per open mTLS connection.
//!
//! Every connection is a full TLS 1.3 handshake (no resumption, as Strait's proxies never
//! resume), presenting the client side's certificate and accepting only the server
//! side's identity.

use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use strait_core::identity::Identity;
use strait_tls::rustls::ClientConfig;
use strait_tls::{Credentials, TrustAnchors};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// One request, answered with an empty body by `fortio server` (`?size=0`).
const REQUEST: &[u8] = b"GET /?size=0 HTTP/1.1\r\nHost: bench\r\n\r\n";
const CLOSE: &[u8] = b"GET /?size=0 HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";
/// How long one exchange may take before it counts as failed.
const EXCHANGE: Duration = Duration::from_secs(5);

/// A client of the side whose `ca.crt`, `tls.crt` and `tls.key` are in `dir`. It offers no
/// ALPN, as a meshed client of plain HTTP does (Strait's inbound refuses a protocol it does
/// not speak; the peers default to HTTP/1.1).
pub fn client(dir: &Path) -> anyhow::Result<Arc<ClientConfig>> {
    let anchors = TrustAnchors::from_pem(&std::fs::read(dir.join("ca.crt"))?, "ca.crt")?;
    let creds = Credentials::from_pem_files(&dir.join("tls.crt"), &dir.join("tls.key"))?;
    let (keep, rx) = strait_tls::credentials_channel(Some(creds));
    // The sender lives as long as the process: the client's certificate never changes here.
    std::mem::forget(keep);
    Ok(strait_tls::client_config(&anchors, rx, &[])?)
}

async fn handshake(
    cfg: &Arc<ClientConfig>,
    server: &Identity,
    addr: SocketAddr,
) -> anyhow::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    Ok(strait_tls::connect(cfg.clone(), server, tcp).await?)
}

/// Sends `req` and reads the answer's head (the body is empty); whether it was a 200.
async fn exchange(tls: &mut TlsStream<TcpStream>, req: &[u8]) -> anyhow::Result<()> {
    tls.write_all(req).await?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tls.read(&mut chunk).await?;
        if n == 0 {
            bail!("closed before the answer's head");
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 16 * 1024 {
            bail!("an answer head over 16 KiB");
        }
    }
    if !buf.starts_with(b"HTTP/1.1 200") {
        bail!(
            "answered {:?}",
            String::from_utf8_lossy(&buf[..buf.len().min(40)])
        );
    }
    Ok(())
}

/// New connections, each a handshake, one request and a close, by `workers` loops for
/// `secs`: (completed, failed).
pub async fn connection_rate(
    cfg: Arc<ClientConfig>,
    server: Identity,
    addr: SocketAddr,
    secs: u64,
    workers: usize,
) -> (u64, u64) {
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (cfg, server, ok, failed) = (cfg.clone(), server.clone(), ok.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let one = async {
                    let mut tls = handshake(&cfg, &server, addr).await?;
                    exchange(&mut tls, CLOSE).await?;
                    let _ = tls.shutdown().await;
                    anyhow::Ok(())
                };
                match tokio::time::timeout(EXCHANGE, one).await {
                    Ok(Ok(())) => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed))
}

/// `n` mTLS connections to `addr`, handshaken and held open; with `active`, each has also
/// carried one request through to the upstream and stays open (keep-alive) after it.
pub async fn hold(
    cfg: &Arc<ClientConfig>,
    server: &Identity,
    addr: SocketAddr,
    n: usize,
    active: bool,
) -> anyhow::Result<Vec<TlsStream<TcpStream>>> {
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let one = async {
            let mut tls = handshake(cfg, server, addr).await?;
            if active {
                exchange(&mut tls, REQUEST).await?;
            }
            anyhow::Ok(tls)
        };
        let tls = tokio::time::timeout(EXCHANGE, one)
            .await
            .map_err(|_| anyhow::anyhow!("timed out"))
            .and_then(|r| r)
            .with_context(|| format!("connection {i} of {n} to {addr}"))?;
        held.push(tls);
    }
    Ok(held)
}

/// Raises this process's open-file limit to its hard limit (the proxies it starts inherit
/// it), so a thousand held connections on each side fit.
pub fn raise_nofile() -> anyhow::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit")?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("setrlimit")?;
    Ok(hard)
}
