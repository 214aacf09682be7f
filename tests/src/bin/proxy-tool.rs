//! `proxy-tool`: the programs the proxy's end-to-end tests and bench run inside pods.
//!
//! - `serve <port> [delay_ms]`: HTTP/1.1 and HTTP/2 (prior knowledge) answering
//!   `hello from <POD_NAME>` after `delay_ms`.
//! - `echo <port>`: a TCP echo server.
//! - `load <ip:port> <requests> <concurrency> [h2]`: keep-alive GETs; prints
//!   `{"ok":…,"failed":…,"by_body":{…},"statuses":{…}}`; exits 1 if any failed.
//! - `tcp <ip:port> <message>`: sends the message, half-closes, prints what comes back.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a = |i: usize| args.get(i).cloned().unwrap_or_default();
    let res = match a(0).as_str() {
        "serve" => serve(&a(1), a(2).parse().unwrap_or(0)).await,
        "echo" => echo(&a(1)).await,
        "load" => {
            load(
                &a(1),
                a(2).parse().unwrap_or(1),
                a(3).parse().unwrap_or(1),
                a(4) == "h2",
            )
            .await
        }
        "tcp" => tcp(&a(1), &a(2)).await,
        _ => Err("usage: proxy-tool serve|echo|load|tcp …".into()),
    };
    if let Err(e) = res {
        eprintln!("proxy-tool: {e}");
        std::process::exit(1);
    }
}

async fn serve(port: &str, delay_ms: u64) -> Result<(), Error> {
    let l = tokio::net::TcpListener::bind(format!("0.0.0.0:{port}")).await?;
    let name = std::env::var("POD_NAME").unwrap_or_else(|_| "unknown".into());
    let body = Bytes::from(format!("hello from {name}"));
    loop {
        let (tcp, _) = l.accept().await?;
        let body = body.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |_req| {
                let body = body.clone();
                async move {
                    if delay_ms > 0 {
                        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                    }
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(body)))
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

async fn echo(port: &str) -> Result<(), Error> {
    let l = tokio::net::TcpListener::bind(format!("0.0.0.0:{port}")).await?;
    loop {
        let (mut tcp, _) = l.accept().await?;
        tokio::spawn(async move {
            let (mut r, mut w) = tcp.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
    }
}

async fn load(addr: &str, n: usize, conc: usize, h2: bool) -> Result<(), Error> {
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(h2)
        .build(HttpConnector::new());
    let left = Arc::new(Mutex::new(n));
    let by_body = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
    let statuses = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
    let mut tasks = Vec::new();
    for _ in 0..conc.max(1) {
        let (client, left, by_body, statuses) = (
            client.clone(),
            left.clone(),
            by_body.clone(),
            statuses.clone(),
        );
        let uri: hyper::Uri = format!("http://{addr}/").parse()?;
        tasks.push(tokio::spawn(async move {
            loop {
                {
                    let Ok(mut l) = left.lock() else { return };
                    if *l == 0 {
                        return;
                    }
                    *l -= 1;
                }
                let req = hyper::Request::get(uri.clone()).body(Empty::new());
                let Ok(req) = req else { return };
                let res = tokio::time::timeout(Duration::from_secs(10), async {
                    let rsp = client.request(req).await?;
                    let status = rsp.status().as_u16();
                    let body = rsp.into_body().collect().await?.to_bytes();
                    Ok::<_, Error>((status, body))
                })
                .await;
                let key = match res {
                    Ok(Ok((200, body))) => {
                        let b = String::from_utf8_lossy(&body).into_owned();
                        if let Ok(mut m) = by_body.lock() {
                            *m.entry(b).or_default() += 1;
                        }
                        "200".to_owned()
                    }
                    Ok(Ok((s, _))) => s.to_string(),
                    Ok(Err(e)) => format!("error: {e}"),
                    Err(_) => "timeout".to_owned(),
                };
                if let Ok(mut s) = statuses.lock() {
                    *s.entry(key).or_default() += 1;
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let statuses = statuses.lock().map(|s| s.clone()).unwrap_or_default();
    let ok = statuses.get("200").copied().unwrap_or(0);
    let out = serde_json::json!({
        "ok": ok,
        "failed": n - ok,
        "by_body": *by_body.lock().map_err(|_| "poisoned")?,
        "statuses": statuses,
    });
    println!("{out}");
    if ok != n {
        return Err(format!("{} of {n} requests failed", n - ok).into());
    }
    Ok(())
}

async fn tcp(addr: &str, msg: &str) -> Result<(), Error> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await??;
    s.write_all(msg.as_bytes()).await?;
    s.shutdown().await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out)).await??;
    print!("{out}");
    Ok(())
}
