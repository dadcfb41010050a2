//! RFC 6455 violations close the connection with the right code: 1002 for protocol errors,
//! 1007 for invalid UTF-8 (also split across fragments), 1009 for oversized messages.
mod common;
use std::io::Write;

use common::*;

fn close_after(frames: &[Vec<u8>]) -> (u16, String) {
    let server = start(config());
    let mut s = raw_ws(server.local_addr(), &token("v"));
    let (_, hello) = read_frame(&mut s);
    assert!(String::from_utf8_lossy(&hello).contains("connection.established"));
    for f in frames {
        s.write_all(f).unwrap();
    }
    let close = read_close(&mut s);
    expect_eof(&mut s);
    close
}

#[test]
fn unmasked_client_frame_is_1002() {
    assert_eq!(close_after(&[vec![0x81, 0x02, b'h', b'i']]).0, 1002);
}

#[test]
fn reserved_opcodes_are_1002() {
    for op in [0x83, 0x87, 0x8B, 0x8F] {
        assert_eq!(close_after(&[frame(op, b"x")]).0, 1002, "opcode {op:#x}");
    }
}

#[test]
fn reserved_bits_are_1002() {
    for first in [0xC1, 0xA1, 0x91] {
        assert_eq!(close_after(&[frame(first, b"x")]).0, 1002, "{first:#x}");
    }
}

#[test]
fn oversized_and_fragmented_control_frames_are_1002() {
    assert_eq!(close_after(&[frame(0x89, &[0u8; 126])]).0, 1002);
    assert_eq!(close_after(&[frame(0x09, b"a"), frame(0x80, b"b")]).0, 1002);
}

#[test]
fn continuation_without_start_and_interleaved_data_are_1002() {
    assert_eq!(close_after(&[frame(0x80, b"x")]).0, 1002);
    assert_eq!(close_after(&[frame(0x01, b"a"), frame(0x81, b"b")]).0, 1002);
}

#[test]
fn invalid_utf8_is_1007_even_split_across_fragments() {
    assert_eq!(close_after(&[frame(0x81, &[0xC0, 0xAF])]).0, 1007);
    // 0xF0 0x9F starts a 4-byte sequence; 0x28 can never continue it.
    assert_eq!(
        close_after(&[frame(0x01, b"ok \xF0\x9F"), frame(0x80, b"\x28rest")]).0,
        1007
    );
    // Truncated sequence at the end of the last fragment.
    assert_eq!(close_after(&[frame(0x01, b"abc"), frame(0x80, b"\xE2\x82")]).0, 1007);
}

#[test]
fn oversized_message_is_1009_after_a_message_too_large_error() {
    let server = start(wsedge::Config {
        max_message_size: 1000,
        ..config()
    });
    let mut s = raw_ws(server.local_addr(), &token("big"));
    read_frame(&mut s);
    s.write_all(&frame(0x81, &vec![b'a'; 1001])).unwrap();
    let (_, err) = read_frame(&mut s);
    let err: serde_json::Value = serde_json::from_slice(&err).unwrap();
    assert_eq!(err["data"]["code"], "MESSAGE_TOO_LARGE");
    assert_eq!(read_close(&mut s).0, 1009);
    // Fragmented: each piece small, the sum too big.
    let mut s = raw_ws(server.local_addr(), &token("big2"));
    read_frame(&mut s);
    s.write_all(&frame(0x01, &[b'a'; 400])).unwrap();
    s.write_all(&frame(0x00, &[b'a'; 400])).unwrap();
    s.write_all(&frame(0x80, &[b'a'; 400])).unwrap();
    assert_eq!(read_close(&mut s).0, 1009);
}

#[test]
fn a_violation_does_not_disturb_other_connections() {
    let server = start(config());
    let (mut good, _) = connect(server.local_addr(), &token("good"));
    let mut bad = raw_ws(server.local_addr(), &token("bad"));
    read_frame(&mut bad);
    bad.write_all(&[0x81, 0x01, b'x']).unwrap();
    assert_eq!(read_close(&mut bad).0, 1002);
    send_json(
        &mut good,
        serde_json::json!({"type": "ping", "data": {"pingId": "still"}}),
    );
    assert_eq!(recv_json(&mut good)["data"]["pingId"], "still");
}

#[test]
fn the_close_frame_arrives_even_while_the_oversized_payload_keeps_coming() {
    // The whole oversized frame is sent in one go: the bytes after its header must not be
    // parsed as frames (which used to drop the socket before the close frame was written).
    let server = start(config());
    let mut s = raw_ws(server.local_addr(), &token("big3"));
    read_frame(&mut s);
    let big = frame(0x81, &vec![b'x'; 200_000]);
    let mut writer = s.try_clone().unwrap();
    let t = std::thread::spawn(move || {
        let _ = writer.write_all(&big);
    });
    let (_, err) = read_frame(&mut s);
    assert!(String::from_utf8_lossy(&err).contains("MESSAGE_TOO_LARGE"));
    assert_eq!(read_close(&mut s).0, 1009);
    t.join().unwrap();
    let mut s = raw_ws(server.local_addr(), &token("garbage"));
    read_frame(&mut s);
    // An unmasked frame followed by more garbage: still exactly one close, 1002.
    let mut bytes = vec![0x81, 0x05, b'h', b'e', b'l', b'l', b'o'];
    bytes.extend_from_slice(&[0xFF; 64]);
    s.write_all(&bytes).unwrap();
    assert_eq!(read_close(&mut s).0, 1002);
    expect_eof(&mut s);
}
