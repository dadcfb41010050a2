//! The admin API's HTTP behaviour: keep-alive with a real client (curl), pipelining in order
//! across reactors, clients that send slowly or never read, `POST /ws/batch`, framing refusals,
//! and the publish-to-write latency histogram.
mod common;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Command;

use common::*;
use serde_json::{Value, json};

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n")
}

fn post(path: &str, token: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn body_json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Reads a response to HEAD: the head only (its Content-Length announces a body never sent).
fn read_head(s: &mut std::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "connection ended inside a head");
        buf.push(byte[0]);
    }
    String::from_utf8(buf).unwrap()
}

/// A connection subscribed to `system.notification` (an admin token: it may join any room).
fn subscriber(addr: SocketAddr, user: &str) -> Ws {
    let (mut ws, _) = connect(addr, &admin_token(user));
    send_json(
        &mut ws,
        json!({"type": "subscribe", "data": {"events": ["system.notification"]}}),
    );
    assert_eq!(recv_json(&mut ws)["type"], "subscription.acknowledged");
    ws
}

#[test]
fn curl_reuses_one_connection_for_several_requests() {
    let server = start(config());
    let base = format!("http://{}", server.local_addr());
    require("curl", "curl");
    let out = Command::new("curl")
        .args(["-s", "-w", "%{http_code} %{num_connects}\\n"])
        .args(["-o", "/dev/null"].repeat(4))
        .args(["-H", &format!("Authorization: Bearer {}", admin_token("ops"))])
        .arg(format!("{base}/health"))
        .arg(format!("{base}/ws/stats"))
        .arg(format!("{base}/metrics"))
        .arg(format!("{base}/ready"))
        .output()
        .expect("curl runs (apt-get install curl)");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines, ["200 1", "200 0", "200 0", "200 0"], "curl: {text}");
    assert_eq!(
        server.handle().stats().accepted,
        1,
        "one TCP connection for four requests"
    );
}

#[test]
fn pipelined_requests_are_answered_in_order_across_reactors() {
    let server = start(wsedge::Config { workers: 2, ..config() });
    let addr = server.local_addr();
    let admin = admin_token("ops");
    // Subscribers spread over both reactors (users are placed by a hash of their id).
    let mut subs: Vec<Ws> = (0..6).map(|i| subscriber(addr, &format!("p{i}"))).collect();
    let mut s = raw(addr);
    let auth = format!("Authorization: Bearer {admin}\r\n");
    let mut burst = String::new();
    burst += &get("/health", "");
    for i in 0..3 {
        burst += &post(
            "/ws/events/system.notification",
            &admin,
            &json!({"data": {"n": i}}).to_string(),
        );
    }
    burst += &get("/ws/stats", &auth);
    burst += "HEAD /ready HTTP/1.1\r\nHost: t\r\n\r\n";
    burst += &get("/ws/connections?limit=4", &auth);
    burst += &get("/nope", "");
    burst += &get("/ready", "Connection: close\r\n");
    s.write_all(burst.as_bytes()).unwrap();

    let (status, head, body) = read_http(&mut s);
    assert_eq!((status, body_json(&body)), (200, json!({"status": "ok"})));
    assert!(head.contains("Connection: keep-alive"), "{head}");
    for _ in 0..3 {
        let (status, _, body) = read_http(&mut s);
        assert_eq!(status, 200);
        assert_eq!(body_json(&body)["data"]["connections_reached"], 6);
    }
    let (status, _, body) = read_http(&mut s);
    assert_eq!(status, 200);
    assert_eq!(body_json(&body)["data"]["total_connections"], 6);
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (status, _, body) = read_http(&mut s);
    assert_eq!(status, 200);
    let page = body_json(&body);
    assert_eq!(page["data"]["count"], 4);
    assert!(page["data"]["next"].is_string(), "{page}");
    assert_eq!(read_http(&mut s).0, 404);
    let (status, head, _) = read_http(&mut s);
    assert_eq!(status, 200);
    assert!(head.contains("Connection: close"), "{head}");
    expect_eof(&mut s);
    // Each subscriber got the three publishes, in order.
    for ws in &mut subs {
        for i in 0..3 {
            assert_eq!(recv_json(ws)["data"]["n"], i);
        }
    }
}

