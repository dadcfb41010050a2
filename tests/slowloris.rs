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

#[test]
fn idle_sockets_cannot_crowd_out_real_clients() {
    // Four idle sockets fill the pending-handshake budget of four. A real client still gets in:
    // the oldest idle socket is dropped to make room, long before the 10 s handshake timeout.
    let server = start(wsedge::Config {
        max_pending_handshakes: 4,
        ..config()
    });
    let addr = server.local_addr();
    let mut idle: Vec<std::net::TcpStream> = (0..4).map(|_| raw(addr)).collect();
    wait_until("idle sockets accepted", || server.handle().stats().accepted == 4);
    // Young pending connections are never evicted (a reconnect storm looks the same): a real
    // client arriving now gets in without pushing anyone out.
    connect(addr, &token("early"));
    assert_eq!(server.handle().stats().refused_with(408), 0);
    // Once the idle ones have waited a second, they are the ones to go.
    std::thread::sleep(Duration::from_millis(1100));
    let start = Instant::now();
    for i in 0..3 {
        connect(addr, &token(&format!("real-{i}")));
    }
    expect_eof(&mut idle[0]);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "dropped by the limit, not the timeout"
    );
    assert_eq!(server.handle().stats().refused_with(408), 1, "only as many as needed");
    // Two more idle sockets: five pending now, so the oldest remaining one goes.
    let _more: Vec<std::net::TcpStream> = (0..2).map(|_| raw(addr)).collect();
    expect_eof(&mut idle[1]);
    let _ = &idle;
    assert!(start.elapsed() < Duration::from_secs(3));
    assert_eq!(server.handle().stats().refused_with(408), 2);
}
