//! Per-user connection limit, held across reactors: evict-oldest closes the oldest with 1008;
//! reject refuses the new one with CONNECTION_LIMIT_EXCEEDED and 1008.
mod common;
use common::*;
use serde_json::json;
use wsedge::LimitPolicy;

#[test]
fn evict_oldest_across_two_reactors() {
    let server = start(wsedge::Config { workers: 2, ..config() });
    let addr = server.local_addr();
    // Several users, each over the limit by one, so accepts land on both reactors.
    let mut survivors = Vec::new();
    for user in 0..6 {
        let t = token(&format!("user-{user}"));
        let mut conns: Vec<Ws> = (0..3).map(|_| connect(addr, &t).0).collect();
        let (mut newest, _) = connect(addr, &t);
        assert_eq!(
            expect_close(&mut conns[0]),
            (1008, "connection limit exceeded".to_string()),
            "user {user}"
        );
        for ws in conns.iter_mut().skip(1).chain(std::iter::once(&mut newest)) {
            send_json(ws, json!({"type": "ping", "data": {"pingId": "alive"}}));
            assert_eq!(recv_json(ws)["data"]["pingId"], "alive");
        }
        survivors.extend(conns.into_iter().skip(1));
        survivors.push(newest);
    }
    let stats = server.handle().stats();
    assert_eq!(stats.evictions, 6);
    assert!(
        stats.handovers > 0,
        "with 24 connections some must have been accepted off their home reactor"
    );
    wait_until("evicted sockets released", || server.handle().stats().connections == 18);
}

#[test]
fn reject_policy_refuses_the_new_connection() {
    let server = start(wsedge::Config {
        workers: 2,
        per_user_limit_policy: LimitPolicy::Reject,
        max_connections_per_user: 2,
        ..config()
    });
    let addr = server.local_addr();
    let t = token("strict");
    let (mut a, _) = connect(addr, &t);
    let (_b, _) = connect(addr, &t);
    let mut c = try_connect(addr, &format!("/ws?token={t}"), &[]).unwrap();
    let err = recv_json(&mut c);
    assert_eq!(err["type"], "error");
    assert_eq!(err["data"]["code"], "CONNECTION_LIMIT_EXCEEDED");
    assert_eq!(expect_close(&mut c), (1008, "connection limit exceeded".to_string()));
    send_json(&mut a, json!({"type": "ping"}));
    assert_eq!(recv_json(&mut a)["type"], "pong", "existing connections stay");
    assert_eq!(server.handle().stats().user_limit_rejections, 1);
    // After one leaves, a new one fits.
    a.close(None).unwrap();
    while a.read().is_ok() {}
    wait_until("slot freed", || server.handle().stats().connections == 1);
    connect(addr, &t);
}
