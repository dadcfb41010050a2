//! The hand-driven reactor the fuzz targets use (feature `testing`) runs the real read path:
//! a fed connection opens, its messages reach the handler, and nothing is left behind.
mod common;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use wsedge::testing::Harness;
use wsedge::{Closed, Ctx, Handler};

#[derive(Clone, Default)]
struct Counting(Arc<(AtomicUsize, AtomicUsize, AtomicUsize)>);
impl Handler for Counting {
    fn on_open(&self, _ctx: &mut Ctx<'_>) {
        self.0.0.fetch_add(1, Ordering::SeqCst);
    }
    fn on_text(&self, _ctx: &mut Ctx<'_>, text: &str) {
        assert_eq!(text, "hello");
        self.0.1.fetch_add(1, Ordering::SeqCst);
    }
    fn on_close(&self, _closed: &Closed<'_>) {
        self.0.2.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn fed_bytes_take_the_real_read_path_and_leave_nothing_behind() {
    let app = Counting::default();
    let mut h = Harness::new(config(), app.clone()).unwrap();
    let mut bytes = upgrade_request(&format!("/ws?token={}", token("fed"))).into_bytes();
    bytes.extend_from_slice(&frame(0x81, b"hello"));
    // Every split point, one byte at a time included.
    for cut in 0..bytes.len() {
        h.feed(&[&bytes[..cut], &bytes[cut..]]).unwrap();
    }
    let n = bytes.len();
    assert_eq!(app.0.0.load(Ordering::SeqCst), n, "opened every time");
    assert_eq!(app.0.1.load(Ordering::SeqCst), n, "the message arrived every time");
    assert_eq!(app.0.2.load(Ordering::SeqCst), n, "and every connection closed");
    assert_eq!(h.census().connections, 0);
    // Garbage and a bad token are answered without opening anything.
    h.feed(&[b"\x00\xffGARBAGE\r\n\r\n"]).unwrap();
    h.feed(&[upgrade_request("/ws?token=bad").as_bytes()]).unwrap();
    assert_eq!(app.0.0.load(Ordering::SeqCst), n);
}
