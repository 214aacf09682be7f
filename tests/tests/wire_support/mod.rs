//! A recording TCP relay, for tests that prove what crosses the wire (no token in the clear).

#![allow(dead_code, clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every byte that crossed a relay, both directions, in arrival order.
pub type Wire = Arc<Mutex<Vec<u8>>>;

/// A TCP relay on `host` to `upstream` that records every byte it forwards.
pub async fn relay(host: Ipv4Addr, upstream: SocketAddr) -> (SocketAddr, Wire) {
    // All addresses, as the lab's control plane: pods reach it at the host address.
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let addr = SocketAddr::new(host.into(), listener.local_addr().unwrap().port());
    let wire: Wire = Arc::default();
    let seen = wire.clone();
    tokio::spawn(async move {
        while let Ok((down, _)) = listener.accept().await {
            let Ok(up) = tokio::net::TcpStream::connect(upstream).await else {
                continue;
            };
            let (dr, dw) = down.into_split();
            let (ur, uw) = up.into_split();
            tokio::spawn(copy(dr, uw, seen.clone()));
            tokio::spawn(copy(ur, dw, seen.clone()));
        }
    });
    (addr, wire)
}

async fn copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    wire: Wire,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        wire.lock().unwrap().extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Neither the token nor any 16-byte piece of it is on the wire.
pub fn assert_token_absent(wire: &[u8], token: &[u8]) {
    assert!(!contains(wire, token), "the whole token is on the wire");
    for piece in token.chunks(16).filter(|p| p.len() == 16) {
        assert!(
            !contains(wire, piece),
            "a piece of the token is on the wire"
        );
    }
}
