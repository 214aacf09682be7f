//! `e2e-tool`: the small programs end-to-end tests run inside pods.
//!
//! - `e2e-tool serve-http <port>`: an HTTP/1.1 server answering every request with
//!   `hello from <POD_NAME>`.
//! - `e2e-tool get <ip|name:port> [path]`: one HTTP/1.1 GET; prints the body, exits 1 on failure.
//! - `e2e-tool serve-echo-http <port>`: HTTP/1.1, HTTP/2 (prior knowledge) and gRPC on one
//!   port; answers `pod=<POD_NAME> version=<v> host=<Host or :authority> forwarded=<Forwarded>`
//!   (to a gRPC call, as one message with `grpc-status: 0`).
//! - `e2e-tool serve-tcp-echo <port>`: echoes every byte back.
//! - `e2e-tool load <name:port> <count>`: `count` HTTP/1.1 GETs one after another (at most
//!   5 s each, so it always ends); prints one JSON line: sent, ok, p50_ms, p99_ms and how
//!   many answers each pod gave.
//! - `e2e-tool tcp <name:port> <message>`: sends the line, prints the line that comes back.
//! - `e2e-tool grpc <name:port> <count>`: `count` unary gRPC calls on one HTTP/2 connection
//!   (the lab tool's client); prints `{"ok":…,"failed":…,"by_body":{…},"errors":{…}}`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve-http") => args
            .get(1)
            .ok_or("serve-http needs a port".to_owned())
            .and_then(|p| serve(p)),
        Some("serve-echo-http") => args
            .get(1)
            .ok_or("serve-echo-http needs a port".to_owned())
            .and_then(|p| serve_async(p, true)),
        Some("serve-tcp-echo") => args
            .get(1)
            .ok_or("serve-tcp-echo needs a port".to_owned())
            .and_then(|p| serve_async(p, false)),
        Some("get") => match args.get(1) {
            Some(addr) => get(addr, args.get(2).map(String::as_str).unwrap_or("/")),
            None => Err("get needs <ip:port>".to_owned()),
        },
        Some("load") => match (args.get(1), args.get(2).and_then(|n| n.parse().ok())) {
            (Some(addr), Some(count)) => load(addr, count),
            _ => Err("load needs <name:port> <count>".to_owned()),
        },
        Some("tcp") => match (args.get(1), args.get(2)) {
            (Some(addr), Some(msg)) => tcp(addr, msg),
            _ => Err("tcp needs <name:port> <message>".to_owned()),
        },
        Some("grpc") => match (args.get(1), args.get(2).and_then(|n| n.parse::<u32>().ok())) {
            (Some(addr), Some(count)) => grpc(addr, count),
            _ => Err("grpc needs <name:port> <count>".to_owned()),
        },
        _ => Err("usage: e2e-tool serve-http <port> | serve-echo-http <port> | serve-tcp-echo <port> | get <addr> [path] | load <addr> <count> | tcp <addr> <message> | grpc <addr> <count>".to_owned()),
    };
    if let Err(e) = result {
        eprintln!("e2e-tool: {e}");
        std::process::exit(1);
    }
}

fn serve(port: &str) -> Result<(), String> {
    let port: u16 = port
        .parse()
        .map_err(|e| format!("bad port {port:?}: {e}"))?;
    let listener =
        TcpListener::bind(("0.0.0.0", port)).map_err(|e| format!("bind :{port}: {e}"))?;
    let name = std::env::var("POD_NAME").unwrap_or_else(|_| "unknown".into());
    eprintln!("serving HTTP on :{port} as {name}");
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let body = format!("hello from {name}");
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        let mut reader = BufReader::new(match conn.try_clone() {
            Ok(c) => c,
            Err(_) => continue,
        });
        // Read the request head; the body of a GET is empty.
        let mut line = String::new();
        while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            if line == "\r\n" || line == "\n" {
                break;
            }
            line.clear();
        }
        let _ = write!(
            conn,
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
    }
    Ok(())
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("bad or unresolvable address {addr:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr:?} resolves to no address"))
}

