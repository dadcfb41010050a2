//! A silent connection gets a server ping after the heartbeat interval and is closed
//! (1000 "Connection timeout", as the seed) after the connection timeout; activity keeps it alive.
mod common;
use std::io::Write;
use std::time::{Duration, Instant};

use common::*;

fn fast() -> wsedge::Config {
    wsedge::Config {
        heartbeat_interval: Duration::from_millis(400),
        connection_timeout: Duration::from_millis(1200),
        ..config()
    }
}

#[test]
fn silent_connection_is_pinged_then_closed() {
    let server = start(fast());
    let mut s = raw_ws(server.local_addr(), &token("quiet"));
    let start = Instant::now();
    read_frame(&mut s); // connection.established
    let (first, payload) = read_frame(&mut s);
    assert_eq!((first, payload.len()), (0x89, 0), "expected a server ping");
    let pinged = start.elapsed();
    assert!(
        pinged >= Duration::from_millis(350) && pinged < Duration::from_millis(1000),
        "{pinged:?}"
    );
    let (code, reason) = read_close(&mut s);
    assert_eq!((code, reason.as_str()), (1000, "Connection timeout"));
    let closed = start.elapsed();
    assert!(
        closed >= Duration::from_millis(1150) && closed < Duration::from_millis(2500),
        "{closed:?}"
    );
    assert_eq!(server.handle().stats().timeouts, 1);
}

#[test]
fn pongs_and_heartbeats_keep_a_connection_alive() {
    let server = start(fast());
    let mut s = raw_ws(server.local_addr(), &token("lively"));
    read_frame(&mut s);
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < Duration::from_millis(3000) {
        let mut b = [0u8; 2];
        if std::io::Read::read_exact(&mut s, &mut b).is_ok() {
            assert_eq!(b, [0x89, 0x00], "only pings expected");
            pings += 1;
            s.write_all(&frame(0x8A, b"")).unwrap();
        }
        // Alternate: answer pings, and send an application heartbeat now and then.
        if pings % 2 == 1 {
            s.write_all(&frame(0x81, br#"{"type":"heartbeat"}"#)).unwrap();
        }
    }
    assert!(pings >= 1);
    assert_eq!(
        server.handle().stats().timeouts,
        0,
        "an active connection must not time out"
    );
    assert_eq!(server.handle().stats().connections, 1);
}

#[test]
fn tungstenite_client_answering_pings_stays_connected() {
    let server = start(fast());
    let (mut ws, _) = connect(server.local_addr(), &token("auto"));
    ws.get_mut().set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2500) {
        match ws.read() {
            Ok(tungstenite::Message::Close(_)) => panic!("closed despite answering pings"),
            _ => {
                let _ = ws.flush();
            }
        }
    }
    assert_eq!(server.handle().stats().timeouts, 0);
}
