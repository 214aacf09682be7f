//! The `transport.l5d.io/v1` header.
//!
//! After an mTLS handshake that negotiated ALPN [`ALPN`], the client sends, before any
//! application byte:
//!
//! ```text
//! "transport.l5d.io/v1\r\n\r\n"   23-byte preface
//! u32 big-endian                  length of the message (at most 64 KiB)
//! protobuf transport.l5d.io.Header {
//!     int32 port = 1;              // 1–65535
//!     string name = 2;             // the target Service's name; empty: none
//!     SessionProtocol session_protocol = 3;  // oneof { Http1 http1 = 1; Http2 http2 = 2; }
//! }
//! ```
//!
//! This is the wire format of Linkerd's proxy; it is kept byte-exact. The codec does no I/O:
//! [`TransportHeader::decode`] takes whatever bytes have arrived and says whether more are
//! needed, so readers can bound what they buffer and how long they wait.

use prost::Message;

/// The ALPN protocol that announces a transport header.
pub const ALPN: &[u8] = b"transport.l5d.io/v1";
/// The bytes that open every header.
pub const PREFACE: &[u8; 23] = b"transport.l5d.io/v1\r\n\r\n";
/// The largest message length accepted.
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;
/// The most bytes a complete header can take: preface, length, message.
pub const MAX_LEN: usize = PREFACE.len() + 4 + MAX_MESSAGE_LEN;

/// The session protocol a header names, so the receiver need not sniff it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum SessionProtocol {
    Http1,
    Http2,
}

/// A decoded transport header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportHeader {
    /// The target port.
    pub port: u16,
    /// The target's name (a Service FQDN), when the connection goes through a gateway.
    pub name: Option<String>,
    /// The session protocol, when the client knows it.
    pub protocol: Option<SessionProtocol>,
}

/// The result of decoding the bytes received so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A whole header; `consumed` bytes of the input belong to it, the rest is application data.
    Header {
        header: TransportHeader,
        consumed: usize,
    },
    /// Not enough bytes yet: at least `needed` bytes in total are required.
    Incomplete { needed: usize },
}

/// Why bytes are not a transport header.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the connection does not start with the transport.l5d.io/v1 preface")]
    BadPreface,
    #[error("the transport header is {0} bytes long; at most {MAX_MESSAGE_LEN} are allowed")]
    TooLong(usize),
    #[error("the transport header is not a valid message: {0}")]
    Message(String),
    #[error("the transport header names port {0}; a port is 1-65535")]
    InvalidPort(i32),
}

impl TransportHeader {
    /// Encodes the header with its preface and length.
    pub fn encode(&self) -> Vec<u8> {
        let msg = proto::Header {
            port: i32::from(self.port),
            name: self.name.clone().unwrap_or_default(),
            session_protocol: self.protocol.map(|p| proto::SessionProtocol {
                kind: Some(match p {
                    SessionProtocol::Http1 => proto::Kind::Http1(proto::Http1 {}),
                    SessionProtocol::Http2 => proto::Kind::Http2(proto::Http2 {}),
                }),
            }),
        };
        let len = msg.encoded_len();
        let mut out = Vec::with_capacity(PREFACE.len() + 4 + len);
        out.extend_from_slice(PREFACE);
        out.extend_from_slice(&(len as u32).to_be_bytes());
        msg.encode(&mut out)
            .expect("a Vec grows to hold any message");
        out
    }

