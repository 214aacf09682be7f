//! The one gRPC message the samples exchange: a protobuf `string message = 1` in a
//! length-prefixed frame (no compression).

use bytes::{Buf, Bytes};

/// `message` as one gRPC frame.
pub fn frame(message: &str) -> Bytes {
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

/// The message of one frame made by [`frame`]; `None` for anything else.
pub fn unframe(mut b: Bytes) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let f = frame("hello from web-1");
        assert_eq!(f[0], 0, "not compressed");
        assert_eq!(unframe(f).as_deref(), Some("hello from web-1"));
        let long = "pod=greeter-6d8f9c7b5-x2k4q version=HTTP/2.0 host=greeter-east.shop.svc.cluster.local:8080 forwarded=for=198.18.0.1;by=strait-gateway.strait-multicluster";
        assert!(long.len() > 127, "a two-byte length");
        assert_eq!(unframe(frame(long)).as_deref(), Some(long));
    }

    #[test]
    fn malformed_frames_are_refused() {
        assert_eq!(unframe(Bytes::from_static(b"\x01\0\0\0\x02\x0a\0")), None);
        assert_eq!(unframe(Bytes::from_static(b"\0\0\0\0\x03\x0a\x05ab")), None);
        assert_eq!(unframe(Bytes::from_static(b"\0\0\0")), None);
    }
}
