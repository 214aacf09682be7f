//! The programs the lab runs inside pods, as one command line (`<tool> <subcommand> …`):
//!
//! - `serve <port>`: HTTP/1.1 and HTTP/2 (prior knowledge) on one port. A plain request gets
//!   `hello from <POD_NAME>`; a gRPC request (`content-type: application/grpc`) gets that
//!   text as one length-prefixed message (protobuf `string message = 1`) and the trailer
//!   `grpc-status: 0`.
//! - `echo <port>`: raw TCP; reads until the peer half-closes, answers `<POD_NAME>: <bytes>`.
//! - `http <ip:port> <requests> <h1|h2|grpc>`: sequential requests on one keep-alive client;
//!   prints `{"ok":…,"failed":…,"by_body":{…},"errors":{…}}` and exits 1 if any failed.
//! - `tcp <ip:port> <message>`: sends the message, half-closes, prints the answer.
//!
//! Every network wait is bounded (5 s connect, 10 s per request).

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const GRPC_PATH: &str = "/strait.lab.Hello/Say";

/// Runs the tool with `args` (without the program name); returns the process exit code.
pub async fn run(args: Vec<String>) -> i32 {
    let a = |i: usize| args.get(i).cloned().unwrap_or_default();
    let res = match a(0).as_str() {
        "serve" => serve(&a(1)).await,
        "echo" => echo(&a(1)).await,
        "http" => http(&a(1), a(2).parse().unwrap_or(1), &a(3)).await,
        "tcp" => tcp(&a(1), &a(2)).await,
        _ => Err(
            "usage: serve <port> | echo <port> | http <addr> <n> <h1|h2|grpc> | tcp <addr> <msg>"
                .into(),
        ),
    };
    match res {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("lab tool: {e}");
            1
        }
    }
}

/// The tool as a whole program (for a thin `main`).
pub fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(run(args)),
        Err(e) => {
            eprintln!("lab tool: {e}");
            1
        }
    };
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn pod_name() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| "unknown".into())
}

/// One protobuf `string message = 1` in a gRPC length-prefixed frame.
pub fn grpc_frame(message: &str) -> Bytes {
    let mut pb = vec![0x0a];
    let mut len = message.len();
    while len >= 0x80 {
        pb.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    pb.push(len as u8);
    pb.extend_from_slice(message.as_bytes());
    let mut out = vec![0u8];
    out.extend_from_slice(&u32::try_from(pb.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&pb);
    Bytes::from(out)
}

/// The message of one frame made by [`grpc_frame`].
pub fn grpc_unframe(mut b: Bytes) -> Option<String> {
    if b.len() < 5 || b[0] != 0 {
        return None;
    }
    b.advance(5);
    if b.first() != Some(&0x0a) {
        return None;
    }
    b.advance(1);
    // The string's length, a protobuf varint.
    let mut len = 0usize;
    for shift in (0..35).step_by(7) {
        let byte = *b.first()?;
        b.advance(1);
        len |= usize::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            let msg = b.get(..len)?;
            return String::from_utf8(msg.to_vec()).ok();
        }
    }
    None
}

async fn serve(port: &str) -> Result<(), BoxError> {
    let l = tokio::net::TcpListener::bind(format!("0.0.0.0:{port}")).await?;
    let text = format!("hello from {}", pod_name());
    loop {
        let (tcp, _) = l.accept().await?;
        let text = text.clone();
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let grpc = req
                        .headers()
                        .get(http::header::CONTENT_TYPE)
                        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
                    let text = text.clone();
                    async move {
                        let _ = req.into_body().collect().await;
                        let rsp = if grpc {
                            let mut trailers = http::HeaderMap::new();
                            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                            let body = Full::new(grpc_frame(&text))
                                .with_trailers(async move { Some(Ok(trailers)) })
                                .boxed();
                            let mut rsp = hyper::Response::new(body);
                            rsp.headers_mut().insert(
                                http::header::CONTENT_TYPE,
                                http::HeaderValue::from_static("application/grpc"),
                            );
                            rsp
                        } else {
                            hyper::Response::new(Full::new(Bytes::from(text)).boxed())
                        };
                        Ok::<_, std::convert::Infallible>(rsp)
                    }
                });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

async fn echo(port: &str) -> Result<(), BoxError> {
    let l = tokio::net::TcpListener::bind(format!("0.0.0.0:{port}")).await?;
    let name = pod_name();
    loop {
        let (mut tcp, _) = l.accept().await?;
        let name = name.clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            let mut limited = (&mut tcp).take(64 * 1024);
            let read = tokio::time::timeout(Duration::from_secs(10), limited.read_to_end(&mut got));
            if let Ok(Ok(_)) = read.await {
                let _ = tcp.write_all(format!("{name}: ").as_bytes()).await;
                let _ = tcp.write_all(&got).await;
                let _ = tcp.shutdown().await;
            }
        });
    }
}