    /// Decodes a header from the start of `buf`. Never reads past the header, never
    /// allocates more than the message's (bounded) size, and rejects a wrong preface as soon
    /// as the first differing byte arrives.
    pub fn decode(buf: &[u8]) -> Result<Decoded, DecodeError> {
        let n = buf.len().min(PREFACE.len());
        if buf[..n] != PREFACE[..n] {
            return Err(DecodeError::BadPreface);
        }
        let head = PREFACE.len() + 4;
        if buf.len() < head {
            return Ok(Decoded::Incomplete { needed: head });
        }
        let mut len_bytes = [0u8; 4];
        len_bytes.copy_from_slice(&buf[PREFACE.len()..head]);
        let len = u32::from_be_bytes(len_bytes) as usize;
        if len > MAX_MESSAGE_LEN {
            return Err(DecodeError::TooLong(len));
        }
        let end = head + len;
        if buf.len() < end {
            return Ok(Decoded::Incomplete { needed: end });
        }
        let msg = proto::Header::decode(&buf[head..end])
            .map_err(|e| DecodeError::Message(e.to_string()))?;
        let port = u16::try_from(msg.port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or(DecodeError::InvalidPort(msg.port))?;
        let protocol = msg.session_protocol.and_then(|s| s.kind).map(|k| match k {
            proto::Kind::Http1(_) => SessionProtocol::Http1,
            proto::Kind::Http2(_) => SessionProtocol::Http2,
        });
        Ok(Decoded::Header {
            header: TransportHeader {
                port,
                name: (!msg.name.is_empty()).then_some(msg.name),
                protocol,
            },
            consumed: end,
        })
    }
}

/// The protobuf messages, as `transport.l5d.io`'s `.proto` declares them.
mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Header {
        #[prost(int32, tag = "1")]
        pub port: i32,
        #[prost(string, tag = "2")]
        pub name: String,
        #[prost(message, optional, tag = "3")]
        pub session_protocol: Option<SessionProtocol>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SessionProtocol {
        #[prost(oneof = "Kind", tags = "1, 2")]
        pub kind: Option<Kind>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(message, tag = "1")]
        Http1(Http1),
        #[prost(message, tag = "2")]
        Http2(Http2),
    }

    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct Http1 {}

    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct Http2 {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header() -> TransportHeader {
        TransportHeader {
            port: 8080,
            name: Some("web.shop.svc.cluster.local".into()),
            protocol: Some(SessionProtocol::Http2),
        }
    }

    #[test]
    fn round_trip_and_trailing_data() {
        let mut bytes = header().encode();
        let len = bytes.len();
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(
            TransportHeader::decode(&bytes),
            Ok(Decoded::Header {
                header: header(),
                consumed: len
            })
        );
    }

    /// The exact bytes Linkerd's proxy writes for port 4143, name "a", HTTP/1.
    #[test]
    fn wire_bytes_are_linkerds() {
        let h = TransportHeader {
            port: 4143,
            name: Some("a".into()),
            protocol: Some(SessionProtocol::Http1),
        };
        let mut want = PREFACE.to_vec();
        // field 1 varint 4143 = 0xaf 0x20; field 2 len 1 "a"; field 3 len 2 { field 1 len 0 }
        let msg = [0x08, 0xaf, 0x20, 0x12, 0x01, b'a', 0x1a, 0x02, 0x0a, 0x00];
        want.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        want.extend_from_slice(&msg);
        assert_eq!(h.encode(), want);
    }

    #[test]
    fn incomplete_until_whole() {
        let bytes = header().encode();
        for cut in 0..bytes.len() {
            match TransportHeader::decode(&bytes[..cut]) {
                Ok(Decoded::Incomplete { needed }) => assert!(needed > cut),
                other => panic!("{cut} bytes decoded to {other:?}"),
            }
        }
    }

    #[test]
    fn refusals() {
        assert_eq!(
            TransportHeader::decode(b"GET / HTTP/1.1\r\n"),
            Err(DecodeError::BadPreface)
        );
        let mut long = PREFACE.to_vec();
        long.extend_from_slice(&(MAX_MESSAGE_LEN as u32 + 1).to_be_bytes());
        assert_eq!(
            TransportHeader::decode(&long),
            Err(DecodeError::TooLong(MAX_MESSAGE_LEN + 1))
        );
        for port in [0, -1, 65536] {
            let msg = proto::Header {
                port,
                name: String::new(),
                session_protocol: None,
            };
            let mut b = PREFACE.to_vec();
            b.extend_from_slice(&(msg.encoded_len() as u32).to_be_bytes());
            b.extend_from_slice(&msg.encode_to_vec());
            assert_eq!(
                TransportHeader::decode(&b),
                Err(DecodeError::InvalidPort(port))
            );
        }
        let mut garbage = PREFACE.to_vec();
        garbage.extend_from_slice(&3u32.to_be_bytes());
        garbage.extend_from_slice(&[0xff, 0xff, 0xff]);
        assert!(matches!(
            TransportHeader::decode(&garbage),
            Err(DecodeError::Message(_))
        ));
    }

    proptest! {
        /// Any bytes: no panic, and a header is never claimed beyond the input or the bound.
        #[test]
        fn any_input_is_safe(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(Decoded::Header { consumed, .. }) = TransportHeader::decode(&bytes) {
                prop_assert!(consumed <= bytes.len() && consumed <= MAX_LEN);
            }
        }

        /// Preface plus any bytes: the same, on the paths past the preface.
        #[test]
        fn any_message_is_safe(tail in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut bytes = PREFACE.to_vec();
            bytes.extend_from_slice(&tail);
            match TransportHeader::decode(&bytes) {
                Ok(Decoded::Header { consumed, .. }) => prop_assert!(consumed <= bytes.len()),
                Ok(Decoded::Incomplete { needed }) => prop_assert!(needed <= MAX_LEN),
                Err(_) => {}
            }
        }

        #[test]
        fn round_trips(port in 1u16.., name in "[a-z0-9.-]{0,64}", p in 0u8..3) {
            let h = TransportHeader {
                port,
                name: (!name.is_empty()).then_some(name),
                protocol: [None, Some(SessionProtocol::Http1), Some(SessionProtocol::Http2)][p as usize],
            };
            let bytes = h.encode();
            prop_assert_eq!(TransportHeader::decode(&bytes), Ok(Decoded::Header { header: h, consumed: bytes.len() }));
        }
    }
}
