//! A client that does not finish its handshake within the handshake timeout is dropped, even if
//! it keeps trickling bytes.
mod common;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn trickling_client_is_dropped_at_the_handshake_timeout() {
    let server = start(wsedge::Config {
        handshake_timeout: Duration::from_millis(600),
        ..config()
    });
    let mut s = raw(server.local_addr());
    let start = Instant::now();
    let req = upgrade_request("/ws");
    let mut sent = 0;
    let mut buf = [0u8; 256];
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    loop {
        // One byte every 100 ms, never finishing the head.
        if sent < req.len() - 4 {
            if s.write_all(&req.as_bytes()[sent..sent + 1]).is_err() {
                break;
            }
            sent += 1;
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => assert!(String::from_utf8_lossy(&buf[..n]).contains("408"), "unexpected bytes"),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "slowloris client was not dropped"
        );
    }
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(500), "dropped too early: {elapsed:?}");
    wait_until("408 counted", || server.handle().stats().refused_with(408) == 1);
    // Others still get in.
    connect(server.local_addr(), &token("patient"));
}

#[test]
fn silent_client_is_dropped() {
    let server = start(wsedge::Config {
        handshake_timeout: Duration::from_millis(300),
        ..config()
    });
    let mut s = raw(server.local_addr());
    let start = Instant::now();
    expect_eof(&mut s);
    assert!(start.elapsed() < Duration::from_secs(2));
}
