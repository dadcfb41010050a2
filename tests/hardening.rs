//! What a hostile client can do with a socket and at most a cheap token stays bounded: ping
//! floods, one principal holding every slot, bytes sent along with the upgrade, half-closes,
//! expired tokens, repeated Origin headers, oversized pingIds.
mod common;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::http::json;
use common::*;
use serde_json::json;
use wsedge::Config;

/// A client socket with a tiny receive buffer, from `source` (e.g. 127.0.0.2).
fn small_window_socket(addr: SocketAddr, source: &str) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.bind(&format!("{source}:0").parse::<SocketAddr>().unwrap().into())
        .unwrap();
    s.connect(&addr.into()).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s
}

#[test]
fn a_ping_flood_that_never_reads_is_closed_at_the_outbound_cap() {
    let server = start(Config {
        max_outbound_bytes: 16 * 1024,
        max_control_frames_per_second: 0,
        ..config()
    });
    let addr = server.local_addr();
    let mut s = small_window_socket(addr, "127.0.0.1");
    s.write_all(upgrade_request(&format!("/ws?token={}", token("flood"))).as_bytes())
        .unwrap();
    let (status, _, _) = read_http(&mut s);
    assert_eq!(status, 101);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let mut s = s.try_clone().unwrap();
        let stop = stop.clone();
        std::thread::spawn(move || {
            s.set_write_timeout(Some(std::time::Duration::from_millis(200)))
                .unwrap();
            let pings: Vec<u8> = (0..64).flat_map(|_| frame(0x89, &[b'p'; 125])).collect();
            // Bounded: 200,000 pings (26 MB) is far past any kernel buffer.
            for _ in 0..200_000 / 64 {
                if stop.load(Ordering::Relaxed) || s.write_all(&pings).is_err() {
                    break;
                }
            }
        })
    };
    let handle = server.handle();
    wait_until("the flooder is closed as a slow consumer", || {
        handle.stats().slow_consumer_closes == 1
    });
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(
        handle.stats().queued_bytes <= 16 * 1024 + 256,
        "pongs are capped: {} bytes queued",
        handle.stats().queued_bytes
    );
}

#[test]
fn control_frames_have_a_rate_limit() {
    let server = start(Config {
        max_control_frames_per_second: 20,
        ..config()
    });
    let mut s = raw_ws(server.local_addr(), &token("pinger"));
    read_frame(&mut s);
    // 100 pings in one write: whatever second boundary falls inside, one second sees > 20.
    let pings: Vec<u8> = (0..100).flat_map(|_| frame(0x89, b"x")).collect();
    s.write_all(&pings).unwrap();
    assert_eq!(
        read_close(&mut s),
        (1008, "control frame rate limit exceeded".to_string())
    );
    assert_eq!(server.handle().stats().control_frame_closes, 1);
    // Ordinary ping use is unaffected.
    let mut ok = raw_ws(server.local_addr(), &token("polite"));
    read_frame(&mut ok);
    for _ in 0..5 {
        ok.write_all(&frame(0x89, b"hi")).unwrap();
        assert_eq!(read_frame(&mut ok), (0x8A, b"hi".to_vec()));
    }
}