#[test]
fn a_client_that_pipelines_without_reading_is_paused_not_buffered() {
    let server = start(config());
    let addr = server.local_addr();
    // 400 metrics requests (several MB of answers) written without reading any: the server
    // stops reading this socket while its answers wait, and serves everyone else meanwhile.
    let mut greedy = raw(addr);
    let auth = format!("Authorization: Bearer {}\r\n", admin_token("ops"));
    let many = get("/metrics", &auth).repeat(400);
    let writer = {
        let mut w = greedy.try_clone().unwrap();
        std::thread::spawn(move || w.write_all(many.as_bytes()))
    };
    let (status, _) = common::http::json(addr, "GET", "/ready", None, None);
    assert_eq!(status, 200);
    // Now read: every answer arrives, in order, complete.
    for _ in 0..400 {
        let (status, _, body) = read_http(&mut greedy);
        assert_eq!(status, 200);
        assert!(body.contains("wsedge_accepted_total"));
    }
    writer.join().unwrap().unwrap();
}

#[test]
fn a_slow_body_cannot_hold_the_admin_api() {
    let server = start(config());
    let addr = server.local_addr();
    let admin = admin_token("ops");
    // Authorized heads announcing 64 KiB, then a few body bytes and nothing more.
    let mut slow: Vec<_> = (0..8)
        .map(|_| {
            let mut s = raw(addr);
            // Longer than the 5 s request deadline the answer waits for.
            s.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
            let head = format!(
                "POST /ws/broadcast HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {admin}\r\nContent-Length: 65536\r\n\r\n{{\"a\""
            );
            s.write_all(head.as_bytes()).unwrap();
            s
        })
        .collect();
    // Unauthorized ones are refused from the head alone, without waiting for the body.
    let mut anon = raw(addr);
    anon.write_all(b"POST /ws/broadcast HTTP/1.1\r\nHost: t\r\nContent-Length: 65536\r\n\r\n")
        .unwrap();
    assert_eq!(read_http(&mut anon).0, 401);
    expect_eof(&mut anon);
    // Everyone else is served while they wait.
    assert_eq!(common::http::json(addr, "GET", "/ready", None, None).0, 200);
    assert_eq!(common::http::json(addr, "GET", "/ws/stats", Some(&admin), None).0, 200);
    assert!(common::http::request(addr, "GET", "/metrics", Some(&admin_token("metrics")), None).0 == 200);
    // Each slow request ends with 408 once its deadline (from its first byte) passes.
    for s in &mut slow {
        assert_eq!(read_http(s).0, 408);
        expect_eof(s);
    }
}

#[test]
fn a_trickled_head_on_the_admin_listener_cannot_hold_it() {
    let server = start(wsedge::Config {
        workers: 2,
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..config()
    });
    let admin_addr = server.admin_addr().unwrap();
    let mut slow: Vec<_> = (0..8)
        .map(|_| {
            let mut s = raw(admin_addr);
            s.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
            s.write_all(b"GET /ws/stats HTTP/1.1\r\nHost: t\r\nX-Slow: ").unwrap();
            s
        })
        .collect();
    // A byte more on each keeps nothing alive longer.
    for s in &mut slow {
        s.write_all(b"a").unwrap();
    }
    assert_eq!(common::http::json(admin_addr, "GET", "/ready", None, None).0, 200);
    let (status, body) = common::http::json(admin_addr, "GET", "/ws/stats", Some(&admin_token("ops")), None);
    assert_eq!(status, 200, "{body}");
    for s in &mut slow {
        assert_eq!(read_http(s).0, 408);
        expect_eof(s);
    }
    // Upgrades are not served on the admin listener.
    let mut s = raw(admin_addr);
    s.write_all(upgrade_request("/ws").as_bytes()).unwrap();
    assert_eq!(read_http(&mut s).0, 400);
}

