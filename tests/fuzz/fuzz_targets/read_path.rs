//! The read path after a valid upgrade: either raw bytes, or frames built from the input
//! (opcode, flags, payload; masked), split at arbitrary points into reads.
#![no_main]
mod common;
use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;

thread_local! {
    static H: RefCell<wsedge::testing::Harness<wsedge::app::ProtocolApp>> = RefCell::new(common::harness());
    static UPGRADE: Vec<u8> = common::upgrade(&common::token("reader", false));
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut bytes = UPGRADE.with(Clone::clone);
    if mode & 1 == 0 {
        bytes.extend_from_slice(rest);
    } else {
        // Records: [first byte][len][payload...], each a masked frame.
        let mut r = rest;
        while let [first, len, tail @ ..] = r {
            let n = (*len as usize).min(tail.len());
            let mask = [mode, *len, 0x5A, 0xC3];
            bytes.extend_from_slice(&common::frame(*first, &tail[..n], mask));
            r = &tail[n..];
        }
    }
    let chunks = common::split(&bytes, u32::from(mode).wrapping_mul(0x9E37_79B9) ^ rest.len() as u32);
    H.with(|h| h.borrow_mut().feed(&chunks).expect("feed"));
});
