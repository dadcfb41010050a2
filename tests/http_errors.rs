//! Malformed or wrong upgrade requests get a proper HTTP status and the socket is closed;
//! the server keeps serving others.
mod common;
use std::io::Write;

use common::*;

fn status_for(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
    let mut s = raw(addr);
    s.write_all(request.as_bytes()).unwrap();
    let (status, head, _) = read_http(&mut s);
    expect_eof(&mut s);
    (status, head)
}

#[test]
fn each_bad_request_gets_its_status() {
    let server = start(config());
    let addr = server.local_addr();
    let good = upgrade_request("/ws");
    assert_eq!(status_for(addr, &good.replace("/ws", "/elsewhere")).0, 404);
    let (status, head) = status_for(addr, &good.replace("GET", "POST"));
    assert_eq!(status, 405);
    assert!(head.contains("Allow: GET"), "{head}");
    let (status, head) = status_for(addr, &good.replace("Version: 13", "Version: 8"));
    assert_eq!(status, 426);
    assert!(head.contains("Sec-WebSocket-Version: 13"), "{head}");
    assert_eq!(
        status_for(addr, &good.replace("dGhlIHNhbXBsZSBub25jZQ==", "tooshort")).0,
        400
    );
    assert_eq!(
        status_for(addr, &good.replace("Connection: Upgrade", "Connection: keep-alive")).0,
        400
    );
    assert_eq!(status_for(addr, &good.replace("Host: localhost\r\n", "")).0, 400);
    assert_eq!(status_for(addr, "BLAH\x01\x02 nonsense\r\n\r\n").0, 400);
    // A plain GET to the WebSocket path asks for an upgrade.
    let (status, head) = status_for(addr, "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 426);
    assert!(head.to_ascii_lowercase().contains("upgrade: websocket"), "{head}");
    assert_eq!(status_for(addr, "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n").0, 404);

    let stats = server.handle().stats();
    for code in [400, 404, 405, 426] {
        assert!(stats.refused_with(code) >= 1, "{code} not counted");
    }
    // Still serving.
    connect(addr, &token("after"));
}

#[test]
fn oversized_request_head_gets_431() {
    let server = start(config());
    let big = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nX-Padding: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    let (status, _) = status_for(server.local_addr(), &big);
    assert_eq!(status, 431);
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let (status, _) = status_for(
        server.local_addr(),
        &format!("GET /ws HTTP/1.1\r\nHost: x\r\n{many}\r\n"),
    );
    assert_eq!(status, 431);
}

#[test]
fn health_answers_200() {
    let server = start(config());
    let (status, _) = {
        let mut s = raw(server.local_addr());
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let (status, head, body) = read_http(&mut s);
        assert_eq!(body, r#"{"status":"ok"}"#);
        (status, head)
    };
    assert_eq!(status, 200);
}

#[test]
fn origins_outside_the_allow_list_get_403() {
    let server = start(wsedge::Config {
        allowed_origins: vec!["https://app.example".into()],
        ..config()
    });
    let addr = server.local_addr();
    let path = format!("/ws?token={}", token("o"));
    let with_origin =
        |origin: &str| upgrade_request(&path).replace("\r\n\r\n", &format!("\r\nOrigin: {origin}\r\n\r\n"));
    assert_eq!(status_for(addr, &with_origin("https://evil.example")).0, 403);
    let mut s = raw(addr);
    s.write_all(with_origin("https://app.example").as_bytes()).unwrap();
    assert_eq!(read_http(&mut s).0, 101);
    // Non-browser clients send no Origin and are not affected.
    connect(addr, &token("cli"));
    assert_eq!(server.handle().stats().refused_with(403), 1);
}
