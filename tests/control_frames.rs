//! Ping is answered with a pong carrying the same payload; fragmented messages are reassembled
//! with control frames in between; the close handshake echoes the peer's code; binary messages
//! are accepted.
mod common;
use std::io::Write;

use common::*;

#[test]
fn ping_gets_pong_with_the_same_payload() {
    let server = start(config());
    let mut s = raw_ws(server.local_addr(), &token("p"));
    read_frame(&mut s);
    s.write_all(&frame(0x89, b"payload-123")).unwrap();
    assert_eq!(read_frame(&mut s), (0x8A, b"payload-123".to_vec()));
    s.write_all(&frame(0x89, &[7u8; 125])).unwrap();
    assert_eq!(read_frame(&mut s), (0x8A, vec![7u8; 125]));
}

#[test]
fn fragmented_text_is_reassembled_around_a_ping() {
    let server = start(config());
    let mut s = raw_ws(server.local_addr(), &token("f"));
    read_frame(&mut s);
    let text = r#"{"type":"ping","data":{"pingId":"fr€g"}}"#;
    let msg = text.as_bytes();
    // The second split falls inside the three bytes of '€'.
    let inside_euro = text.find('€').unwrap() + 1;
    let (a, rest) = msg.split_at(10);
    let (b, c) = rest.split_at(inside_euro - 10);
    s.write_all(&frame(0x01, a)).unwrap();
    s.write_all(&frame(0x89, b"mid")).unwrap();
    s.write_all(&frame(0x00, b)).unwrap();
    s.write_all(&frame(0x80, c)).unwrap();
    assert_eq!(
        read_frame(&mut s),
        (0x8A, b"mid".to_vec()),
        "control frame answered mid-message"
    );
    let (first, pong) = read_frame(&mut s);
    assert_eq!(first, 0x81);
    let pong: serde_json::Value = serde_json::from_slice(&pong).unwrap();
    assert_eq!(pong["type"], "pong");
    assert_eq!(pong["data"]["pingId"], "fr€g");
}

#[test]
fn close_handshake_echoes_the_peer_code_and_ends_tcp() {
    let server = start(config());
    for (payload, expected) in [(vec![0x0F, 0xA0, b'b', b'y', b'e'], 4000u16), (vec![0x03, 0xE8], 1000)] {
        let mut s = raw_ws(server.local_addr(), &token("c"));
        read_frame(&mut s);
        s.write_all(&frame(0x88, &payload)).unwrap();
        assert_eq!(read_close(&mut s).0, expected);
        expect_eof(&mut s);
    }
    // An empty close is answered with an empty close.
    let mut s = raw_ws(server.local_addr(), &token("c"));
    read_frame(&mut s);
    s.write_all(&frame(0x88, b"")).unwrap();
    assert_eq!(read_frame(&mut s), (0x88, vec![]));
    expect_eof(&mut s);
    // Invalid close codes are a protocol error.
    let mut s = raw_ws(server.local_addr(), &token("c"));
    read_frame(&mut s);
    s.write_all(&frame(0x88, &[0x03, 0xED])).unwrap(); // 1005 may not be sent
    assert_eq!(read_close(&mut s).0, 1002);
    drop(s);
    wait_until("connections closed", || server.handle().stats().connections == 0);
}

#[test]
fn binary_messages_are_accepted() {
    let server = start(config());
    let mut s = raw_ws(server.local_addr(), &token("b"));
    read_frame(&mut s);
    s.write_all(&frame(0x82, &[0, 159, 146, 150, 255])).unwrap();
    s.write_all(&frame(0x02, &[1, 2])).unwrap();
    s.write_all(&frame(0x80, &[3])).unwrap();
    s.write_all(&frame(0x81, br#"{"type":"ping","data":{"pingId":"after-binary"}}"#))
        .unwrap();
    let (first, p) = read_frame(&mut s);
    assert_eq!(first, 0x81);
    assert!(String::from_utf8_lossy(&p).contains("after-binary"));
    wait_until("binary counted", || server.handle().stats().messages_in == 3);
}

#[test]
fn frames_pipelined_with_the_request_are_processed() {
    // Two reactors so the socket is usually handed to the user's home reactor with the bytes.
    let server = start(wsedge::Config { workers: 2, ..config() });
    for i in 0..8 {
        let mut s = raw(server.local_addr());
        let mut bytes = upgrade_request(&format!("/ws?token={}", token(&format!("pipe-{i}")))).into_bytes();
        bytes.extend(frame(0x81, br#"{"type":"ping","data":{"pingId":"early"}}"#));
        s.write_all(&bytes).unwrap();
        assert_eq!(read_http(&mut s).0, 101);
        let (_, hello) = read_frame(&mut s);
        assert!(String::from_utf8_lossy(&hello).contains("connection.established"));
        let (_, pong) = read_frame(&mut s);
        assert!(
            String::from_utf8_lossy(&pong).contains("early"),
            "{}",
            String::from_utf8_lossy(&pong)
        );
    }
}

#[test]
fn many_pings_get_pongs_in_order() {
    let server = start(config());
    let mut s = raw_ws(server.local_addr(), &token("order"));
    read_frame(&mut s);
    let mut burst = Vec::new();
    for i in 0..10 {
        burst.extend(frame(0x89, format!("payload-{i}").as_bytes()));
    }
    s.write_all(&burst).unwrap();
    for i in 0..10 {
        assert_eq!(read_frame(&mut s), (0x8A, format!("payload-{i}").into_bytes()));
    }
}
