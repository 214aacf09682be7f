//! `e2e-tool`: the small programs end-to-end tests run inside pods.
//!
//! - `e2e-tool serve-http <port>`: an HTTP/1.1 server answering every request with
//!   `hello from <POD_NAME>`.
//! - `e2e-tool get <ip|name:port> [path]`: one HTTP/1.1 GET; prints the body, exits 1 on failure.
//! - `e2e-tool serve-echo-http <port>`: HTTP/1.1 and HTTP/2 (prior knowledge) on one port;
//!   answers `pod=<POD_NAME> version=<v> host=<Host or :authority> forwarded=<Forwarded>`.
//! - `e2e-tool serve-tcp-echo <port>`: echoes every byte back.

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
        _ => Err("usage: e2e-tool serve-http <port> | get <ip:port> [path]".to_owned()),
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

fn get(addr: &str, path: &str) -> Result<(), String> {
    // `<ip>:<port>` or `<name>:<port>`; a name is resolved through the pod's resolv.conf.
    let resolved: SocketAddr = addr
        .to_socket_addrs()
        .map_err(|e| format!("bad or unresolvable address {addr:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr:?} resolves to no address"))?;
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
    print!("{body}");
    Ok(())
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
                        async move {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from(body)),
                            ))
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