/// One GET on a fresh connection; the body of a 200.
fn fetch(addr: &str, resolved: SocketAddr, path: &str) -> Result<String, String> {
    let mut conn = TcpStream::connect_timeout(&resolved, Duration::from_secs(5))
        .map_err(|e| format!("connect {addr} ({resolved}): {e}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut resp = String::new();
    conn.read_to_string(&mut resp)
        .map_err(|e| format!("read: {e}"))?;
    let (head, body) = resp.split_once("\r\n\r\n").ok_or("no HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("unexpected response: {head}"));
    }
    Ok(body.to_owned())
}

fn load(addr: &str, count: u32) -> Result<(), String> {
    let resolved = resolve(addr)?;
    let mut latencies = Vec::new();
    let mut pods: std::collections::BTreeMap<String, u32> = Default::default();
    let mut errors: std::collections::BTreeMap<String, u32> = Default::default();
    for _ in 0..count.min(100_000) {
        let started = std::time::Instant::now();
        match fetch(addr, resolved, "/") {
            Ok(body) => {
                latencies.push(started.elapsed());
                let pod = body
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("pod="))
                    .unwrap_or(body.trim())
                    .to_owned();
                *pods.entry(pod).or_default() += 1;
            }
            Err(e) => *errors.entry(e).or_default() += 1,
        }
    }
    latencies.sort();
    let pct = |q: f64| {
        let i = ((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1);
        latencies.get(i).map(|d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{}",
        serde_json::json!({
            "sent": count, "ok": latencies.len(), "p50_ms": pct(0.5), "p99_ms": pct(0.99),
            "pods": pods, "errors": errors,
        })
    );
    Ok(())
}

fn tcp(addr: &str, msg: &str) -> Result<(), String> {
    let resolved = resolve(addr)?;
    let mut conn = TcpStream::connect_timeout(&resolved, Duration::from_secs(5))
        .map_err(|e| format!("connect {addr} ({resolved}): {e}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    writeln!(conn, "{msg}").map_err(|e| format!("write: {e}"))?;
    let mut line = String::new();
    BufReader::new(conn)
        .read_line(&mut line)
        .map_err(|e| format!("read: {e}"))?;
    print!("{line}");
    Ok(())
}

fn get(addr: &str, path: &str) -> Result<(), String> {
    // `<ip>:<port>` or `<name>:<port>`; a name is resolved through the pod's resolv.conf.
    print!("{}", fetch(addr, resolve(addr)?, path)?);
    Ok(())
}

fn grpc(addr: &str, count: u32) -> Result<(), String> {
    // The lab tool resolves with the system resolver too; a name is resolved here first so a
    // DNS failure reads as one.
    resolve(addr)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let args = ["http", addr, &count.min(10_000).to_string(), "grpc"];
    match rt.block_on(strait_lab::tool::run(args.map(str::to_owned).to_vec())) {
        0 => Ok(()),
        _ => Err(format!("gRPC calls to {addr} failed")),
    }
}

fn serve_async(port: &str, http: bool) -> Result<(), String> {
    let port: u16 = port
        .parse()
        .map_err(|e| format!("bad port {port:?}: {e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
            .await
            .map_err(|e| format!("bind :{port}: {e}"))?;
        let name = std::env::var("POD_NAME").unwrap_or_else(|_| "unknown".into());
        eprintln!(
            "serving {} on :{port} as {name}",
            if http { "HTTP/1+2 echo" } else { "TCP echo" }
        );
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            let name = name.clone();
            tokio::spawn(async move {
                if !http {
                    let (mut r, mut w) = conn.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    return;
                }
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        use http_body_util::BodyExt as _;
                        let h = |n: &str| {
                            req.headers()
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned()
                        };
                        let host = req
                            .uri()
                            .authority()
                            .map(|a| a.to_string())
                            .unwrap_or_else(|| h("host"));
                        let body = format!(
                            "pod={name} version={:?} host={host} forwarded={}",
                            req.version(),
                            h("forwarded")
                        );
                        let grpc = h("content-type").starts_with("application/grpc");
                        async move {
                            let _ = req.into_body().collect().await;
                            if !grpc {
                                let body = http_body_util::Full::new(bytes::Bytes::from(body));
                                return Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                    body.boxed(),
                                ));
                            }
                            let mut trailers = http::HeaderMap::new();
                            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                            let body =
                                http_body_util::Full::new(strait_lab::tool::grpc_frame(&body))
                                    .with_trailers(async move { Some(Ok(trailers)) });
                            let mut rsp = hyper::Response::new(body.boxed());
                            rsp.headers_mut().insert(
                                http::header::CONTENT_TYPE,
                                http::HeaderValue::from_static("application/grpc"),
                            );
                            Ok(rsp)
                        }
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(conn), svc)
                .await;
            });
        }
    })
}
