//! Backpressure: a consumer that stops reading is closed once its queue passes
//! `max_outbound_bytes` (1008 "slow consumer...", counted) while other clients keep getting
//! everything; control frames overtake a queued backlog.
mod common;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// A raw client with a tiny receive buffer, so the server's queue fills fast.
fn tight_client(addr: SocketAddr, token: &str) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&addr.into()).unwrap();
    let mut s: TcpStream = s.into();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(upgrade_request(&format!("/ws?token={token}")).as_bytes())
        .unwrap();
    assert_eq!(read_http(&mut s).0, 101);
    read_frame(&mut s); // connection.established
    s
}

fn subscribe(s: &mut TcpStream) {
    s.write_all(&frame(
        0x81,
        br#"{"type":"subscribe","data":{"events":["file.ready"]}}"#,
    ))
    .unwrap();
    read_frame(s);
}

#[test]
fn slow_consumer_is_closed_and_others_stay_fast() {
    let server = start(wsedge::Config {
        workers: 2,
        max_outbound_bytes: 256 * 1024,
        ..config()
    });
    let addr = server.local_addr();
    let mut slow = tight_client(addr, &token("slow"));
    subscribe(&mut slow);
    let (mut fast, _) = connect(addr, &token("fast"));
    send_json(
        &mut fast,
        json!({"type": "subscribe", "data": {"events": ["file.ready"]}}),
    );
    recv_json(&mut fast);

    let handle = server.handle();
    let payload = "x".repeat(4000);
    // 12 MB: past the kernel's socket buffers (auto-tuned up to 4 MB each way on loopback) and
    // then the 256 KiB queue cap.
    let total = 3000;
    let reader = std::thread::spawn(move || {
        let start = Instant::now();
        for i in 0..total {
            let m = recv_json(&mut fast);
            assert_eq!(m["data"]["seq"], i, "fast client lost or reordered a message");
        }
        start.elapsed()
    });
    for i in 0..total {
        handle.publish("file.ready", json!({"seq": i, "pad": payload})).unwrap();
    }
    let fast_took = reader.join().unwrap();
    assert!(fast_took < Duration::from_secs(10), "{fast_took:?}");
    wait_until("slow consumer closed", || handle.stats().slow_consumer_closes == 1);
    // The slow client eventually reads what was in flight, then the close frame.
    let (code, reason) = read_close(&mut slow);
    assert_eq!(code, 1008);
    assert!(reason.starts_with("slow consumer"), "{reason}");
    assert!(
        handle.stats().queued_bytes < 300 * 1024,
        "the slow consumer's backlog was dropped"
    );
}

#[test]
fn pong_overtakes_a_queued_backlog() {
    let server = start(wsedge::Config {
        max_outbound_bytes: 64 << 20,
        ..config()
    });
    let addr = server.local_addr();
    let mut c = tight_client(addr, &token("ponger"));
    subscribe(&mut c);
    let handle = server.handle();
    // 16 MB, so most of it must wait in the server's queue rather than in kernel buffers.
    let total = 4000;
    let payload = "y".repeat(4000);
    for i in 0..total {
        handle.publish("file.ready", json!({"seq": i, "pad": payload})).unwrap();
    }
    wait_until("backlog queued on the server", || handle.stats().queued_bytes > 8 << 20);
    c.write_all(&frame(0x89, b"urgent")).unwrap();
    let mut seen = 0;
    loop {
        let (first, payload) = read_frame(&mut c);
        if first == 0x8A {
            assert_eq!(payload, b"urgent");
            break;
        }
        seen += 1;
        assert!(seen < total, "pong arrived only after the whole backlog");
    }
    assert!(
        seen < total / 2,
        "pong should overtake most of the backlog, came after {seen}"
    );
}
