//! Authentication by the backend (`--auth-proxy`) against a real HTTP backend: accepted with
//! the backend's user and claims, refused with its status, a backend that stalls or is away,
//! and cached answers.

mod common;

use std::time::Duration;

use common::backend::{Answer, Backend};
use common::*;
use serde_json::{Value, json};
use wsedge::config::AuthProxyConfig;

/// Answers each `auth` item by its cookie: `session=good` lets in, `session=bad` refuses
/// with 401, `session=slow` stalls the whole batch.
fn proxy() -> Backend {
    Backend::start(|batch| {
        let items = batch["items"].as_array().unwrap();
        if items.iter().any(|i| i["headers"]["cookie"] == "session=slow") {
            return Answer::Stall;
        }
        let results: Vec<Value> = items
            .iter()
            .map(|i| match i["kind"].as_str() {
                Some("may_join") => match i["room"].as_str() {
                    Some(r) if r.starts_with("ok") => json!({"message_id": i["message_id"], "result": true}),
                    _ => json!({"message_id": i["message_id"], "error": {"message": "members only"}}),
                },
                Some("may_subscribe") => {
                    json!({"message_id": i["message_id"], "result": i["event"] == "system.notification"})
                }
                _ => auth_answer(i),
            })
            .collect();
        Answer::Reply(200, json!({ "results": results }).to_string())
    })
}

fn auth_answer(i: &Value) -> Value {
    match i["headers"]["cookie"].as_str() {
        Some("session=any") => json!({"message_id": i["message_id"], "result": {"user_id": "u-any", "rooms": ["*"]}}),
        _ => match i["headers"]["cookie"].as_str() {
            Some("session=good") => json!({"message_id": i["message_id"], "result": {
                    "user_id": "u-good", "name": "Good", "rooms": ["lobby"], "exp": now() + 3600}}),
            _ => json!({"message_id": i["message_id"], "error": {"status": 401, "message": "bad session"}}),
        },
    }
}

fn proxied(backend_url: &str, tune: impl FnOnce(&mut wsedge::Config)) -> wsedge::RunningServer {
    let mut c = config();
    c.auth_proxy = Some(AuthProxyConfig::from_url(backend_url).unwrap());
    tune(&mut c);
    start(c)
}

fn upgrade_with_cookie(addr: std::net::SocketAddr, cookie: &str) -> Result<Ws, tungstenite::Error> {
    try_connect(addr, "/ws?room=7", &[("Cookie", cookie), ("X-Ignored", "no")])
}

#[test]
fn the_backend_lets_in_with_its_user_and_claims() {
    let backend = proxy();
    let server = proxied(&backend.url(), |_| {});
    let mut ws = upgrade_with_cookie(server.local_addr(), "session=good").expect("let in");
    let hello = recv_json(&mut ws);
    assert_eq!(hello["data"]["user_id"], "u-good");
    let item = backend.next()["items"][0].clone();
    assert_eq!(item["kind"], "auth");
    assert_eq!(item["path"], "/ws?room=7");
    assert_eq!(item["headers"], json!({"cookie": "session=good"}));
    assert!(item["remote_addr"].as_str().unwrap().starts_with("127.0.0.1:"));
    // The claims count: the rooms claim lets the user join where it says, and no further.
    send_json(&mut ws, json!({"type": "join", "data": {"rooms": ["lobby", "other"]}}));
    let ack = recv_json(&mut ws);
    assert_eq!(ack["data"]["rooms"], json!(["lobby"]), "{ack}");
    let id = hello["data"]["connection_id"].as_str().unwrap();
    let (_, info) = http::json(
        server.local_addr(),
        "GET",
        &format!("/ws/connections/{id}"),
        Some(&admin_token("root")),
        None,
    );
    assert_eq!(
        (info["data"]["is_admin"].clone(), info["data"]["name"].clone()),
        (json!(false), json!("Good")),
        "{info}"
    );
}

