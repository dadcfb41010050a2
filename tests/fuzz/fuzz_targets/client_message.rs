//! The protocol's client-message handler: the input as one text message (and, split in two,
//! as a fragmented one) from an authenticated admin connection, which may join any room.
#![no_main]
mod common;
use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;

thread_local! {
    static H: RefCell<wsedge::testing::Harness<wsedge::app::ProtocolApp>> = RefCell::new(common::harness());
    static UPGRADE: Vec<u8> = common::upgrade(&common::token("messenger", true));
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let t = text.as_bytes();
    let mut bytes = UPGRADE.with(Clone::clone);
    let mask = [1, 2, 3, 4];
    bytes.extend_from_slice(&common::frame(0x81, t, mask));
    // The same message fragmented at a character boundary.
    let cut = (0..=t.len() / 2).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    bytes.extend_from_slice(&common::frame(0x01, &t[..cut], mask));
    bytes.extend_from_slice(&common::frame(0x80, &t[cut..], mask));
    H.with(|h| h.borrow_mut().feed(&[&bytes]).expect("feed"));
});
