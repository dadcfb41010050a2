//! The upgrade parser on arbitrary bytes: never panics; what it reports fits the input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wsedge::testing::{Parsed, parse_upgrade as parse};

fuzz_target!(|data: &[u8]| {
    for path in [Some("/ws"), None] {
        match parse(data, 2048, path) {
            Parsed::Upgrade(u, n) => {
                assert!(n <= data.len());
                assert_eq!(u.accept.len(), 28, "a SHA-1 in base64");
            }
            Parsed::Plain(p) => assert!(p.head_len <= data.len()),
            Parsed::Reject(r) => assert!((400..600).contains(&r.status)),
            Parsed::Partial => assert!(data.len() < 2048),
        }
    }
});
