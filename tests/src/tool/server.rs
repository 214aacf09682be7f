//! The servers: HTTP (HTTP/1.1, HTTP/2 with prior knowledge, and gRPC on one port) and TCP.

use super::{BoxError, REQUEST_TIMEOUT, grpc, pod_name};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// What the HTTP server answers.
#[derive(Clone, Copy, Debug)]
pub enum Answer {
    /// `hello from POD`, after `delay`.
    Hello { delay: Duration },
    /// `pod=POD version=V host=HOST forwarded=FORWARDED`: what the request looked like on
    /// arrival.
    Echo,
}

/// The most a TCP server reads from one connection before it answers.
const TCP_READ_LIMIT: u64 = 64 * 1024;

async fn listen(port: u16, what: &str) -> Result<tokio::net::TcpListener, BoxError> {
    let l = tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .map_err(|e| format!("bind :{port}: {e}"))?;
    eprintln!("strait-sample: {what} on :{port} as {}", pod_name());
    Ok(l)
}

pub async fn http(port: u16, answer: Answer) -> Result<(), BoxError> {
    let l = listen(port, "HTTP/1, HTTP/2 and gRPC").await?;
    let name = pod_name();
    loop {
        let (tcp, _) = l.accept().await?;
        let name = name.clone();
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    respond(req, answer, name.clone())
                });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

async fn respond(
    req: hyper::Request<hyper::body::Incoming>,
    answer: Answer,
    name: String,
) -> Result<hyper::Response<Body>, std::convert::Infallible> {
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let grpc = header("content-type").starts_with("application/grpc");
    let text = match answer {
        Answer::Hello { .. } => format!("hello from {name}"),
        Answer::Echo => {
            let host = req
                .uri()
                .authority()
                .map(|a| a.to_string())
                .unwrap_or_else(|| header("host"));
            format!(
                "pod={name} version={:?} host={host} forwarded={}",
                req.version(),
                header("forwarded")
            )
        }
    };
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, req.into_body().collect()).await;
    if let Answer::Hello { delay } = answer
        && !delay.is_zero()
    {
        tokio::time::sleep(delay).await;
    }
    if !grpc {
        return Ok(hyper::Response::new(Full::new(Bytes::from(text)).boxed()));
    }
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let body = Full::new(grpc::frame(&text)).with_trailers(async move { Some(Ok(trailers)) });
    let mut rsp = hyper::Response::new(body.boxed());
    rsp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    Ok(rsp)
}

/// Echoes every byte back as it comes.
pub async fn echo(port: u16) -> Result<(), BoxError> {
    let l = listen(port, "TCP echo").await?;
    loop {
        let (mut tcp, _) = l.accept().await?;
        tokio::spawn(async move {
            let (mut r, mut w) = tcp.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
    }
}

/// Reads until the peer half-closes (at most 64 KiB, 10 s), then answers `POD: <bytes>`.
pub async fn named_tcp(port: u16) -> Result<(), BoxError> {
    let l = listen(port, "TCP (answers with its name)").await?;
    let name = pod_name();
    loop {
        let (mut tcp, _) = l.accept().await?;
        let name = name.clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            let mut limited = (&mut tcp).take(TCP_READ_LIMIT);
            let read = tokio::time::timeout(REQUEST_TIMEOUT, limited.read_to_end(&mut got));
            if let Ok(Ok(_)) = read.await {
                let _ = tcp.write_all(format!("{name}: ").as_bytes()).await;
                let _ = tcp.write_all(&got).await;
                let _ = tcp.shutdown().await;
            }
        });
    }
}
