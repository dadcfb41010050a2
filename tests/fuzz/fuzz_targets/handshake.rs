//! The handshake state machine: arbitrary bytes, split at arbitrary points, from a socket's
//! first byte (the request head, then whatever follows it), through the real read path.
#![no_main]
mod common;
use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;

thread_local! {
    static H: RefCell<wsedge::testing::Harness<wsedge::app::ProtocolApp>> = RefCell::new(common::harness());
    static TOKEN: Vec<u8> = common::token("fuzzer", false).into_bytes();
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, rest)) = data.split_first() else { return };
    // Half the inputs splice a valid token in place of "TKN", so the fuzzer reaches the
    // authenticated paths too.
    let bytes: Vec<u8> = if seed & 1 == 1 {
        TOKEN.with(|t| replace_all(rest, b"TKN", t))
    } else {
        rest.to_vec()
    };
    let chunks = common::split(&bytes, u32::from(seed).wrapping_mul(2_654_435_761));
    H.with(|h| h.borrow_mut().feed(&chunks).expect("feed"));
});

fn replace_all(data: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}