#[test]
fn the_backend_refuses_with_its_status() {
    let backend = proxy();
    let server = proxied(&backend.url(), |_| {});
    match upgrade_with_cookie(server.local_addr(), "session=bad") {
        Err(tungstenite::Error::Http(r)) => {
            assert_eq!(r.status().as_u16(), 401);
            let body = String::from_utf8_lossy(r.body().as_deref().unwrap_or_default()).to_string();
            assert!(body.contains("bad session"), "{body}");
        }
        other => panic!("expected a 401, got {other:?}"),
    }
    assert_eq!(server.handle().stats().refused_with(401), 1);
    let (_, _, metrics) = http::request(server.local_addr(), "GET", "/metrics", Some(&admin_token("root")), None);
    for series in [
        "wsedge_auth_proxy_answered_total 1",
        "wsedge_auth_proxy_requests_total 1",
        "wsedge_auth_proxy_latency_seconds_count 1",
    ] {
        assert!(metrics.contains(series), "{series} in:\n{metrics}");
    }
}

#[test]
fn a_stalled_or_absent_backend_refuses_within_the_handshake_timeout() {
    let backend = proxy();
    let server = proxied(&backend.url(), |c| c.handshake_timeout = Duration::from_millis(500));
    match upgrade_with_cookie(server.local_addr(), "session=slow") {
        Err(tungstenite::Error::Http(r)) => assert!([408, 503].contains(&r.status().as_u16()), "{r:?}"),
        Err(tungstenite::Error::Io(_)) | Err(tungstenite::Error::Protocol(_)) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = proxied(&format!("http://127.0.0.1:{port}/auth"), |c| {
        c.handshake_timeout = Duration::from_secs(1)
    });
    match upgrade_with_cookie(server.local_addr(), "session=good") {
        Err(tungstenite::Error::Http(r)) => {
            assert_eq!(r.status().as_u16(), 503);
            assert_eq!(r.headers()["retry-after"], "1");
        }
        Err(tungstenite::Error::Io(_)) => {} // the handshake timeout came first
        other => panic!("expected 503, got {other:?}"),
    }
}

#[test]
fn accepting_answers_are_cached_for_the_configured_time() {
    let backend = proxy();
    let server = proxied(&backend.url(), |c| {
        c.auth_proxy.as_mut().unwrap().cache = Duration::from_secs(60);
        c.max_connections_per_user = 10;
    });
    for _ in 0..3 {
        let mut ws = upgrade_with_cookie(server.local_addr(), "session=good").expect("let in");
        assert_eq!(recv_json(&mut ws)["data"]["user_id"], "u-good");
    }
    let _ = upgrade_with_cookie(server.local_addr(), "session=bad");
    let _ = upgrade_with_cookie(server.local_addr(), "session=bad");
    // One question for the good session, and each refusal asked again (refusals are never
    // cached).
    assert_eq!(server.handle().stats().auth_proxy.requests, 3);
}

#[test]
fn joins_and_subscribes_can_be_checked_with_the_backend() {
    let backend = proxy();
    let server = proxied(&backend.url(), |c| {
        let a = c.auth_proxy.as_mut().unwrap();
        (a.check_joins, a.check_subscribes) = (true, true);
    });
    let mut ws = upgrade_with_cookie(server.local_addr(), "session=any").expect("let in");
    recv_json(&mut ws);
    send_json(
        &mut ws,
        json!({"type": "join", "data": {"rooms": ["ok-1", "secret", "ok-1", 7]}}),
    );
    let ack = recv_json(&mut ws);
    assert_eq!(ack["type"], "room.joined", "{ack}");
    assert_eq!(ack["data"]["rooms"], json!(["ok-1", "ok-1"]));
    let refused = ack["data"]["refused"].as_array().unwrap();
    assert!(
        refused.contains(&json!({"room": "secret", "reason": "members only"})),
        "{ack}"
    );
    assert!(refused.iter().any(|r| r["room"] == 7), "{ack}");
    assert_eq!(ack["data"]["memberships"], json!(["ok-1"]));
    send_json(
        &mut ws,
        json!({"type": "subscribe", "data": {"events": ["system.notification", "file.ready"]}}),
    );
    let ack = recv_json(&mut ws);
    assert_eq!(ack["data"]["events"], json!(["system.notification"]), "{ack}");
    assert_eq!(
        ack["data"]["refused"],
        json!([{"event": "file.ready", "reason": "refused by the backend"}])
    );
    assert_eq!(recv_json(&mut ws)["data"]["code"], "SUBSCRIPTION_FAILED");
    // Leaving and unsubscribing are never checked.
    send_json(&mut ws, json!({"type": "leave", "data": {"rooms": ["ok-1"]}}));
    assert_eq!(recv_json(&mut ws)["data"]["rooms"], json!(["ok-1"]));
}
