//! The allow-list file parser: any text parses or fails with a line number; never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = strait_gateway::authz::Policy::parse(text);
    }
});
