//! permessage-deflate (RFC 7692) over real sockets: what is negotiated, fan-out compressed once
//! for every recipient that negotiated it (and left plain for the rest), compressed client
//! messages (whole or fragmented), and what closes a connection: a deflate bomb (1009), RSV1
//! where it is not allowed (1002), compressed text that is not UTF-8 (1007).
mod common;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};

use common::*;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::{Value, json};
use wsedge::Config;

const OFFER: &str = "permessage-deflate; client_max_window_bits";

fn server(compression: bool) -> wsedge::RunningServer {
    start(Config {
        workers: 2,
        compression,
        compression_min_size: 256,
        rate_limit_messages: 0,
        ..config()
    })
}

/// Upgrades with `extensions` offered; returns the socket and the response head.
fn upgrade(addr: SocketAddr, user: &str, extensions: Option<&str>) -> (TcpStream, String) {
    let mut s = raw(addr);
    let mut req = upgrade_request(&format!("/ws?token={}", token(user)));
    if let Some(e) = extensions {
        req.insert_str(req.len() - 2, &format!("Sec-WebSocket-Extensions: {e}\r\n"));
    }
    s.write_all(req.as_bytes()).unwrap();
    let (status, head, _) = read_http(&mut s);
    assert_eq!(status, 101, "{head}");
    let hello: Value = serde_json::from_slice(&read_message(&mut s)).unwrap();
    assert_eq!(hello["type"], "connection.established");
    (s, head)
}

/// One message's payload, inflated if it came compressed.
fn read_message(s: &mut TcpStream) -> Vec<u8> {
    let (first, payload) = read_frame(s);
    if first & 0x40 != 0 { inflate(&payload) } else { payload }
}

fn extension_of(head: &str) -> Option<String> {
    head.lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Extensions: "))
        .map(str::to_string)
}

/// Raw deflate of one message, the sync tail removed (what a client sends).
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    loop {
        let start = c.total_in() as usize;
        c.compress_vec(&data[start..], &mut out, FlushCompress::Sync).unwrap();
        if c.total_in() as usize == data.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity());
    }
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

fn inflate(data: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(1 << 20);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync).unwrap();
    out
}

#[test]
fn negotiation_answers_only_offers_it_can_honour() {
    let on = server(true);
    let accepted = Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover".to_string());
    assert_eq!(extension_of(&upgrade(on.local_addr(), "a", Some(OFFER)).1), accepted);
    assert_eq!(
        extension_of(
            &upgrade(
                on.local_addr(),
                "a",
                Some("permessage-deflate; server_max_window_bits=10, permessage-deflate")
            )
            .1
        ),
        accepted,
        "the second offer"
    );
    assert_eq!(
        extension_of(
            &upgrade(
                on.local_addr(),
                "a",
                Some("permessage-deflate; server_max_window_bits=10")
            )
            .1
        ),
        None
    );
    assert_eq!(
        extension_of(&upgrade(on.local_addr(), "a", Some("permessage-deflate; bogus")).1),
        None
    );
    assert_eq!(extension_of(&upgrade(on.local_addr(), "a", None).1), None);
    let off = server(false);
    assert_eq!(
        extension_of(&upgrade(off.local_addr(), "a", Some(OFFER)).1),
        None,
        "off by default"
    );
}

#[test]
fn a_fan_out_is_compressed_once_for_every_recipient_that_negotiated_it() {
    let s = server(true);
    let addr = s.local_addr();
    let mut compressed: Vec<TcpStream> = (0..3).map(|i| upgrade(addr, &format!("c{i}"), Some(OFFER)).0).collect();
    let (mut plain, _) = upgrade(addr, "p", None);
    for ws in compressed.iter_mut().chain([&mut plain]) {
        ws.write_all(&frame(
            0x81,
            br#"{"type":"subscribe","data":{"events":["review.updated"]}}"#,
        ))
        .unwrap();
        let ack: Value = serde_json::from_slice(&read_message(ws)).unwrap();
        assert_eq!(ack["type"], "subscription.acknowledged");
    }
    let h = s.handle();
    let before = metric(addr, "wsedge_compressions_total");
    let text = "a review that says the same thing again and again. ".repeat(40);
    assert_eq!(h.publish("review.updated", json!({"text": text})).unwrap(), 4);
    let (first, body) = read_frame(&mut plain);
    assert_eq!(first, 0x81);
    let expected: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(expected["data"]["text"], text.as_str());
    for ws in compressed.iter_mut() {
        let (first, payload) = read_frame(ws);
        assert_eq!(first, 0xC1, "FIN, RSV1, text");
        assert!(payload.len() < body.len() / 4, "{} of {}", payload.len(), body.len());
        assert_eq!(inflate(&payload), body, "the same bytes once inflated");
    }
    assert_eq!(
        metric(addr, "wsedge_compressions_total") - before,
        1.0,
        "compressed once for three recipients"
    );
    // Below the minimum size: plain, even where negotiated.
    h.publish("review.updated", json!({"text": "short"})).unwrap();
    assert_eq!(read_frame(&mut compressed[0]).0, 0x81);
}

