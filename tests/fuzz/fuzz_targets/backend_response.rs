//! The backend bridge's HTTP response parser and results reader on arbitrary bytes (a
//! backend that lies, stalls mid-response or sends garbage): never panics, bounded bodies,
//! and a response found in a prefix stays the same with more bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wsedge::testing::backend_response(data));
