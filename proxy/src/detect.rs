//! Protocol detection: HTTP/1.1, HTTP/2 with prior knowledge, or opaque bytes.
//!
//! [`classify`] is the pure core; [`detect`] reads from a stream until it can decide, the
//! buffer fills, the peer stops sending, or the timeout passes (then the bytes are opaque:
//! a server-speaks-first protocol waits out the timeout once per connection).

use crate::io::PrefixedIo;
use bytes::BytesMut;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The HTTP/2 connection preface.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Bytes read at most before giving up on finding an HTTP/1 request line.
pub const MAX_DETECT: usize = 8 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    H2,
    Opaque,
}

/// What the bytes so far say; `None` = need more.
pub fn classify(buf: &[u8]) -> Option<Protocol> {
    if buf.is_empty() {
        return None;
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return (n == H2_PREFACE.len()).then_some(Protocol::H2);
    }
    // A request line: METHOD SP target SP HTTP/1.x CRLF, the method in upper-case letters.
    let method_len = buf.iter().take_while(|b| b.is_ascii_uppercase()).count();
    if method_len == 0 || method_len > 16 {
        return Some(Protocol::Opaque);
    }
    if method_len == buf.len() {
        return None;
    }
    if buf[method_len] != b' ' {
        return Some(Protocol::Opaque);
    }
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(end) => {
            let line = &buf[..end];
            let http1 = line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0");
            Some(if http1 {
                Protocol::Http1
            } else {
                Protocol::Opaque
            })
        }
        None if buf.len() >= MAX_DETECT => Some(Protocol::Opaque),
        None => None,
    }
}

/// Reads from `io` until the protocol is known; the bytes read are replayed by the result.
pub async fn detect<I: AsyncRead + Unpin>(
    mut io: I,
    timeout: Duration,
) -> std::io::Result<(Protocol, PrefixedIo<I>)> {
    let mut buf = BytesMut::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + timeout;
    let proto = loop {
        if let Some(p) = classify(&buf) {
            break p;
        }
        match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => break Protocol::Opaque,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    };
    Ok((proto, PrefixedIo::new(buf.freeze(), io)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn classifies() {
        assert_eq!(classify(b""), None);
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(
            classify(b"POST /x HTTP/1.0\r\nhost: a\r\n"),
            Some(Protocol::Http1)
        );
        assert_eq!(classify(b"GET / HTTP/1.1"), None);
        assert_eq!(classify(H2_PREFACE), Some(Protocol::H2));
        assert_eq!(classify(&H2_PREFACE[..10]), None);
        assert_eq!(classify(b"\x16\x03\x01"), Some(Protocol::Opaque));
        assert_eq!(classify(b"hello"), Some(Protocol::Opaque));
        assert_eq!(classify(b"HELLO world\r\n"), Some(Protocol::Opaque));
        assert_eq!(classify(&[b'A'; 20]), Some(Protocol::Opaque));
    }

    #[tokio::test]
    async fn detect_replays_and_times_out() {
        let (mut a, b) = tokio::io::duplex(1024);
        a.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let (p, io) = detect(b, Duration::from_secs(5)).await.unwrap();
        assert_eq!(p, Protocol::Http1);
        drop(io);

        let (_a, b) = tokio::io::duplex(1024);
        let (p, _) = detect(b, Duration::from_millis(10)).await.unwrap();
        assert_eq!(p, Protocol::Opaque);
    }

    proptest::proptest! {
        /// Any bytes classify without panicking, and a decision never changes as more
        /// bytes arrive (what detection relies on).
        #[test]
        fn classify_is_total_and_stable(a in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
                                        b in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            if let Some(p) = classify(&a) {
                let mut ab = a.clone();
                ab.extend(&b);
                proptest::prop_assert_eq!(classify(&ab), Some(p));
            }
        }
    }
}
