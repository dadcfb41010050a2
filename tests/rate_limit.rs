//! Per-user sliding-window rate limit: excess messages get RATE_LIMIT_EXCEEDED with
//! reset_time/retry_after and are not processed; the limit is shared by a user's connections.
mod common;
use std::time::Duration;

use common::*;
use serde_json::json;

fn limited_config() -> wsedge::Config {
    wsedge::Config {
        rate_limit_messages: 5,
        rate_limit_window: Duration::from_secs(60),
        workers: 2,
        ..config()
    }
}

#[test]
fn excess_messages_are_refused_and_not_processed() {
    let server = start(limited_config());
    let (mut ws, _) = connect(server.local_addr(), &token("chatty"));
    for i in 0..5 {
        send_json(&mut ws, json!({"type": "ping", "data": {"pingId": i}}));
        assert_eq!(recv_json(&mut ws)["data"]["pingId"], i);
    }
    send_json(&mut ws, json!({"type": "ping", "data": {"pingId": "sixth"}}));
    let err = recv_json(&mut ws);
    assert_eq!(err["type"], "error");
    assert_eq!(err["data"]["code"], "RATE_LIMIT_EXCEEDED");
    // Whole seconds, rounded up.
    let retry = err["data"]["retry_after"].as_u64().expect("an integer") as f64;
    assert!((1.0..=120.0).contains(&retry), "{retry}");
    let reset = err["data"]["reset_time"].as_f64().unwrap();
    assert!(
        (reset - now() as f64 - retry).abs() < 5.0,
        "reset_time {reset} should be now + retry_after"
    );
    assert_eq!(server.handle().stats().rate_limited, 1);
}

#[test]
fn the_limit_is_per_user_across_connections_and_reactors() {
    let server = start(limited_config());
    let addr = server.local_addr();
    let (mut a, _) = connect(addr, &token("shared"));
    let (mut b, _) = connect(addr, &token("shared"));
    let (mut other, _) = connect(addr, &token("someone-else"));
    for i in 0..5 {
        let ws = if i % 2 == 0 { &mut a } else { &mut b };
        send_json(ws, json!({"type": "ping", "data": {"pingId": i}}));
        assert_eq!(recv_json(ws)["type"], "pong");
    }
    send_json(&mut b, json!({"type": "ping"}));
    assert_eq!(recv_json(&mut b)["data"]["code"], "RATE_LIMIT_EXCEEDED");
    send_json(&mut a, json!({"type": "ping"}));
    assert_eq!(recv_json(&mut a)["data"]["code"], "RATE_LIMIT_EXCEEDED");
    send_json(&mut other, json!({"type": "ping"}));
    assert_eq!(recv_json(&mut other)["type"], "pong", "other users are not affected");
}

#[test]
fn reconnecting_does_not_reset_the_window() {
    let server = start(limited_config());
    let addr = server.local_addr();
    {
        let (mut ws, _) = connect(addr, &token("evader"));
        for _ in 0..5 {
            send_json(&mut ws, json!({"type": "ping"}));
            recv_json(&mut ws);
        }
        ws.close(None).unwrap();
        let _ = expect_close_or_end(&mut ws);
    }
    wait_until("first connection gone", || server.handle().stats().connections == 0);
    let (mut ws, _) = connect(addr, &token("evader"));
    send_json(&mut ws, json!({"type": "ping"}));
    assert_eq!(recv_json(&mut ws)["data"]["code"], "RATE_LIMIT_EXCEEDED");
}

fn expect_close_or_end(ws: &mut Ws) -> Option<()> {
    loop {
        match ws.read() {
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

#[test]
fn a_departed_users_entry_is_dropped_once_its_window_cools() {
    let server = start(wsedge::Config {
        rate_limit_window: Duration::from_millis(300),
        ..limited_config()
    });
    let addr = server.local_addr();
    let (mut ws, _) = connect(addr, &token("leaver"));
    send_json(&mut ws, json!({"type": "ping"}));
    recv_json(&mut ws);
    ws.close(None).unwrap();
    let _ = expect_close_or_end(&mut ws);
    wait_until("connection gone", || server.handle().census().unwrap().connections == 0);
    assert_eq!(
        server.handle().census().unwrap().user_entries,
        1,
        "kept while the window can still limit"
    );
    wait_until("entry dropped after two windows", || {
        server.handle().census().unwrap().user_entries == 0
    });
}
