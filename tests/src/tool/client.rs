//! The clients: one GET, a bounded load over keep-alive connections, and one TCP exchange.

use super::{BoxError, CONNECT_TIMEOUT, REQUEST_TIMEOUT, grpc};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const GRPC_PATH: &str = "/strait.sample.Hello/Say";

/// How `load` talks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    H1,
    H2,
    Grpc,
}

impl Mode {
    pub fn parse(s: &str) -> Result<Self, BoxError> {
        match s {
            "h1" => Ok(Self::H1),
            "h2" => Ok(Self::H2),
            "grpc" => Ok(Self::Grpc),
            _ => Err(format!("the mode is h1, h2 or grpc, not {s:?}").into()),
        }
    }
}

/// What `load` prints, as one JSON line.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct LoadReport {
    pub sent: usize,
    pub ok: usize,
    pub failed: usize,
    /// Milliseconds, of the successful requests.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Successful answers by body (a gRPC answer by its message).
    pub by_body: BTreeMap<String, usize>,
    /// Successful answers by the pod that gave them (`pod=…` or `hello from …`).
    pub pods: BTreeMap<String, usize>,
    /// Answers by HTTP status; `error` or `timeout` where none came.
    pub statuses: BTreeMap<String, usize>,
    /// Failures by what went wrong.
    pub errors: BTreeMap<String, usize>,
}

impl LoadReport {
    fn record(&mut self, result: Result<(Duration, String), (String, String)>) {
        match result {
            Ok((_, body)) => {
                self.ok += 1;
                *self.statuses.entry("200".into()).or_default() += 1;
                if let Some(pod) = answered_by(&body) {
                    *self.pods.entry(pod.to_owned()).or_default() += 1;
                }
                *self.by_body.entry(body).or_default() += 1;
            }
            Err((status, error)) => {
                self.failed += 1;
                *self.statuses.entry(status).or_default() += 1;
                *self.errors.entry(error).or_default() += 1;
            }
        }
    }
}

/// The pod named in a sample server's answer.
fn answered_by(body: &str) -> Option<&str> {
    body.split_whitespace()
        .find_map(|w| w.strip_prefix("pod="))
        .or_else(|| body.strip_prefix("hello from "))
        .map(str::trim)
}

async fn connect(addr: &str) -> Result<tokio::net::TcpStream, BoxError> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connect {addr}: timed out"))?
        .map_err(|e| format!("connect {addr}: {e}"))?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// One GET on a new connection (`connection: close`); prints the body of a 200.