async fn connect(addr: &str) -> Result<tokio::net::TcpStream, BoxError> {
    let tcp = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await??;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

async fn http(addr: &str, n: usize, mode: &str) -> Result<(), BoxError> {
    enum Sender {
        H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
        H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
    }
    let mut by_body = BTreeMap::<String, usize>::new();
    let mut errors = BTreeMap::<String, usize>::new();
    let mut sender: Option<Sender> = None;
    for _ in 0..n {
        let one = async {
            if sender.is_none() {
                let io = TokioIo::new(connect(addr).await?);
                sender = Some(if mode == "h1" {
                    let (s, conn) = hyper::client::conn::http1::handshake(io).await?;
                    tokio::spawn(conn);
                    Sender::H1(s)
                } else {
                    let (s, conn) =
                        hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
                    tokio::spawn(conn);
                    Sender::H2(s)
                });
            }
            let mut req = if mode == "grpc" {
                http::Request::post(format!("http://{addr}{GRPC_PATH}"))
                    .header("content-type", "application/grpc")
                    .header("te", "trailers")
                    .body(Full::new(grpc_frame("hi")))?
            } else {
                http::Request::get(format!("http://{addr}/")).body(Full::new(Bytes::new()))?
            };
            let rsp = match sender.as_mut() {
                Some(Sender::H1(s)) => {
                    *req.uri_mut() = "/".parse()?;
                    req.headers_mut().insert("host", addr.parse()?);
                    s.ready().await?;
                    s.send_request(req).await?
                }
                Some(Sender::H2(s)) => {
                    s.ready().await?;
                    s.send_request(req).await?
                }
                None => return Err::<String, BoxError>("no connection".into()),
            };
            let status = rsp.status();
            let collected = rsp.into_body().collect().await?;
            let grpc_status = collected
                .trailers()
                .and_then(|t| t.get("grpc-status"))
                .map(|v| v.to_str().unwrap_or("?").to_owned());
            let body = collected.to_bytes();
            if !status.is_success() {
                return Err(format!("status {status}").into());
            }
            if mode == "grpc" {
                if grpc_status.as_deref() != Some("0") {
                    return Err(format!("grpc-status {grpc_status:?}").into());
                }
                return grpc_unframe(body).ok_or_else(|| "malformed gRPC message".into());
            }
            Ok(String::from_utf8_lossy(&body).into_owned())
        };
        match tokio::time::timeout(Duration::from_secs(10), one).await {
            Ok(Ok(body)) => *by_body.entry(body).or_default() += 1,
            Ok(Err(e)) => {
                sender = None;
                *errors.entry(e.to_string()).or_default() += 1;
            }
            Err(_) => {
                sender = None;
                *errors.entry("timeout".into()).or_default() += 1;
            }
        }
    }
    let ok: usize = by_body.values().sum();
    println!(
        "{}",
        serde_json::json!({"ok": ok, "failed": n - ok, "by_body": by_body, "errors": errors})
    );
    if ok != n {
        return Err(format!("{} of {n} requests failed", n - ok).into());
    }
    Ok(())
}

async fn tcp(addr: &str, msg: &str) -> Result<(), BoxError> {
    let mut s = connect(addr).await?;
    s.write_all(msg.as_bytes()).await?;
    s.shutdown().await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out)).await??;
    print!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn grpc_frame_round_trip() {
        let f = grpc_frame("hello from web-1");
        assert_eq!(f[0], 0);
        assert_eq!(grpc_unframe(f).as_deref(), Some("hello from web-1"));
        assert_eq!(
            grpc_unframe(Bytes::from_static(b"\x01\0\0\0\x02\x0a\0")),
            None
        );
        let long = "pod=greeter-6d8f9c7b5-x2k4q version=HTTP/2.0 host=greeter-east.shop.svc.cluster.local:8080 forwarded=for=198.18.0.1";
        assert!(long.len() > 127, "a two-byte length");
        assert_eq!(grpc_unframe(grpc_frame(long)).as_deref(), Some(long));
        assert_eq!(
            grpc_unframe(Bytes::from_static(b"\0\0\0\0\x03\x0a\x05ab")),
            None
        );
    }
}