fn metric(addr: SocketAddr, name: &str) -> f64 {
    let (_, _, body) = common::http::request(addr, "GET", "/metrics", Some(&admin_token("metrics")), None);
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[test]
fn compressed_client_messages_whole_or_fragmented_are_understood() {
    let s = server(true);
    let (mut ws, _) = upgrade(s.local_addr(), "d", Some(OFFER));
    let ping = json!({"type": "ping", "data": {"pingId": "x".repeat(100)}}).to_string();
    let z = deflate(ping.as_bytes());
    ws.write_all(&frame(0xC1, &z)).unwrap();
    let pong: Value = serde_json::from_slice(&read_message(&mut ws)).unwrap();
    assert_eq!(pong["data"]["pingId"], "x".repeat(100));
    // The same message in three fragments: RSV1 on the first only.
    let (a, rest) = z.split_at(z.len() / 3);
    let (b, c) = rest.split_at(rest.len() / 2);
    let mut bytes = frame(0x41, a);
    bytes.extend(frame(0x00, b));
    bytes.extend(frame(0x80, c));
    ws.write_all(&bytes).unwrap();
    let pong: Value = serde_json::from_slice(&read_message(&mut ws)).unwrap();
    assert_eq!(pong["type"], "pong");
    // An uncompressed message is fine too.
    ws.write_all(&frame(0x81, br#"{"type":"ping","data":{}}"#)).unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&read_frame(&mut ws).1).unwrap()["type"],
        "pong"
    );
}

#[test]
fn bombs_bad_bits_and_bad_text_close_the_connection() {
    let s = server(true);
    let addr = s.local_addr();
    // 64 MiB of spaces in a few dozen KB: closed once the 64 KiB limit is passed.
    let (mut ws, _) = upgrade(addr, "e", Some(OFFER));
    let bomb = deflate(&vec![b' '; 64 << 20]);
    assert!(bomb.len() < 100_000);
    ws.write_all(&frame(0xC1, &bomb)).unwrap();
    assert_eq!(read_close(&mut ws).0, 1009);

    let (mut ws, _) = upgrade(addr, "e", None);
    ws.write_all(&frame(0xC1, &deflate(b"{}"))).unwrap();
    assert_eq!(read_close(&mut ws).0, 1002, "RSV1 without the extension");

    let (mut ws, _) = upgrade(addr, "e", Some(OFFER));
    let mut bytes = frame(0x01, b"{");
    bytes.extend(frame(0xC0, &deflate(b"}")));
    ws.write_all(&bytes).unwrap();
    assert_eq!(read_close(&mut ws).0, 1002, "RSV1 on a continuation");

    let (mut ws, _) = upgrade(addr, "e", Some(OFFER));
    ws.write_all(&frame(0xC9, b"")).unwrap();
    assert_eq!(read_close(&mut ws).0, 1002, "RSV1 on a ping");

    let (mut ws, _) = upgrade(addr, "e", Some(OFFER));
    ws.write_all(&frame(0xC1, &deflate(&[0xff, 0xfe, 0x41]))).unwrap();
    assert_eq!(read_close(&mut ws).0, 1007, "not UTF-8 once inflated");

    let (mut ws, _) = upgrade(addr, "e", Some(OFFER));
    ws.write_all(&frame(0xC1, b"\xff\xff\xff\xff not deflate")).unwrap();
    assert_eq!(read_close(&mut ws).0, 1002, "not a deflate stream");
}
