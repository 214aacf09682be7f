//! The one transport-header reader every inbound path uses (the proxy's inbound and the
//! gateway): never more bytes than the header takes (so no application byte is consumed),
//! never more than [`MAX_LEN`] buffered, and never longer than a deadline. Fuzzed by
//! `fuzz/fuzz_targets/header_reader.rs`.

use std::time::Duration;
use strait_core::transport_header::{DecodeError, Decoded, MAX_LEN, PREFACE, TransportHeader};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Why no transport header could be read.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error(transparent)]
    Decode(DecodeError),
    #[error("the header did not fit in {0} bytes")]
    BufferFull(usize),
    #[error("the connection closed after {0} bytes, before the header was complete")]
    Eof(usize),
    #[error("the header did not arrive in time")]
    Timeout,
    #[error("reading: {0}")]
    Io(#[source] std::io::Error),
}

impl HeaderError {
    /// The header is longer than [`MAX_LEN`] (declared so, or the buffer filled).
    pub fn is_too_long(&self) -> bool {
        matches!(
            self,
            Self::Decode(DecodeError::TooLong(_)) | Self::BufferFull(_)
        )
    }
}

/// Reads one header from `io` within `timeout`.
pub async fn read<R: AsyncRead + Unpin>(
    io: &mut R,
    timeout: Duration,
) -> Result<TransportHeader, HeaderError> {
    let mut buf = Vec::new();
    match tokio::time::timeout(timeout, read_into(io, &mut buf)).await {
        Ok(r) => r,
        Err(_) => Err(HeaderError::Timeout),
    }
}

/// Reads into `buf` until a header decodes. `buf` never grows past [`MAX_LEN`]; each read asks
/// for at most what the decoder still needs, so the stream is left at the first byte after
/// the header.
pub async fn read_into<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut Vec<u8>,
) -> Result<TransportHeader, HeaderError> {
    buf.clear();
    // The preface and the length come first; the decoder then names the total it needs.
    let mut needed = PREFACE.len() + 4;
    loop {
        let needed_now = needed.min(MAX_LEN);
        if buf.len() >= MAX_LEN {
            // The decoder asks for more than fits: refuse rather than wait for bytes that
            // will never be read.
            return Err(HeaderError::BufferFull(buf.len()));
        }
        if buf.len() < needed_now {
            let have = buf.len();
            buf.reserve_exact(needed_now - have);
            buf.resize(needed_now, 0);
            let n = io.read(&mut buf[have..]).await.map_err(HeaderError::Io)?;
            buf.truncate(have + n);
            if n == 0 {
                return Err(HeaderError::Eof(have));
            }
        }
        match TransportHeader::decode(buf).map_err(HeaderError::Decode)? {
            Decoded::Header { header, .. } => return Ok(header),
            Decoded::Incomplete { needed: n } => needed = n,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use strait_core::transport_header::SessionProtocol;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn reads_exactly_the_header() {
        let h = TransportHeader {
            port: 8080,
            name: Some("web.shop.svc.cluster.local".into()),
            protocol: Some(SessionProtocol::Http2),
        };
        let mut bytes = h.encode();
        bytes.extend_from_slice(b"GET / HTTP/1.1");
        let mut io = &bytes[..];
        let got = rt()
            .block_on(read(&mut io, Duration::from_secs(1)))
            .unwrap();
        assert_eq!(got, h);
        assert_eq!(io, b"GET / HTTP/1.1", "application bytes stay unread");
    }

    #[test]
    fn bad_preface_is_refused_at_the_first_byte() {
        let mut io = &b"GET / HTTP/1.1\r\n\r\n"[..];
        let e = rt().block_on(read(&mut io, Duration::from_secs(1)));
        assert!(matches!(
            e,
            Err(HeaderError::Decode(DecodeError::BadPreface))
        ));
    }

    #[test]
    fn oversize_is_refused_before_reading_the_body() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend_from_slice(&(1u32 << 20).to_be_bytes());
        let mut io = &bytes[..];
        let e = rt().block_on(read(&mut io, Duration::from_secs(1)));
        assert!(matches!(
            e,
            Err(HeaderError::Decode(DecodeError::TooLong(_)))
        ));
        assert!(e.unwrap_err().is_too_long(), "too long is not a timeout");
    }

    #[test]
    fn a_silent_client_times_out() {
        let (mut a, _b) = tokio::io::duplex(64);
        let e = rt().block_on(read(&mut a, Duration::from_millis(20)));
        assert!(matches!(e, Err(HeaderError::Timeout)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Any bytes: no panic, and the buffer stays within MAX_LEN.
        #[test]
        fn any_bytes_are_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..256), len in any::<u32>(), with_preface in any::<bool>()) {
            let mut input = Vec::new();
            if with_preface {
                input.extend_from_slice(PREFACE);
                input.extend_from_slice(&len.to_be_bytes());
            }
            input.extend_from_slice(&bytes);
            let mut io = &input[..];
            let mut buf = Vec::new();
            let _ = rt().block_on(read_into(&mut io, &mut buf));
            prop_assert!(buf.len() <= MAX_LEN);
            prop_assert!(buf.capacity() <= MAX_LEN);
        }

        /// A valid header followed by anything decodes to itself.
        #[test]
        fn valid_headers_round_trip(port in 1u16.., name in "[a-z]{0,20}", rest in proptest::collection::vec(any::<u8>(), 0..64)) {
            let h = TransportHeader { port, name: (!name.is_empty()).then_some(name), protocol: None };
            let mut input = h.encode();
            input.extend_from_slice(&rest);
            let mut io = &input[..];
            let got = rt().block_on(read(&mut io, Duration::from_secs(1))).unwrap();
            prop_assert_eq!(got, h);
            prop_assert_eq!(io, &rest[..]);
        }
    }
}