#[test]
fn batch_sends_each_command_in_order_and_answers_each() {
    let server = start(wsedge::Config { workers: 2, ..config() });
    let addr = server.local_addr();
    let admin = admin_token("ops");
    let mut sub = subscriber(addr, "alice");
    send_json(&mut sub, json!({"type": "join", "data": {"rooms": ["lobby"]}}));
    assert_eq!(recv_json(&mut sub)["type"], "room.joined");
    let mut bob = subscriber(addr, "bob");
    let commands = json!({"commands": [
        {"method": "publish", "params": {"event": "system.notification", "data": {"n": 1}}},
        {"method": "send_to_user", "params": {"user_id": "alice", "type": "direct", "data": {"n": 2}}},
        {"method": "send_to_room", "params": {"room": "lobby", "data": {"n": 3}, "exclude_user": "bob"}},
        {"method": "broadcast", "params": {"type": "everyone", "n": 4}},
        {"method": "publish", "params": {"event": "no.such.event"}},
        {"method": "teleport", "params": {}},
        {"method": "send_to_user", "params": {"user_id": "nobody", "type": "direct"}},
    ]});
    let (status, body) = common::http::json(addr, "POST", "/ws/batch", Some(&admin), Some(commands));
    assert_eq!(status, 200, "{body}");
    let replies = body["data"]["replies"].as_array().unwrap();
    let reached: Vec<Value> = replies
        .iter()
        .map(|r| r["data"]["connections_reached"].clone())
        .collect();
    assert_eq!(reached[..4], [json!(2), json!(1), json!(1), json!(2)], "{body}");
    assert_eq!(replies[4]["code"], 404);
    assert_eq!(replies[5]["code"], 400);
    assert_eq!(replies[6]["data"]["connections_reached"], 0);
    // Alice sees all four (each channel's messages in order: messages of different channels
    // are sequenced by different reactors); bob the publish and the broadcast.
    let mut got: Vec<(String, Value)> = (0..4)
        .map(|_| {
            let m = recv_json(&mut sub);
            let n = if m["data"]["n"].is_null() {
                m["n"].clone()
            } else {
                m["data"]["n"].clone()
            };
            (m["type"].as_str().unwrap().to_string(), n)
        })
        .collect();
    got.sort_by_key(|(_, n)| n.as_i64());
    assert_eq!(
        got,
        [
            ("system.notification".to_string(), json!(1)),
            ("direct".to_string(), json!(2)),
            ("room.message".to_string(), json!(3)),
            ("everyone".to_string(), json!(4)),
        ]
    );
    let mut bob_got: Vec<Value> = (0..2)
        .map(|_| {
            let m = recv_json(&mut bob);
            if m["data"]["n"].is_null() {
                m["n"].clone()
            } else {
                m["data"]["n"].clone()
            }
        })
        .collect();
    bob_got.sort_by_key(|n| n.as_i64());
    assert_eq!(bob_got, [json!(1), json!(4)]);

    let bad = |body: Value| common::http::json(addr, "POST", "/ws/batch", Some(&admin), Some(body)).0;
    assert_eq!(bad(json!({})), 400);
    assert_eq!(bad(json!({"commands": []})), 400);
    assert_eq!(bad(json!({"commands": vec![json!({"method": "x"}); 1001]})), 400);
    assert_eq!(
        common::http::json(addr, "POST", "/ws/batch", None, Some(json!({"commands": []}))).0,
        401
    );
}

#[test]
fn bodies_need_one_unambiguous_length() {
    let server = start(config());
    let addr = server.local_addr();
    let admin = admin_token("ops");
    for (extra, want) in [
        ("Transfer-Encoding: chunked\r\n", 411),
        ("Content-Length: 2\r\nContent-Length: 3\r\n", 400),
        ("Content-Length: -1\r\n", 400),
    ] {
        let mut s = raw(addr);
        let req = format!("POST /ws/broadcast HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {admin}\r\n{extra}\r\n{{}}");
        s.write_all(req.as_bytes()).unwrap();
        assert_eq!(read_http(&mut s).0, want, "{extra}");
        expect_eof(&mut s);
    }
    // After a request that closes the connection, whatever else comes is dropped unread.
    let mut s = raw(addr);
    s.write_all(get("/health", "Connection: close\r\n").as_bytes()).unwrap();
    let _ = s.write_all(&vec![b'x'; 256 * 1024]);
    let (status, head, _) = read_http(&mut s);
    assert_eq!(status, 200);
    assert!(head.contains("Connection: close"), "{head}");
    // HTTP/1.0 closes unless asked to keep alive.
    let mut s = raw(addr);
    s.write_all(b"GET /health HTTP/1.0\r\n\r\n").unwrap();
    let (_, head, _) = read_http(&mut s);
    assert!(head.contains("Connection: close"), "{head}");
    expect_eof(&mut s);
}