pub async fn get(addr: &str, path: &str) -> Result<(), BoxError> {
    let mut tcp = connect(addr).await?;
    let exchange = async {
        tcp.write_all(
            format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut rsp = Vec::new();
        tcp.read_to_end(&mut rsp).await?;
        Ok::<_, BoxError>(rsp)
    };
    let rsp = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| "read: timed out")??;
    let rsp = String::from_utf8_lossy(&rsp);
    let (head, body) = rsp.split_once("\r\n\r\n").ok_or("no HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("unexpected response: {head}").into());
    }
    // A chunked body (an HTTP/2 answer relayed as HTTP/1.1) is read as its one chunk.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body.split("\r\n").nth(1).unwrap_or_default()
    } else {
        body
    };
    print!("{body}");
    Ok(())
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// `n` requests over `conc` connections, each reconnecting after a failure.
pub async fn load(addr: &str, n: usize, conc: usize, mode: Mode) -> Result<(), BoxError> {
    let left = Arc::new(Mutex::new(n));
    let report = Arc::new(Mutex::new(LoadReport {
        sent: n,
        ..LoadReport::default()
    }));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let mut workers = Vec::new();
    for _ in 0..conc.min(n.max(1)) {
        let (left, report, latencies, addr) = (
            left.clone(),
            report.clone(),
            latencies.clone(),
            addr.to_owned(),
        );
        workers.push(tokio::spawn(async move {
            let mut sender: Option<Sender> = None;
            loop {
                match left.lock() {
                    Ok(mut l) if *l > 0 => *l -= 1,
                    _ => return,
                }
                let started = Instant::now();
                let result = match tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    one(&addr, mode, &mut sender),
                )
                .await
                {
                    Ok(Ok(body)) => Ok((started.elapsed(), body)),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(("timeout".to_owned(), "timeout".to_owned())),
                };
                if result.is_err() {
                    sender = None;
                }
                if let Ok((took, _)) = &result
                    && let Ok(mut l) = latencies.lock()
                {
                    l.push(*took);
                }
                if let Ok(mut r) = report.lock() {
                    r.record(result);
                }
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let mut report = std::mem::take(&mut *report.lock().map_err(|_| "a worker panicked")?);
    let mut latencies = std::mem::take(&mut *latencies.lock().map_err(|_| "a worker panicked")?);
    latencies.sort();
    let pct = |q: f64| {
        let i = ((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1);
        latencies.get(i).map(|d| d.as_secs_f64() * 1000.0)
    };
    (report.p50_ms, report.p99_ms) = (pct(0.5), pct(0.99));
    println!("{}", serde_json::to_string(&report)?);
    if report.failed > 0 {
        return Err(format!("{} of {n} requests failed", report.failed).into());
    }
    Ok(())
}

/// One request on the worker's connection (made first if there is none): the body of a
/// success, or (status, error).
async fn one(
    addr: &str,
    mode: Mode,
    sender: &mut Option<Sender>,
) -> Result<String, (String, String)> {
    let failed = |e: BoxError| ("error".to_owned(), e.to_string());
    // A connection the server has closed (after `connection: close`, or idle) is no failed
    // request: make a new one.
    let open = match sender.as_mut() {
        Some(Sender::H1(s)) => s.ready().await.is_ok(),
        Some(Sender::H2(s)) => s.ready().await.is_ok(),
        None => false,
    };
    if !open {
        *sender = None;
    }
    if sender.is_none() {
        let io = TokioIo::new(connect(addr).await.map_err(failed)?);
        *sender = Some(if mode == Mode::H1 {
            let (s, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| failed(e.into()))?;
            tokio::spawn(conn);
            Sender::H1(s)
        } else {
            let (s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| failed(e.into()))?;
            tokio::spawn(conn);
            Sender::H2(s)
        });
    }
    let req = match mode {
        Mode::Grpc => http::Request::post(format!("http://{addr}{GRPC_PATH}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(grpc::frame("hi"))),
        Mode::H1 => http::Request::get("/")
            .header("host", addr)
            .body(Full::new(Bytes::new())),
        Mode::H2 => http::Request::get(format!("http://{addr}/")).body(Full::new(Bytes::new())),
    }
    .map_err(|e| failed(e.into()))?;
    let rsp = match sender.as_mut() {
        Some(Sender::H1(s)) => {
            s.ready().await.map_err(|e| failed(e.into()))?;
            s.send_request(req).await
        }
        Some(Sender::H2(s)) => {
            s.ready().await.map_err(|e| failed(e.into()))?;
            s.send_request(req).await
        }
        None => return Err(failed("no connection".into())),
    }
    .map_err(|e| failed(e.into()))?;
    let status = rsp.status();
    // The server closes this connection after its answer: the next request needs another
    // (waiting for hyper to notice would race it).
    if rsp
        .headers()
        .get(http::header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
    {
        *sender = None;
    }
    let collected = rsp
        .into_body()
        .collect()
        .await
        .map_err(|e| failed(e.into()))?;
    let grpc_status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .map(|v| v.to_str().unwrap_or("?").to_owned());
    let body = collected.to_bytes();
    if !status.is_success() {
        return Err((status.as_u16().to_string(), format!("status {status}")));
    }
    if mode == Mode::Grpc {
        if grpc_status.as_deref() != Some("0") {
            return Err(("200".into(), format!("grpc-status {grpc_status:?}")));
        }
        return grpc::unframe(body).ok_or_else(|| ("200".into(), "malformed gRPC message".into()));
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Sends `msg`, half-closes, prints what comes back.
pub async fn tcp(addr: &str, msg: &str) -> Result<(), BoxError> {
    let mut s = connect(addr).await?;
    s.write_all(msg.as_bytes()).await?;
    s.shutdown().await?;
    let mut out = String::new();
    tokio::time::timeout(REQUEST_TIMEOUT, s.read_to_string(&mut out))
        .await
        .map_err(|_| "read: timed out")??;
    print!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_counts_pods_statuses_and_errors() {
        let mut r = LoadReport::default();
        r.record(Ok((Duration::from_millis(1), "hello from web-1".into())));
        r.record(Ok((
            Duration::from_millis(2),
            "pod=web-2 version=HTTP/2.0 host=x forwarded=".into(),
        )));
        r.record(Err(("503".into(), "status 503 Service Unavailable".into())));
        assert_eq!((r.ok, r.failed), (2, 1));
        assert_eq!(r.pods.get("web-1"), Some(&1));
        assert_eq!(r.pods.get("web-2"), Some(&1));
        assert_eq!(r.statuses.get("200"), Some(&2));
        assert_eq!(r.statuses.get("503"), Some(&1));
        assert_eq!(r.by_body.get("hello from web-1"), Some(&1));
    }

    #[test]
    fn modes_are_named() {
        assert_eq!(Mode::parse("grpc").ok(), Some(Mode::Grpc));
        assert!(Mode::parse("h3").is_err());
    }
}
