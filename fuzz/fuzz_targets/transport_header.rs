//! The transport-header codec: any bytes decode, ask for more, or fail; never panic. A
//! decoded header re-encodes to bytes that decode to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strait_core::transport_header::{Decoded, MAX_LEN, TransportHeader};

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = TransportHeader::decode(data) {
        match d {
            Decoded::Header { header, consumed } => {
                assert!(consumed <= data.len() && consumed <= MAX_LEN);
                let again = TransportHeader::decode(&header.encode());
                assert!(matches!(again, Ok(Decoded::Header { header: h, .. }) if h == header));
            }
            Decoded::Incomplete { needed } => {
                assert!(needed > data.len() && needed <= MAX_LEN);
            }
        }
    }
});