#[test]
fn publishes_feed_the_latency_histogram() {
    let server = start(config());
    let addr = server.local_addr();
    let mut ws = subscriber(addr, "h");
    let count = || {
        let (_, _, text) = common::http::request(addr, "GET", "/metrics", Some(&admin_token("metrics")), None);
        text.lines()
            .find_map(|l| l.strip_prefix("wsedge_message_latency_seconds_count "))
            .map(|v| v.parse::<u64>().unwrap())
            .expect("histogram present")
    };
    assert_eq!(count(), 0);
    let admin = admin_token("ops");
    for i in 0..3 {
        let body = json!({"data": {"i": i}});
        let (status, _) = common::http::json(addr, "POST", "/ws/events/system.notification", Some(&admin), Some(body));
        assert_eq!(status, 200);
        recv_json(&mut ws);
    }
    wait_until("three observations", || count() == 3);
    let (_, _, text) = common::http::request(addr, "GET", "/metrics", Some(&admin_token("metrics")), None);
    assert!(
        text.contains("wsedge_message_latency_seconds_bucket{le=\"+Inf\"} 3"),
        "{text}"
    );
    assert!(text.contains("# TYPE wsedge_message_latency_seconds histogram"));
}

#[test]
fn idle_keep_alive_connections_cannot_crowd_out_health_checks() {
    let server = start(wsedge::Config {
        max_connections_per_ip: 0,
        ..config()
    });
    let addr = server.local_addr();
    // 1,024 kept-alive connections, each idle after one answered request (the reactor's share).
    let mut idle: Vec<_> = (0..1024)
        .map(|_| {
            let mut s = raw(addr);
            s.write_all(get("/health", "").as_bytes()).unwrap();
            assert_eq!(read_http(&mut s).0, 200);
            s
        })
        .collect();
    // One more is served; the longest-idle one makes room.
    let mut s = raw(addr);
    s.write_all(get("/ready", "").as_bytes()).unwrap();
    assert_eq!(read_http(&mut s).0, 200);
    expect_eof(&mut idle[0]);
    // The others are still open: a second request on the newest of them is answered.
    let last = idle.last_mut().unwrap();
    last.write_all(get("/health", "").as_bytes()).unwrap();
    assert_eq!(read_http(last).0, 200);
}

#[test]
fn expect_100_continue_gets_a_go_ahead_before_the_body() {
    let server = start(config());
    let addr = server.local_addr();
    let admin = admin_token("ops");
    let body = json!({"commands": [{"method": "broadcast", "params": {"type": "x"}}]}).to_string();
    let mut s = raw(addr);
    let head = format!(
        "POST /ws/batch HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {admin}\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // The interim response comes before we send a byte of the body.
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(body.as_bytes()).unwrap();
    let (status, _, reply) = read_http(&mut s);
    assert_eq!(status, 200, "{reply}");
    // Refused from the head: the final status, no 100, and the body is never waited for.
    let mut s = raw(addr);
    s.write_all(b"POST /ws/batch HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n")
        .unwrap();
    assert_eq!(read_http(&mut s).0, 401);
}

#[test]
fn a_keep_alive_connection_upgrades_after_its_plain_requests() {
    // Node's fetch and WebSocket share one connection pool: an upgrade may come on a
    // connection that already answered requests, alone or pipelined behind them.
    let s = start(config());
    let upgrade = upgrade_request(&format!("/ws?token={}", token("kept")));
    let mut one = raw(s.local_addr());
    one.write_all(get("/health", "").as_bytes()).unwrap();
    assert_eq!(read_http(&mut one).0, 200);
    one.write_all(upgrade.as_bytes()).unwrap();
    let mut two = raw(s.local_addr());
    two.write_all(format!("{}{}{upgrade}", get("/health", ""), get("/ready", "")).as_bytes())
        .unwrap();
    assert_eq!(read_http(&mut two).0, 200);
    assert_eq!(read_http(&mut two).0, 200);
    for sock in [&mut one, &mut two] {
        let (status, head, _) = read_http(sock);
        assert_eq!(status, 101, "{head}");
        let (opcode, payload) = read_frame(sock);
        assert_eq!(opcode, 0x81);
        assert_eq!(
            body_json(&String::from_utf8(payload).unwrap())["type"],
            "connection.established"
        );
    }
    // The admin listener never upgrades.
    let s = start(wsedge::Config {
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..config()
    });
    let mut admin = raw(s.admin_addr().unwrap());
    admin
        .write_all(format!("{}{upgrade}", get("/health", "")).as_bytes())
        .unwrap();
    assert_eq!(read_http(&mut admin).0, 200);
    assert_eq!(read_http(&mut admin).0, 400);
}