#[test]
fn the_101_goes_first_even_with_a_ping_in_the_same_write() {
    let server = start(config());
    for i in 0..20 {
        let mut s = raw(server.local_addr());
        let mut bytes = upgrade_request(&format!("/ws?token={}", token(&format!("early{i}")))).into_bytes();
        bytes.extend_from_slice(&frame(0x89, b"early"));
        s.write_all(&bytes).unwrap();
        let (status, _, _) = read_http(&mut s);
        assert_eq!(status, 101, "client {i}");
        let mut got_pong = false;
        let mut got_hello = false;
        while !(got_pong && got_hello) {
            match read_frame(&mut s) {
                (0x8A, p) => {
                    assert_eq!(p, b"early");
                    got_pong = true;
                }
                (0x81, _) => got_hello = true,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }
}

#[test]
fn an_outbound_cap_too_small_to_greet_is_refused_and_the_smallest_allowed_works() {
    // 64 bytes would close every connection: the greeting alone is larger.
    let e = Config {
        max_outbound_bytes: 64,
        ..config()
    }
    .validate()
    .unwrap_err();
    assert!(
        e.to_string().contains("max_outbound_bytes") && e.to_string().contains("4096"),
        "{e}"
    );
    let server = start(Config {
        max_outbound_bytes: wsedge::config::bounds::MIN_OUTBOUND_BYTES,
        ..config()
    });
    let (mut ws, _) = connect(server.local_addr(), &token("tiny"));
    send_json(&mut ws, serde_json::json!({"type": "ping"}));
    assert_eq!(recv_json(&mut ws)["type"], "pong");
}

/// Sends `request`, half-closes, and returns everything the server wrote before closing.
fn half_closed_exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = raw(addr);
    s.write_all(request).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn a_half_closed_client_still_gets_its_answer() {
    let server = start(Config { workers: 2, ..config() });
    let addr = server.local_addr();
    for i in 0..50 {
        let health = half_closed_exchange(addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(health.starts_with(b"HTTP/1.1 200"), "run {i}: {health:?}");
        let bad = half_closed_exchange(addr, b"GARBAGE\x01\r\n\r\n");
        assert!(bad.starts_with(b"HTTP/1.1 400"), "run {i}: {bad:?}");
        let up = half_closed_exchange(
            addr,
            upgrade_request(&format!("/ws?token={}", token(&format!("half{i}")))).as_bytes(),
        );
        assert!(up.starts_with(b"HTTP/1.1 101"), "run {i}: {up:?}");
        let text = String::from_utf8_lossy(&up);
        assert!(text.contains("connection.established"), "run {i}: {text}");
    }
}

#[test]
fn closing_connections_do_not_hold_slots_that_admit_users() {
    let server = start(Config {
        max_connections: 10,
        ..config()
    });
    let addr = server.local_addr();
    // One user opens 40 connections that never answer a close: each evicts the oldest, which
    // then waits (up to the close timeout) for a close frame that never comes.
    let hog = token("hog");
    let _held: Vec<TcpStream> = (0..40).map(|_| raw_ws(addr, &hog)).collect();
    wait_until("evictions done", || server.handle().stats().evictions == 37);
    assert_eq!(server.handle().open_connections(), 3);
    let (_ws, hello) = connect(addr, &token("someone-else"));
    assert_eq!(hello["data"]["user_id"], "someone-else");
}

#[test]
fn one_address_cannot_hold_every_socket() {
    let server = start(Config {
        max_connections_per_ip: 5,
        ..config()
    });
    let addr = server.local_addr();
    let held: Vec<TcpStream> = (0..5).map(|_| from(addr, "127.0.0.3")).collect();
    // Idle sockets count too (they hold descriptors and handshake slots).
    let mut sixth = from(addr, "127.0.0.3");
    let (status, head, _) = read_http(&mut sixth);
    assert_eq!(status, 429, "{head}");
    // Other addresses are not affected.
    let (_ws, _) = connect(addr, &token("neighbour"));
    let mut other = from(addr, "127.0.0.4");
    other.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_http(&mut other).0, 200);
    // A socket closed gives its place back.
    drop(held);
    wait_until("the address's sockets are released", || {
        let mut s = from(addr, "127.0.0.3");
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).is_ok() && &buf == b"HTTP/1.1 200"
    });
    assert!(server.handle().stats().refused_with(429) >= 1);
}

#[test]
fn a_connection_closes_when_its_token_expires_and_refresh_extends_it() {
    let server = start(config());
    let addr = server.local_addr();
    let short = |sub: &str| sign(json!({"sub": sub, "exp": now() + 2}));
    let (mut doomed, _) = connect(addr, &short("doomed"));
    let (mut kept, _) = connect(addr, &short("kept"));
    let fresh = sign(json!({"sub": "kept", "exp": now() + 3600}));
    send_json(&mut kept, json!({"type": "token.refresh", "data": {"token": fresh}}));
    let reply = recv_json(&mut kept);
    assert_eq!(reply["type"], "token.refreshed", "{reply}");
    assert_eq!(reply["data"]["expires_at"], now_plus(3600, &reply));
    // The other user's token expired at the same second: once it is closed, the refreshed
    // connection has passed its old expiry too.
    assert_eq!(expect_close(&mut doomed), (1008, "token expired".to_string()));
    send_json(&mut kept, json!({"type": "ping", "data": {"pingId": 1}}));
    assert_eq!(recv_json(&mut kept)["type"], "pong");
    assert_eq!(server.handle().stats().token_expirations, 1);
}

/// The `expires_at` the server reported, checked to be the refreshed token's `exp`.
fn now_plus(secs: u64, reply: &serde_json::Value) -> serde_json::Value {
    let got = reply["data"]["expires_at"].as_u64().unwrap();
    let want = now() + secs;
    assert!(
        got + 5 >= want && got <= want,
        "expires_at {got}, expected about {want}"
    );
    json!(got)
}

#[test]
fn token_refresh_refuses_other_users_and_bad_tokens() {
    let server = start(config());
    let (mut ws, _) = connect(server.local_addr(), &token("alice"));
    for (tok, why) in [
        (token("mallory"), "token is for another user"),
        (
            sign(json!({"sub": "alice", "exp": now() - 10})),
            "authentication failed: token expired",
        ),
        (
            sign(json!({"sub": "alice"})),
            "authentication failed: missing exp claim",
        ),
    ] {
        send_json(&mut ws, json!({"type": "token.refresh", "data": {"token": tok}}));
        let e = recv_json(&mut ws);
        assert_eq!(e["type"], "error");
        assert_eq!(e["data"]["code"], "INVALID_TOKEN");
        assert_eq!(e["data"]["message"], why);
    }
    send_json(&mut ws, json!({"type": "token.refresh", "data": {}}));
    assert_eq!(recv_json(&mut ws)["data"]["code"], "INVALID_MESSAGE_FORMAT");
}

#[test]
fn an_admin_token_without_exp_opens_nothing() {
    let server = start(config());
    let forever = sign(json!({"sub": "root", "role": "admin"}));
    let (status, body) = json(server.local_addr(), "GET", "/ws/stats", Some(&forever), None);
    assert_eq!(status, 401, "{body}");
}

#[test]
fn a_repeated_origin_does_not_bypass_the_allow_list() {
    let server = start(Config {
        allowed_origins: vec!["https://good.example".into()],
        ..config()
    });
    let mut s = raw(server.local_addr());
    let req = upgrade_request(&format!("/ws?token={}", token("o"))).replace(
        "Host: localhost\r\n",
        "Host: localhost\r\nOrigin: https://evil.example\r\nOrigin: https://evil.example\r\n",
    );
    s.write_all(req.as_bytes()).unwrap();
    assert_eq!(read_http(&mut s).0, 400);
}

#[test]
fn a_deep_ping_id_is_not_reflected() {
    let server = start(Config {
        max_message_size: 1 << 20,
        ..config()
    });
    let (mut ws, _) = connect(server.local_addr(), &token("deep"));
    let deep = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    let msg = format!(r#"{{"type":"ping","data":{{"pingId":{deep}}}}}"#);
    ws.send(tungstenite::Message::text(msg)).unwrap();
    let reply = recv_json(&mut ws);
    assert_eq!(reply["data"]["code"], "INVALID_MESSAGE_FORMAT", "{reply}");
    send_json(&mut ws, json!({"type": "ping", "data": {"pingId": "abc"}}));
    assert_eq!(recv_json(&mut ws)["data"]["pingId"], "abc");
}

#[test]
fn post_to_the_websocket_path_is_405() {
    let server = start(config());
    let (status, head, _) = common::http::request(server.local_addr(), "POST", "/ws", None, Some("{}"));
    assert_eq!(status, 405);
    assert!(head.to_ascii_lowercase().contains("allow: get"), "{head}");
}

#[test]
fn one_message_names_at_most_64_rooms_or_events() {
    let server = start(config());
    let (mut ws, _) = connect(server.local_addr(), &admin_token("many"));
    let rooms: Vec<String> = (0..65).map(|i| format!("r{i}")).collect();
    send_json(&mut ws, json!({"type": "join", "data": {"rooms": rooms}}));
    let e = recv_json(&mut ws);
    assert_eq!(e["data"]["code"], "INVALID_MESSAGE_FORMAT", "{e}");
    assert_eq!(e["data"]["message"], "at most 64 rooms per request");
    let events = vec!["upload.progress"; 65];
    send_json(&mut ws, json!({"type": "subscribe", "data": {"events": events}}));
    assert_eq!(recv_json(&mut ws)["data"]["message"], "at most 64 events per request");
    send_json(&mut ws, json!({"type": "join", "data": {"rooms": &rooms[..64]}}));
    assert_eq!(recv_json(&mut ws)["data"]["rooms"].as_array().unwrap().len(), 64);
}

/// Many members leaving a room in an arbitrary order: every remaining member, and only they,
/// still receive the room's messages (members' stored positions stay right as others leave).
#[test]
fn room_membership_stays_exact_through_many_leaves() {
    let server = start(config());
    let addr = server.local_addr();
    let mut members: Vec<(usize, Ws)> = (0..24)
        .map(|i| {
            let (mut ws, _) = connect(addr, &admin_token(&format!("m{i}")));
            send_json(&mut ws, json!({"type": "join", "data": {"rooms": ["hall"]}}));
            assert_eq!(recv_json(&mut ws)["type"], "room.joined");
            (i, ws)
        })
        .collect();
    // Leave in a scrambled order: first, last, middle, ...
    let mut left = Vec::new();
    for k in [0usize, 22, 5, 11, 0, 3, 9, 1] {
        let (i, mut ws) = members.remove(k.min(members.len() - 1));
        send_json(&mut ws, json!({"type": "leave", "data": {"rooms": ["hall"]}}));
        assert_eq!(recv_json(&mut ws)["data"]["rooms"], json!(["hall"]), "member {i}");
        left.push(ws);
    }
    let handle = server.handle();
    let n = handle.send_to_room("hall", "room.message", json!({"n": 1}));
    assert_eq!(n, Ok(members.len()));
    for (i, ws) in &mut members {
        assert_eq!(recv_json(ws)["type"], "room.message", "member {i}");
    }
}

/// Slow admin clients cannot hang health checks or hold the admin pool: `/ready`, `/metrics`
/// and `/health` are answered by the reactor; an admin route without a token is refused before
/// its body is read; and a request gets one deadline however slowly its bytes trickle in.
#[test]
fn trickling_admin_requests_do_not_hang_health_checks() {
    let server = start(config());
    let addr = server.local_addr();
    let head = |token: Option<&str>| {
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        format!(
            "POST /ws/broadcast HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: 65536\r\n\r\n"
        )
    };
    // Without a token: 401 at once, not after 64 KiB.
    let mut anon = raw(addr);
    anon.write_all(head(None).as_bytes()).unwrap();
    assert_eq!(read_http(&mut anon).0, 401);
    // With a token, two slow bodies occupy both admin threads...
    let admin = admin_token("ops");
    let slow: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = raw(addr);
            s.write_all(head(Some(&admin)).as_bytes()).unwrap();
            s.write_all(b"{").unwrap();
            s
        })
        .collect();
    // ...and health checks still answer at once.
    let ops = admin_token("ops");
    for path in ["/ready", "/metrics", "/health"] {
        let (status, _, _) = common::http::request(addr, "GET", path, Some(&ops), None);
        assert_eq!(status, 200, "{path}");
    }
    // Trickling does not extend a request's deadline: a byte every 200 ms still ends in 408.
    let mut s = slow.into_iter().next().unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    let mut writer = s.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for _ in 0..100 {
            if writer.write_all(b" ").is_err() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    });
    assert_eq!(read_http(&mut s).0, 408);
    drop(s);
    trickle.join().unwrap();
}
